/**
 * proxy/h1-client.ts, the gateway's HTTP/1.1 client, against raw TCP upstreams on loopback that
 * write exactly the bytes each case needs: what becomes an error outcome inside the try (a 502 of
 * the gateway's own) rather than a response whose body fails after its head is out; which
 * answers are refused and close their connection; how connections are kept, reused and closed;
 * TLS with the name checked and a client certificate presented.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket, TCPSocketListener } from "bun";
import { H1Pool, IDLE_TIMEOUT_MS } from "../src/proxy/h1-client.ts";
import { CLIENT_WATCH_MS } from "../src/upstream/client-watch.ts";
import { type HttpOutcome, InvalidUpstreamResponse, SMALL_BODY_BYTES } from "../src/proxy/http.ts";
import { limitResponseSize } from "../src/proxy/response-limit.ts";
import { createCa, issue } from "../../scripts/tls/pki.ts";

const CRLF = "\r\n";
const LIMITS = { maxHeaderBytes: 16 * 1024, maxResponseBytes: 1024 * 1024 };
const BIG = "b".repeat(SMALL_BODY_BYTES + 1000);
/** Bodies of the same length, no two halves alike: a part read into another would show. */
const SMALL_A = "a".repeat(SMALL_BODY_BYTES / 4) + "c".repeat(SMALL_BODY_BYTES / 4);
const SMALL_B = "b".repeat(SMALL_BODY_BYTES / 4) + "d".repeat(SMALL_BODY_BYTES / 4);
/** Larger than the client's parse buffer (64 KiB), no byte like its neighbour. */
const CHUNKED_LARGE = Array.from({ length: 300 * 1024 }, (_, i) => String.fromCharCode(33 + (i % 90))).join("");

/** The head and the first half of `body` now, the rest `delayMs` later. */
function inParts(s: Socket<Conn>, body: string, delayMs: number): void {
  const half = body.length / 2;
  s.write(`HTTP/1.1 200 OK${CRLF}Content-Length: ${body.length}${CRLF}${CRLF}${body.slice(0, half)}`);
  setTimeout(() => s.write(body.slice(half)), delayMs);
}

interface Conn {
  id: number;
  /** Request heads seen on this connection. */
  requests: string[];
  pending: string;
}

/** Each request is answered by the script its path names (`/<script>`), on whatever connection it came. */
const scripts: Record<string, (socket: Socket<Conn>) => void> = {
  ok: (s) =>
    s.write(`HTTP/1.1 200 OK${CRLF}Content-Length: 2${CRLF}Keep-Alive: timeout=5${CRLF}X-Kept: 1${CRLF}${CRLF}ok`),
  "connection-named": (s) =>
    s.write(`HTTP/1.1 200 OK${CRLF}Connection: x-private${CRLF}X-Private: 1${CRLF}Content-Length: 2${CRLF}${CRLF}ok`),
  "stamped-names": (s) =>
    s.write(
      `HTTP/1.1 200 OK${CRLF}X-Request-Id: from-upstream${CRLF}x-gateway: a${CRLF}X-Gateway: b${CRLF}Connection: x-gateway-version${CRLF}X-Gateway-Version: 0${CRLF}X-Kept: 1${CRLF}Content-Length: 2${CRLF}${CRLF}ok`,
    ),
  "two-connection-lines": (s) =>
    s.write(
      `HTTP/1.1 200 OK${CRLF}Connection: x-a${CRLF}Connection: x-b${CRLF}X-A: 1${CRLF}X-B: 1${CRLF}X-C: 1${CRLF}Content-Length: 2${CRLF}${CRLF}ok`,
    ),
  both: (s) =>
    s.write(
      `HTTP/1.1 200 OK${CRLF}Content-Length: 3${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}5${CRLF}hello${CRLF}0${CRLF}${CRLF}`,
    ),
  "two-lengths": (s) => s.write(`HTTP/1.1 200 OK${CRLF}Content-Length: 2${CRLF}Content-Length: 2${CRLF}${CRLF}ok`),
  "obs-fold": (s) => s.write(`HTTP/1.1 200 OK${CRLF}X-Folded: a${CRLF} b${CRLF}Content-Length: 2${CRLF}${CRLF}ok`),
  "bare-lf": (s) => s.write(`HTTP/1.1 200 OK\nContent-Length: 2\n\nok`),
  gzip: (s) => s.write(`HTTP/1.1 200 OK${CRLF}Transfer-Encoding: gzip${CRLF}${CRLF}zzzz`),
  "chunked-twice": (s) =>
    s.write(
      `HTTP/1.1 200 OK${CRLF}Transfer-Encoding: chunked${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}2${CRLF}ok${CRLF}0${CRLF}${CRLF}`,
    ),
  "http10-chunked": (s) =>
    s.write(
      `HTTP/1.0 200 OK${CRLF}Connection: keep-alive${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}2${CRLF}ok${CRLF}0${CRLF}${CRLF}`,
    ),
  huge: (s) =>
    s.write(`HTTP/1.1 200 OK${CRLF}X-Huge: ${"h".repeat(32 * 1024)}${CRLF}Content-Length: 2${CRLF}${CRLF}ok`),
  interim: (s) =>
    s.write(`HTTP/1.1 100 Continue${CRLF}${CRLF}HTTP/1.1 201 Created${CRLF}Content-Length: 7${CRLF}${CRLF}created`),
  upgrade: (s) => s.write(`HTTP/1.1 101 Switching Protocols${CRLF}Upgrade: websocket${CRLF}${CRLF}`),
  "no-content": (s) => s.write(`HTTP/1.1 204 No Content${CRLF}${CRLF}`),
  head: (s) => s.write(`HTTP/1.1 200 OK${CRLF}Content-Length: 1234${CRLF}${CRLF}`),
  close: (s) => s.write(`HTTP/1.1 200 OK${CRLF}Connection: close${CRLF}Content-Length: 2${CRLF}${CRLF}ok`),
  "until-close": (s) => {
    s.write(`HTTP/1.1 200 OK${CRLF}${CRLF}all of it`);
    s.end();
  },
  "dies-after-head": (s) => {
    s.write(`HTTP/1.1 200 OK${CRLF}Content-Length: 100${CRLF}${CRLF}only ten b`);
    s.end();
  },
  "dies-before-answer": (s) => s.end(),
  "chunked-dies-before-body": (s) => {
    s.write(`HTTP/1.1 200 OK${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}`);
    s.end();
  },
  "chunked-streams": (s) => {
    s.write(`HTTP/1.1 200 OK${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}5${CRLF}first${CRLF}`);
    setTimeout(() => s.write(`6${CRLF}second${CRLF}0${CRLF}Trailer-X: 1${CRLF}${CRLF}`), 50);
  },
  "chunked-stalls": (s) =>
    s.write(`HTTP/1.1 200 OK${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}5${CRLF}first${CRLF}`),
  big: (s) => s.write(`HTTP/1.1 200 OK${CRLF}Content-Length: ${BIG.length}${CRLF}${CRLF}${BIG}`),
  "big-in-parts": (s) => {
    // The head alone, then the body in three writes: past the head it bypasses the parser.
    s.write(`HTTP/1.1 200 OK${CRLF}Content-Length: ${BIG.length}${CRLF}${CRLF}`);
    const third = Math.ceil(BIG.length / 3);
    setTimeout(() => s.write(BIG.slice(0, third)), 10);
    setTimeout(() => s.write(BIG.slice(third, 2 * third)), 20);
    setTimeout(() => s.write(BIG.slice(2 * third)), 30);
  },
  // A body read whole in two reads, its second part sent `delay` ms after its first: with two of
  // these on two connections the reads alternate between them (the client parses every read
  // through one buffer shared by all its connections).
  "small-in-parts-a": (s) => inParts(s, SMALL_A, 30),
  "small-in-parts-b": (s) => inParts(s, SMALL_B, 60),
  // One chunk of CHUNKED_LARGE bytes, all of it through the parser, in reads of whatever size.
  "chunked-large": (s) =>
    s.write(
      `HTTP/1.1 200 OK${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}${CHUNKED_LARGE.length.toString(16)}${CRLF}${CHUNKED_LARGE}${CRLF}0${CRLF}${CRLF}`,
    ),
  "big-and-more": (s) => {
    s.write(`HTTP/1.1 200 OK${CRLF}Content-Length: ${BIG.length}${CRLF}${CRLF}`);
    setTimeout(() => s.write(`${BIG}extra bytes`), 10);
  },
  "too-big": (s) => s.write(`HTTP/1.1 200 OK${CRLF}Content-Length: ${LIMITS.maxResponseBytes + 1}${CRLF}${CRLF}xx`),
  silent: () => {},
  "odd-status": (s) => s.write(`HTTP/1.1 999 Odd${CRLF}Content-Length: 2${CRLF}${CRLF}ok`),
  "low-status": (s) =>
    s.write(
      `HTTP/1.1 050 Low${CRLF}Content-Length: 2${CRLF}${CRLF}noHTTP/1.1 200 OK${CRLF}Content-Length: 2${CRLF}${CRLF}ok`,
    ),
  "odd-connection": (s) =>
    s.write(
      `HTTP/1.1 200 OK${CRLF}Connection: close;, x y, X-Drop${CRLF}X-Drop: 1${CRLF}Content-Length: 2${CRLF}${CRLF}ok`,
    ),
  "fill-then-stall": (s) =>
    // More than the stream's high-water mark at once (the socket is paused), then silence.
    s.write(
      `HTTP/1.1 200 OK${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}${(200 * 1024).toString(16)}${CRLF}${"f".repeat(200 * 1024)}${CRLF}`,
    ),
  "head-large": (s) => s.write(`HTTP/1.1 200 OK${CRLF}Content-Length: ${LIMITS.maxResponseBytes * 5}${CRLF}${CRLF}`),
  "not-modified-large": (s) =>
    s.write(`HTTP/1.1 304 Not Modified${CRLF}Content-Length: ${LIMITS.maxResponseBytes * 5}${CRLF}${CRLF}`),
  extra: (s) => s.write(`HTTP/1.1 200 OK${CRLF}Content-Length: 2${CRLF}${CRLF}okHTTP/1.1 200 OK${CRLF}${CRLF}`),
  // Node's http server answers HEAD without a length, keeping the connection.
  "head-no-length": (s) => s.write(`HTTP/1.1 200 OK${CRLF}Connection: keep-alive${CRLF}X-Head: 1${CRLF}${CRLF}`),
  "head-no-length-close": (s) => s.write(`HTTP/1.1 200 OK${CRLF}Connection: close${CRLF}${CRLF}`),
  // A 1xx ends at its empty line whatever it declares (RFC 9112 §6.3).
  "interim-with-length": (s) =>
    s.write(
      `HTTP/1.1 150 Odd${CRLF}Content-Length: 5${CRLF}${CRLF}HTTP/1.1 200 OK${CRLF}Content-Length: 2${CRLF}${CRLF}ok`,
    ),
  "interim-chunked": (s) =>
    s.write(
      `HTTP/1.1 104 Odd${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}HTTP/1.1 200 OK${CRLF}Content-Length: 2${CRLF}${CRLF}ok`,
    ),
  "http2-status-line": (s) => s.write(`HTTP/2.0 200 OK${CRLF}Content-Length: 2${CRLF}${CRLF}ok`),
  "http09-status-line": (s) => s.write(`HTTP/0.9 200 OK${CRLF}Content-Length: 2${CRLF}${CRLF}ok`),
  // Connection naming the framing headers: they frame the body all the same.
  "connection-names-length": (s) =>
    s.write(
      `HTTP/1.1 200 OK${CRLF}Connection: content-length, content-type${CRLF}Content-Type: text/plain${CRLF}Content-Length: ${LIMITS.maxResponseBytes + 1}${CRLF}${CRLF}xx`,
    ),
  "head-connection-names-length": (s) =>
    s.write(`HTTP/1.1 200 OK${CRLF}Connection: content-length${CRLF}Content-Length: 1234${CRLF}${CRLF}`),
  // Answers, then closes the connection a moment later without saying so (an upstream whose
  // keep-alive timeout is shorter than the pool's, or that is shutting down).
  "dies-on-reuse": (s) =>
    s.data.requests.length > 1 ? s.end() : s.write(`HTTP/1.1 200 OK${CRLF}Content-Length: 2${CRLF}${CRLF}ok`),
};

let server: TCPSocketListener<Conn>;
let connections = 0;
const open = new Set<Socket<Conn>>();

function answer(socket: Socket<Conn>, chunk: Buffer): void {
  const conn = socket.data;
  conn.pending += chunk.toString("latin1");
  for (;;) {
    const end = conn.pending.indexOf(CRLF + CRLF);
    if (end < 0) return;
    const head = conn.pending.slice(0, end);
    const length = Number(/\r\ncontent-length: (\d+)/i.exec(head)?.[1] ?? 0);
    if (conn.pending.length < end + 4 + length) return;
    conn.pending = conn.pending.slice(end + 4 + length);
    conn.requests.push(head);
    const target = /^[A-Z]+ \/([^ ?]*)/.exec(head)?.[1] ?? "";
    scripts[target]?.(socket);
  }
}

beforeAll(() => {
  server = Bun.listen<Conn>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket) {
        socket.data = { id: ++connections, requests: [], pending: "" };
        open.add(socket);
      },
      data: answer,
      close(socket) {
        open.delete(socket);
      },
    },
  });
});

afterAll(() => server.stop(true));

const pool = () => new H1Pool(`127.0.0.1:${server.port}`);
const send = (p: H1Pool, script: string, method = "GET", timeoutMs = 2_000): Promise<HttpOutcome> =>
  p.send(method, `/${script}`, new Headers(), null, timeoutMs, LIMITS);

function responseOf(outcome: HttpOutcome): Response {
  if (outcome.kind !== "response") throw new Error(`expected a response, got ${JSON.stringify(outcome)}`);
  return outcome.response;
}

function refusal(outcome: HttpOutcome): InvalidUpstreamResponse {
  if (outcome.kind !== "error") throw new Error(`expected an error, got ${outcome.kind}`);
  expect(outcome.error).toBeInstanceOf(InvalidUpstreamResponse);
  return outcome.error as InvalidUpstreamResponse;
}

describe("answers", () => {
  test("a small body is read inside the try; hop-by-hop headers and those Connection names are dropped", async () => {
    const p = pool();
    const response = responseOf(await send(p, "ok"));
    expect(response.headers.get("keep-alive")).toBeNull();
    expect(response.headers.get("x-kept")).toBe("1");
    expect(await response.text()).toBe("ok");
    const named = responseOf(await send(p, "connection-named"));
    expect(named.headers.get("x-private")).toBeNull();
    expect(named.headers.get("connection")).toBeNull();
    // Names listed over several Connection lines are one list (RFC 9110 §5.3): all of them go.
    const twoLines = responseOf(await send(p, "two-connection-lines"));
    expect([twoLines.headers.get("x-a"), twoLines.headers.get("x-b"), twoLines.headers.get("x-c")]).toEqual([
      null,
      null,
      "1",
    ]);
    p.close();
  });

  test("a stamp's headers replace the upstream's of the same names, whatever their case, and survive Connection naming them", async () => {
    const p = pool();
    const stamp = [
      ["x-request-id", "req-1"],
      ["x-gateway", "gateway-1"],
      ["x-gateway-version", "1.2.3"],
    ] as const;
    const response = responseOf(await p.send("GET", "/stamped-names", new Headers(), null, 2_000, LIMITS, { stamp }));
    expect([...response.headers].filter(([name]) => name.startsWith("x-"))).toEqual([
      ["x-gateway", "gateway-1"],
      ["x-gateway-version", "1.2.3"],
      ["x-kept", "1"],
      ["x-request-id", "req-1"],
    ]);
    expect(await response.text()).toBe("ok");
    // Without a stamp the upstream's own come through (both X-Gateway lines, as one list).
    const plain = responseOf(await send(p, "stamped-names"));
    expect([plain.headers.get("x-request-id"), plain.headers.get("x-gateway")]).toEqual(["from-upstream", "a, b"]);
    p.close();
  });

  test("the request carries Host (the endpoint), the headers given, and Content-Length from the body", async () => {
    const p = pool();
    const before = connections;
    const headers = new Headers({ "x-request-id": "abc", "content-length": "999", host: "client.example" });
    const body = new TextEncoder().encode('{"title":"x"}');
    responseOf(await p.send("POST", "/ok?a=1", headers, body, 2_000, LIMITS));
    const socket = [...open].find((s) => s.data.id === before + 1)!;
    const head = socket.data.requests[0]!;
    expect(head.split(CRLF)[0]).toBe("POST /ok?a=1 HTTP/1.1");
    expect(head).toContain(`${CRLF}host: 127.0.0.1:${server.port}`);
    expect(head).toContain(`${CRLF}x-request-id: abc`);
    expect(head).toContain(`${CRLF}content-length: ${body.byteLength}`);
    expect(head).not.toContain("client.example");
    // not "999" alone: the port in Host may hold those digits
    expect(head).not.toContain(`content-length: 999`);
    expect(head.match(/content-length:/gi)).toHaveLength(1);
    p.close();
  });

  test("extraHeaders are written after the headers given, as they are", async () => {
    const p = pool();
    const before = connections;
    const headers = new Headers({ "x-client": "1" });
    const extraHeaders = [
      ["x-forwarded-for", "10.0.0.7"],
      ["via", "1.1 gateway-1"],
    ] as const;
    responseOf(await p.send("GET", "/ok", headers, null, 2_000, LIMITS, { extraHeaders }));
    const head = [...open].find((s) => s.data.id === before + 1)!.data.requests[0]!;
    expect(head.split(CRLF).slice(1).filter(Boolean)).toEqual([
      `host: 127.0.0.1:${server.port}`,
      "x-client: 1",
      "x-forwarded-for: 10.0.0.7",
      "via: 1.1 gateway-1",
    ]);
    p.close();
  });

  test("1xx answers are skipped; a 101 nobody asked for is refused", async () => {
    const p = pool();
    const created = responseOf(await send(p, "interim"));
    expect(created.status).toBe(201);
    expect(await created.text()).toBe("created");
    expect(refusal(await send(p, "upgrade")).title).toBe("Upstream switched protocols");
    // A 1xx declaring a body has none: the final answer follows it, on a connection still in use.
    for (const script of ["interim-with-length", "interim-chunked"])
      expect({ script, body: await responseOf(await send(p, script)).text() }).toEqual({ script, body: "ok" });
    expect(p.idleCount).toBe(1);
    p.close();
  });

  test("an answer to HEAD without a length keeps its connection, unless it asks to close it", async () => {
    const p = pool();
    const before = connections;
    for (let i = 0; i < 3; i++) {
      const head = responseOf(await send(p, "head-no-length", "HEAD"));
      expect([head.status, head.headers.get("x-head"), head.body]).toEqual([200, "1", null]);
    }
    expect([connections - before, p.idleCount]).toEqual([1, 1]);
    responseOf(await send(p, "head-no-length-close", "HEAD"));
    await Bun.sleep(20);
    expect([p.idleCount, p.openCount]).toEqual([0, 0]);
    p.close();
  });

  test("Connection cannot name Content-Length or Content-Type away: the cap and HEAD's length still see them", async () => {
    const p = pool();
    const large = responseOf(await send(p, "connection-names-length"));
    expect(large.headers.get("content-length")).toBe(String(LIMITS.maxResponseBytes + 1));
    expect(large.headers.get("content-type")).toBe("text/plain");
    expect(limitResponseSize(large, LIMITS.maxResponseBytes).ok).toBe(false);
    const head = responseOf(await send(p, "head-connection-names-length", "HEAD"));
    expect(head.headers.get("content-length")).toBe("1234");
    p.close();
  });

  test("no body: HEAD (with the GET's length), 204; a body delimited by the connection's close", async () => {
    const p = pool();
    const head = responseOf(await send(p, "head", "HEAD"));
    expect(head.headers.get("content-length")).toBe("1234");
    expect(head.body).toBeNull();
    const empty = responseOf(await send(p, "no-content"));
    expect(empty.status).toBe(204);
    expect(empty.body).toBeNull();
    expect(await responseOf(await send(p, "until-close")).text()).toBe("all of it");
    p.close();
  });

  test("a body over SMALL_BODY_BYTES streams, whole", async () => {
    const p = pool();
    expect(await responseOf(await send(p, "big")).text()).toBe(BIG);
    p.close();
  });

  test("a streamed body with a Content-Length, in parts: whole, and the connection carries the next answer", async () => {
    const p = pool();
    expect(await responseOf(await send(p, "big-in-parts")).text()).toBe(BIG);
    expect(p.idleCount).toBe(1);
    expect(await responseOf(await send(p, "big-in-parts")).text()).toBe(BIG);
    expect(await responseOf(await send(p, "ok")).text()).toBe("ok");
    expect(p.opened).toBe(1);
    p.close();
  });

  test("bodies read in parts on two connections at once come out whole, each its own", async () => {
    const p = pool();
    const [a, b] = await Promise.all([send(p, "small-in-parts-a"), send(p, "small-in-parts-b")]);
    expect(p.opened).toBe(2);
    expect(await responseOf(a).text()).toBe(SMALL_A);
    expect(await responseOf(b).text()).toBe(SMALL_B);
    p.close();
  });

  test("a chunked body larger than the parse buffer comes out whole", async () => {
    const p = pool();
    const text = await responseOf(await send(p, "chunked-large")).text();
    expect(text.length).toBe(CHUNKED_LARGE.length);
    expect(text === CHUNKED_LARGE).toBe(true);
    p.close();
  });

  test("bytes past the declared length close the connection; the body delivered is the declared one", async () => {
    const p = pool();
    expect(await responseOf(await send(p, "big-and-more")).text()).toBe(BIG);
    expect(p.openCount).toBe(0);
    p.close();
  });

  test("HEAD and 304 declaring a length past maxResponseBytes carry no body: nothing for the cap to refuse", async () => {
    const p = pool();
    for (const [script, method] of [
      ["head-large", "HEAD"],
      ["not-modified-large", "GET"],
    ] as const) {
      const response = responseOf(await send(p, script, method));
      expect(response.body).toBeNull();
      expect(response.headers.get("content-length")).toBe(String(LIMITS.maxResponseBytes * 5));
      expect(limitResponseSize(response, LIMITS.maxResponseBytes).ok).toBe(true);
    }
    expect(p.opened).toBe(1);
    p.close();
  });

  test("a Connection header naming things that are not header names: the names that are go, the rest is ignored", async () => {
    const p = pool();
    const response = responseOf(await send(p, "odd-connection"));
    expect(response.headers.get("x-drop")).toBeNull();
    expect(await response.text()).toBe("ok");
    p.close();
  });

  test("a body past maxResponseBytes by its Content-Length is handed over unread", async () => {
    const p = pool();
    const response = responseOf(await send(p, "too-big"));
    expect(response.headers.get("content-length")).toBe(String(LIMITS.maxResponseBytes + 1));
    await response.body!.cancel();
    p.close();
  });
});

describe("failures inside the try", () => {
  test("an upstream that dies after its head (declared 100 bytes, sent 10) is an error, not a response", async () => {
    const outcome = await send(pool(), "dies-after-head");
    expect(outcome.kind).toBe("error");
    if (outcome.kind === "error") expect(outcome.error.message).toContain("before the body was complete");
  });

  test("one that closes without answering is an error (the request may have been read)", async () => {
    const outcome = await send(pool(), "dies-before-answer");
    expect(outcome.kind).toBe("error");
  });

  test("a chunked body that fails before its first chunk is an error; one that streams is passed on, trailers dropped", async () => {
    const p = pool();
    expect((await send(p, "chunked-dies-before-body")).kind).toBe("error");
    expect(await responseOf(await send(p, "chunked-streams")).text()).toBe("firstsecond");
    p.close();
  });

  test("no answer within the timeout: a timeout outcome, and the connection is closed", async () => {
    const p = pool();
    expect((await send(p, "silent", "GET", 150)).kind).toBe("timeout");
    expect(p.openCount).toBe(0);
    p.close();
  });

  test("a streaming body that goes silent is cut once it has been silent for the try's timeout", async () => {
    const p = pool();
    const response = responseOf(await send(p, "chunked-stalls", "GET", 500));
    const started = performance.now();
    await expect(response.text()).rejects.toThrow();
    expect(performance.now() - started).toBeGreaterThanOrEqual(450);
    p.close();
  });

  test("a streaming body that stalls after the client's side was full (socket paused, then resumed) is still cut", async () => {
    const p = pool();
    const response = responseOf(await send(p, "fill-then-stall", "GET", 300));
    await Bun.sleep(100);
    const started = performance.now();
    await expect(response.text()).rejects.toThrow();
    expect(performance.now() - started).toBeLessThan(3_000);
    expect(p.openCount).toBe(0);
    p.close();
  });

  test("the client went away (its signal aborts) before the answer: cancelled at once, and the upstream sees its connection close", async () => {
    const p = pool();
    const controller = new AbortController();
    const accepted = connections;
    const ours = () => [...open].filter((socket) => socket.data.id > accepted);
    const pending = p.send("POST", "/silent", new Headers(), new Uint8Array([1]), 5_000, LIMITS, {
      client: controller,
    });
    for (let i = 0; i < 200 && ours()[0]?.data.requests.length !== 1; i++) await Bun.sleep(5);
    expect(ours().map((socket) => socket.data.requests.length)).toEqual([1]);
    const started = performance.now();
    controller.abort();
    expect(await pending).toEqual({ kind: "cancelled" });
    expect(performance.now() - started).toBeLessThan(1_000);
    for (let i = 0; i < 200 && ours().length > 0; i++) await Bun.sleep(5);
    expect(ours()).toEqual([]);
    expect(p.openCount).toBe(0);
    p.close();
  });

  test("a client gone before the try: cancelled at the first look (CLIENT_WATCH_MS in), not at the timeout", async () => {
    const p = pool();
    // On a connection already open (a new one's connect is slow enough to look at the client after it).
    expect(responseOf(await send(p, "ok")).status).toBe(200);
    const controller = new AbortController();
    controller.abort();
    const accepted = connections - 1;
    const ours = () => [...open].filter((socket) => socket.data.id > accepted);
    const started = performance.now();
    expect(
      await p.send("POST", "/silent", new Headers(), new Uint8Array([1]), 5_000, LIMITS, { client: controller }),
    ).toEqual({
      kind: "cancelled",
    });
    const took = performance.now() - started;
    expect(took).toBeGreaterThanOrEqual(CLIENT_WATCH_MS - 2);
    expect(took).toBeLessThan(2_500);
    for (let i = 0; i < 200 && ours().length > 0; i++) await Bun.sleep(5);
    expect(ours()).toEqual([]);
    p.close();
  });

  test("a try watched for its client times out no sooner than its timeout", async () => {
    const p = pool();
    const early: number[] = [];
    for (let i = 0; i < 10; i++) {
      expect(responseOf(await send(p, "ok")).status).toBe(200); // an idle connection for the try
      const started = performance.now();
      const outcome = await p.send("GET", "/silent", new Headers(), null, 50, LIMITS, {
        client: new AbortController(),
      });
      const took = performance.now() - started;
      expect(outcome.kind).toBe("timeout");
      if (took < 50) early.push(took);
    }
    expect(early).toEqual([]);
    p.close();
  });

  test("a try answered within CLIENT_WATCH_MS never looks at its client", async () => {
    const p = pool();
    expect(responseOf(await send(p, "ok")).status).toBe(200);
    let looked = 0;
    const client = {
      get signal(): AbortSignal {
        looked++;
        return new AbortController().signal;
      },
    };
    expect(responseOf(await p.send("GET", "/ok", new Headers(), null, 1_000, LIMITS, { client: client })).status).toBe(
      200,
    );
    await Bun.sleep(CLIENT_WATCH_MS + 20);
    expect(looked).toBe(0);
    p.close();
  });

  test("an abort after the answer changes nothing: the connection goes back to the pool", async () => {
    const p = pool();
    const controller = new AbortController();
    const response = responseOf(await p.send("GET", "/ok", new Headers(), null, 1_000, LIMITS, { client: controller }));
    expect(await response.text()).toBe("ok");
    controller.abort();
    await Bun.sleep(20);
    expect(p.idleCount).toBe(1);
    expect(responseOf(await send(p, "ok")).status).toBe(200);
    p.close();
  });

  test("nothing listening: a connect error (safe to retry anywhere)", async () => {
    const closed = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = closed.port;
    closed.stop(true);
    const outcome = await new H1Pool(`127.0.0.1:${port}`).send("POST", "/", new Headers(), null, 2_000, LIMITS);
    expect(outcome.kind).toBe("connect-error");
  });
});

describe("refused answers close their connection", () => {
  test.each([
    ["both", "Upstream response framing is ambiguous"],
    ["two-lengths", "Upstream response framing is ambiguous"],
    ["obs-fold", "Upstream response is not valid HTTP"],
    ["bare-lf", "Upstream response is not valid HTTP"],
    ["gzip", "Upstream response framing is not supported"],
    ["chunked-twice", "Upstream response framing is not supported"],
    ["huge", "Upstream response headers too large"],
    ["odd-status", "Upstream response is not valid HTTP"],
    ["low-status", "Upstream response is not valid HTTP"],
    ["http2-status-line", "Upstream response is not valid HTTP"],
    ["http09-status-line", "Upstream response is not valid HTTP"],
  ])("%s → %s", async (script, title) => {
    const p = pool();
    responseOf(await send(p, "ok"));
    expect(p.idleCount).toBe(1);
    expect(refusal(await send(p, script)).title).toBe(title);
    expect(p.openCount).toBe(0);
    // The next try opens a connection of its own.
    const before = connections;
    responseOf(await send(p, "ok"));
    expect(connections - before).toBe(1);
    p.close();
  });

  test("an HTTP/1.0 answer in chunks (no such coding in 1.0) is read, and its connection closed after it", async () => {
    const p = pool();
    expect(await responseOf(await send(p, "http10-chunked")).text()).toBe("ok");
    await Bun.sleep(20);
    expect([p.idleCount, p.openCount]).toEqual([0, 0]);
    p.close();
  });

  test("bytes after the answer (a second answer nobody asked for) close the connection", async () => {
    const p = pool();
    expect(await responseOf(await send(p, "extra")).text()).toBe("ok");
    await Bun.sleep(20);
    expect(p.openCount).toBe(0);
    p.close();
  });
});

describe("the pool", () => {
  test("a pooled connection the upstream closed as the request went out: an idempotent request is sent again on a new one, a POST is not", async () => {
    // The upstream ends a reused connection on reading the request, without a byte of answer: the
    // race with an idle close, made certain.
    const q = pool();
    responseOf(await send(q, "ok"));
    const opened = connections;
    expect(await responseOf(await send(q, "dies-on-reuse", "GET")).text()).toBe("ok");
    expect(connections - opened).toBe(1);
    expect(await responseOf(await send(q, "dies-on-reuse", "DELETE")).text()).toBe("ok");
    // Not idempotent: the upstream may have acted on it, so the close is the answer.
    const posted = await send(q, "dies-on-reuse", "POST");
    expect(posted.kind === "error" && posted.error.message).toBe("the upstream closed the connection before answering");
    // A new connection's request is not sent twice either: the close says something about the endpoint.
    expect((await send(pool(), "dies-before-answer", "GET")).kind).toBe("error");
    q.close();
  });

  test("keeps connections alive and reuses them; Connection: close and a cancelled body are not reused", async () => {
    const p = pool();
    const before = connections;
    for (let i = 0; i < 5; i++) expect(await responseOf(await send(p, "ok")).text()).toBe("ok");
    expect(connections - before).toBe(1);
    const answers = await Promise.all(Array.from({ length: 8 }, () => send(p, "ok")));
    for (const a of answers) expect(await responseOf(a).text()).toBe("ok");
    expect(p.opened).toBe(8);
    expect(p.idleCount).toBe(8);
    responseOf(await send(p, "close"));
    await Bun.sleep(20);
    expect(p.idleCount).toBe(7);
    const streamed = responseOf(await send(p, "chunked-stalls"));
    await streamed.body!.cancel();
    expect(p.idleCount).toBe(6);
    p.close();
    await Bun.sleep(20);
    expect(p.openCount).toBe(0);
  });

  test(`an idle connection is closed after ${IDLE_TIMEOUT_MS} ms, before common servers' keep-alive timeouts (5 s)`, async () => {
    const p = pool();
    responseOf(await send(p, "ok"));
    expect(p.idleCount).toBe(1);
    await Bun.sleep(IDLE_TIMEOUT_MS - 500);
    expect(p.idleCount).toBe(1);
    await Bun.sleep(1_800);
    expect(p.idleCount).toBe(0);
    expect(p.openCount).toBe(0);
  }, 10_000);

  test("a request body larger than the socket takes at once is written whole (drain)", async () => {
    let received = 0;
    const echo = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      maxRequestBodySize: 64 * 1024 * 1024,
      async fetch(req) {
        received = (await req.arrayBuffer()).byteLength;
        return new Response(String(received));
      },
    });
    const p = new H1Pool(`127.0.0.1:${echo.port}`);
    const body = new Uint8Array(16 * 1024 * 1024).fill(7);
    const response = responseOf(await p.send("POST", "/", new Headers(), body, 10_000, LIMITS));
    expect(await response.text()).toBe(String(body.byteLength));
    expect(received).toBe(body.byteLength);
    p.close();
    echo.stop(true);
  }, 20_000);
});

describe("TLS", () => {
  let ca: Awaited<ReturnType<typeof createCa>>;
  let other: Awaited<ReturnType<typeof createCa>>;
  let tlsServer: ReturnType<typeof Bun.serve>;
  let client: { cert: string; key: string };

  beforeAll(async () => {
    ca = await createCa("h1 test CA");
    other = await createCa("another CA");
    const serverCert = await issue(ca, { commonName: "webapp", dnsNames: ["webapp.test"], usage: "server" });
    const clientCert = await issue(ca, { commonName: "gateway", usage: "client" });
    client = { cert: clientCert.cert, key: clientCert.key };
    tlsServer = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      tls: { cert: serverCert.cert, key: serverCert.key, ca: ca.cert, requestCert: true, rejectUnauthorized: true },
      fetch: () => new Response("secret"),
    });
  });

  afterAll(() => tlsServer.stop(true));

  const tlsPool = (tls: { ca: string; cert?: string; key?: string; serverName: string }) =>
    new H1Pool(`127.0.0.1:${tlsServer.port}`, () => tls);

  test("the name and the client certificate check out: the answer comes back over TLS", async () => {
    const p = tlsPool({ ca: ca.cert, ...client, serverName: "webapp.test" });
    expect(await responseOf(await send(p, "")).text()).toBe("secret");
    expect(await responseOf(await send(p, "")).text()).toBe("secret");
    expect(p.opened).toBe(1);
    p.close();
  });

  /** The outcome's kind and error message. */
  const failure = (outcome: HttpOutcome) => ({
    kind: outcome.kind,
    message: outcome.kind === "connect-error" || outcome.kind === "error" ? outcome.error.message : "",
  });

  test("a certificate for another name, or from another CA, is refused before anything is sent, and the 502 says why", async () => {
    const cases = [
      [
        { ca: ca.cert, ...client, serverName: "rpcapp.test" },
        /: ERR_TLS_CERT_ALTNAME_INVALID Hostname\/IP does not match/,
      ],
      // The server sends its CA along (it has one for client certificates): a root the gateway does not trust.
      [{ ca: other.cert, ...client, serverName: "webapp.test" }, /: SELF_SIGNED_CERT_IN_CHAIN self.signed certificate/],
    ] as const;
    for (const [tls, why] of cases) {
      const outcome = failure(await send(tlsPool(tls), ""));
      expect(outcome.kind).toBe("connect-error");
      expect(outcome.message).toStartWith("the TLS handshake with the upstream failed: ");
      expect(outcome.message).toMatch(why);
    }
  });

  test("an expired server certificate: the connect error carries the TLS error's code and text", async () => {
    const expired = await issue(ca, {
      commonName: "webapp",
      dnsNames: ["webapp.test"],
      usage: "server",
      validFrom: new Date(Date.now() - 100 * 86_400_000),
      validDays: 10,
    });
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      tls: { cert: expired.cert, key: expired.key },
      fetch: () => new Response("stale"),
    });
    const p = new H1Pool(`127.0.0.1:${server.port}`, () => ({ ca: ca.cert, ...client, serverName: "webapp.test" }));
    expect(failure(await send(p, ""))).toEqual({
      kind: "connect-error",
      message: "the TLS handshake with the upstream failed: CERT_HAS_EXPIRED certificate has expired",
    });
    p.close();
    server.stop(true);
  });

  test("the upstream refusing the gateway's client certificate (another CA's, or none) is told as such", async () => {
    const stranger = await issue(other, { commonName: "gateway", usage: "client" });
    const refused = "it may have refused the gateway's client certificate";
    // TLS 1.3: the client's handshake is over before the server checks the certificate, and an
    // unknown CA ends in a close without a byte (it used to read "closed the connection before answering").
    expect(failure(await send(tlsPool({ ca: ca.cert, ...stranger, serverName: "webapp.test" }), ""))).toEqual({
      kind: "error",
      message: expect.stringContaining(refused),
    });
    // No certificate at all: the server's alert, and what to do about it.
    const none = failure(await send(tlsPool({ ca: ca.cert, serverName: "webapp.test" }), ""));
    expect(none.message).toContain(
      "the upstream requires a client certificate (mutual TLS) and the gateway presents none",
    );
    expect(none.message).toContain("TLSV1_ALERT_CERTIFICATE_REQUIRED");
  });
});
