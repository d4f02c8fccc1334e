/**
 * proxy/http.ts `forwardHttp` against a raw TCP upstream on loopback that writes exactly the bytes
 * each case needs: what becomes an error outcome inside the try (and so a 502 of the gateway's
 * own) rather than a response whose body fails after its head is out.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket, TCPSocketListener } from "bun";
import {
  forwardHttp,
  type HttpOutcome,
  InvalidUpstreamResponse,
  keepAliveAllowed,
  SMALL_BODY_BYTES,
} from "../src/proxy/http.ts";

const CRLF = "\r\n";
const LIMITS = { maxHeaderBytes: 16 * 1024, maxResponseBytes: 1024 * 1024 };

/** Each new connection is answered by the script named in the request path (`/<script>`). */
const scripts: Record<string, (socket: Socket<{ conn: number }>) => void> = {
  ok: (s) =>
    s.write(`HTTP/1.1 200 OK${CRLF}Content-Length: 2${CRLF}Keep-Alive: timeout=5${CRLF}X-Kept: 1${CRLF}${CRLF}ok`),
  both: (s) =>
    s.write(
      `HTTP/1.1 200 OK${CRLF}Content-Length: 3${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}5${CRLF}hello${CRLF}0${CRLF}${CRLF}`,
    ),
  huge: (s) =>
    s.write(`HTTP/1.1 200 OK${CRLF}X-Huge: ${"h".repeat(32 * 1024)}${CRLF}Content-Length: 2${CRLF}${CRLF}ok`),
  "dies-after-head": (s) => {
    s.write(`HTTP/1.1 200 OK${CRLF}Content-Length: 100${CRLF}${CRLF}only ten b`);
    s.end();
  },
  "chunked-dies-before-body": (s) => {
    s.write(`HTTP/1.1 200 OK${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}`);
    s.end();
  },
  "chunked-streams": (s) => {
    s.write(`HTTP/1.1 200 OK${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}5${CRLF}first${CRLF}`);
    setTimeout(() => s.write(`6${CRLF}second${CRLF}0${CRLF}${CRLF}`), 50);
  },
};

let server: TCPSocketListener<{ conn: number }>;
let origin: string;
let connections = 0;

beforeAll(() => {
  server = Bun.listen<{ conn: number }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket) {
        socket.data = { conn: ++connections };
      },
      data(socket, chunk) {
        const target = /^[A-Z]+ \/([^ ]*) /.exec(chunk.toString("latin1"))?.[1] ?? "";
        scripts[target]?.(socket);
      },
    },
  });
  origin = `http://127.0.0.1:${server.port}`;
});

afterAll(() => server.stop(true));

const send = (script: string): Promise<HttpOutcome> =>
  forwardHttp(origin, "GET", `/${script}`, new Headers(), null, 2_000, LIMITS);

describe("forwardHttp", () => {
  test("a small body is read inside the try; hop-by-hop headers of the response are dropped", async () => {
    const outcome = await send("ok");
    expect(outcome.kind).toBe("response");
    if (outcome.kind !== "response") return;
    expect(outcome.response.headers.get("keep-alive")).toBeNull();
    expect(outcome.response.headers.get("x-kept")).toBe("1");
    expect(await outcome.response.text()).toBe("ok");
    expect(SMALL_BODY_BYTES).toBe(64 * 1024);
  });

  test("an upstream that dies after its head (declared 100 bytes, sent 10) is an error, not a response", async () => {
    const outcome = await send("dies-after-head");
    expect(outcome.kind).toBe("error");
  });

  test("a chunked body that fails before its first chunk is an error; one that streams is passed on", async () => {
    expect((await send("chunked-dies-before-body")).kind).toBe("error");
    const streamed = await send("chunked-streams");
    expect(streamed.kind).toBe("response");
    if (streamed.kind === "response") expect(await streamed.response.text()).toBe("firstsecond");
  });

  test("headers past maxHeaderBytes are refused", async () => {
    const outcome = await send("huge");
    expect(outcome.kind).toBe("error");
    if (outcome.kind !== "error") return;
    expect(outcome.error).toBeInstanceOf(InvalidUpstreamResponse);
    expect((outcome.error as InvalidUpstreamResponse).title).toBe("Upstream response headers too large");
  });

  test("Content-Length with Transfer-Encoding is refused, and the origin's pooled connections are not used again", async () => {
    expect(keepAliveAllowed(origin)).toBe(true);
    const outcome = await send("both");
    expect(outcome.kind).toBe("error");
    if (outcome.kind !== "error") return;
    expect((outcome.error as InvalidUpstreamResponse).title).toBe("Upstream response framing is ambiguous");
    expect(keepAliveAllowed(origin)).toBe(false);
    // The next tries go on connections of their own: each opens one.
    const before = connections;
    for (let i = 0; i < 3; i++) expect((await send("ok")).kind).toBe("response");
    expect(connections - before).toBe(3);
  });
});
