/**
 * A raw `node:http2` server for tests that need a gRPC upstream to answer what a well-behaved
 * one never would (Trailers-Only, oversized or compressed messages, odd metadata), and the
 * gRPC server's way of answering: headers, the message, trailers.
 */
import http2, { type Http2Session, type ServerHttp2Stream } from "node:http2";
import { freePort } from "../../scripts/stack/testing/ports.ts";

export interface RawServer {
  /** host:port */
  address: string;
  sessions: Http2Session[];
  close(): void;
}

/** Listens on a free loopback port; `handle` answers each stream as the test wants. */
export async function rawServer(
  handle: (stream: ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void,
  settings: http2.Settings = {},
): Promise<RawServer> {
  const server = http2.createServer({ settings });
  const sessions: Http2Session[] = [];
  server.on("session", (s) => sessions.push(s));
  server.on("stream", (stream, headers) => {
    stream.on("error", () => {});
    handle(stream as ServerHttp2Stream, headers);
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    address: `127.0.0.1:${port}`,
    sessions,
    close() {
      for (const s of sessions) s.destroy();
      server.close();
    },
  };
}

/** Answers as a gRPC server does: headers (with `x-served-by: raw` unless `headers` says), the message, trailers. */
export function answer(
  stream: ServerHttp2Stream,
  body: Buffer | null,
  trailers: Record<string, string>,
  headers: Record<string, string> = {},
): void {
  stream.respond(
    { ":status": 200, "content-type": "application/grpc", "x-served-by": "raw", ...headers },
    { waitForTrailers: true },
  );
  stream.on("wantTrailers", () => stream.sendTrailers(trailers));
  stream.end(body ?? undefined);
}
