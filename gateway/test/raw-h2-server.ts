/**
 * A raw `node:http2` server for tests that need a gRPC upstream to answer what a well-behaved
 * one never would (Trailers-Only, oversized or compressed messages, odd metadata), and the
 * gRPC server's way of answering: headers, the message, trailers. For what node:http2's server
 * will not send at all, `frameServer` writes the frames itself.
 */
import http2, { type Http2Session, type ServerHttp2Stream } from "node:http2";
import net from "node:net";
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
  return {
    address: await listenOnLoopback(server),
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

/** One HTTP/2 frame (RFC 9113 §4.1). */
export function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, GOAWAY: 7 } as const;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;
const ACK = 0x1;

/** An HPACK integer with a `bits`-bit prefix (RFC 7541 §5.1). */
function hpackInteger(value: number, bits: number): number[] {
  const max = (1 << bits) - 1;
  if (value < max) return [value];
  const bytes = [max];
  for (value -= max; value >= 128; value = Math.floor(value / 128)) bytes.push((value % 128) + 128);
  bytes.push(value);
  return bytes;
}

/** A header block of literals without indexing (RFC 7541 §6.2.2): no dynamic table to keep. */
function headerBlock(headers: Record<string, string>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of Object.entries(headers)) {
    const n = Buffer.from(name, "latin1");
    const v = Buffer.from(value, "latin1");
    parts.push(Buffer.from([0, ...hpackInteger(n.length, 7)]), n, Buffer.from(hpackInteger(v.length, 7)), v);
  }
  return Buffer.concat(parts);
}

/** One client connection of a `frameServer`, for its handler to answer on. */
export interface FrameConnection {
  socket: net.Socket;
  headers(stream: number, headers: Record<string, string>, endStream?: boolean): void;
  data(stream: number, payload: Buffer, endStream?: boolean): void;
  rst(stream: number, code: number): void;
  goaway(lastStreamId: number, code?: number): void;
}

export interface FrameServer {
  /** host:port */
  address: string;
  /** Every request stream, in the order they ended (the handler was called). */
  streams: number[];
  close(): void;
}

/**
 * An h2c server written frame by frame, for what node:http2's server will not send (Bun's sends
 * RST_STREAM code 0 whatever `stream.close(code)` is given: Bun 1.4.5). It sends empty SETTINGS,
 * acks the client's, and calls `onRequest` once a request stream has ended (a unary call is all
 * there; its headers are not decoded, its body not kept). Stream ids are per connection.
 */
export async function frameServer(
  onRequest: (connection: FrameConnection, stream: number) => void,
): Promise<FrameServer> {
  const streams: number[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    const write = (bytes: Buffer) => {
      if (!socket.destroyed) socket.write(bytes);
    };
    const u32 = (...values: number[]) => {
      const payload = Buffer.alloc(4 * values.length);
      for (const [i, value] of values.entries()) payload.writeUInt32BE(value, 4 * i);
      return payload;
    };
    const connection: FrameConnection = {
      socket,
      headers: (stream, headers, endStream = false) =>
        write(frame(FRAME.HEADERS, END_HEADERS | (endStream ? END_STREAM : 0), stream, headerBlock(headers))),
      data: (stream, payload, endStream = false) =>
        write(frame(FRAME.DATA, endStream ? END_STREAM : 0, stream, payload)),
      rst: (stream, code) => write(frame(FRAME.RST_STREAM, 0, stream, u32(code))),
      goaway: (lastStreamId, code = 0) => write(frame(FRAME.GOAWAY, 0, 0, u32(lastStreamId, code))),
    };
    write(frame(FRAME.SETTINGS, 0, 0, Buffer.alloc(0)));
    let buffered = Buffer.alloc(0);
    let prefaceSeen = false;
    socket.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (!prefaceSeen) {
        if (buffered.length < 24) return;
        buffered = buffered.subarray(24);
        prefaceSeen = true;
      }
      while (buffered.length >= 9) {
        const length = buffered.readUIntBE(0, 3);
        if (buffered.length < 9 + length) return;
        const [type, flags, stream] = [buffered[3]!, buffered[4]!, buffered.readUInt32BE(5) & 0x7fffffff];
        buffered = buffered.subarray(9 + length);
        if (type === FRAME.SETTINGS && (flags & ACK) === 0) write(frame(FRAME.SETTINGS, ACK, 0, Buffer.alloc(0)));
        else if ((type === FRAME.HEADERS || type === FRAME.DATA) && (flags & END_STREAM) !== 0) {
          streams.push(stream);
          onRequest(connection, stream);
        }
      }
    });
  });
  return {
    address: await listenOnLoopback(server),
    streams,
    close() {
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

/** Starts `server` on a free loopback port; its host:port. */
async function listenOnLoopback(server: {
  listen(port: number, host: string, listening: () => void): unknown;
}): Promise<string> {
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  return `127.0.0.1:${port}`;
}
