/**
 * What actually reaches the service, byte for byte (test/spy/upstream-spy.ts behind a real
 * gateway process):
 *   - request smuggling: ambiguous framing from a client (Content-Length vs Transfer-Encoding,
 *     obfuscated or folded Transfer-Encoding, duplicate lengths, bare CR/LF) reaches the upstream
 *     as nothing or as exactly one well-framed request — never a second request hidden in a body;
 *   - hop-by-hop headers (RFC 9110 §7.6.1) are dropped in both directions;
 *   - X-Forwarded-For/-Proto/-Host, Host and Via are exactly what gateway/src/proxy/headers.ts
 *     and proxy/http.ts write today (pinned, so a rewrite that changes them shows here).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { stopAll } from "../../scripts/stack/testing/processes.ts";
import { removeTempFiles } from "./resilience-harness.ts";
import { parseResponse, rawExchange, responseHeader } from "./spy/raw-client.ts";
import { accessLog, type SpyGateway, startSpyGateway } from "./spy/spy-gateway.ts";
import {
  echoResponder,
  frameRequests,
  headerOf,
  httpResponse,
  type SpyRequest,
  UpstreamSpy,
} from "./spy/upstream-spy.ts";

const CRLF = "\r\n";
const enc = new TextEncoder();

let spy: UpstreamSpy;
let gw: SpyGateway;

/** Routes whose upstream path is rewritten (the "rewritePrefix" tests). */
const REWRITE_ROUTES = [
  "  - { name: exact-rw, path: /old, match: exact, upstream: spy, retry: { attempts: 1 }, http: { rewritePrefix: /new } }",
  '  - { name: slash-rw, path: /rw2, upstream: spy, retry: { attempts: 1 }, http: { rewritePrefix: "/v2/" } }',
  "  - { name: trailing-rw, path: /rw3/, upstream: spy, retry: { attempts: 1 }, http: { rewritePrefix: /v3 } }",
].join("\n");

beforeAll(async () => {
  spy = await UpstreamSpy.start();
  gw = await startSpyGateway("gateway-spy", spy, { routes: REWRITE_ROUTES });
}, 30_000);

afterAll(async () => {
  await stopAll();
  spy?.stop();
  removeTempFiles();
});

describe("the spy's framer (what the smuggling checks rely on)", () => {
  test("frames pipelined requests, and refuses what a strict server refuses", () => {
    const two = frameRequests(
      enc.encode(`POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: x\r\n\r\n`),
    );
    expect(two.requests.map((r) => [r.method, r.target, new TextDecoder().decode(r.body)])).toEqual([
      ["POST", "/a", "abc"],
      ["GET", "/b", ""],
    ]);
    expect(two.error).toBeUndefined();
    const chunked = frameRequests(
      enc.encode(`POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n`),
    );
    expect(chunked.requests.map((r) => r.body.length)).toEqual([3]);
    for (const bad of [
      "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
      "POST / HTTP/1.1\r\nX-A: a\r\n folded\r\n\r\n",
      "POST / HTTP/1.1\r\nX-A: a\nContent-Length: 3\r\n\r\n",
    ]) {
      expect(frameRequests(enc.encode(bad)).error).toBeDefined();
    }
  });
});

describe("the spy itself", () => {
  test("a queued script answers the next new connection only; later ones get the default echo", async () => {
    spy.clear();
    spy.nextConnection(async (conn) => {
      await conn.nextRequest();
      await conn.write(httpResponse(201, "scripted", [["Connection", "close"]], "Created"));
      conn.end();
    });
    const first = await fetch(`http://${spy.address}/direct`, { headers: { connection: "close" } });
    expect([first.status, await first.text()]).toEqual([201, "scripted"]);
    const second = await fetch(`http://${spy.address}/direct-2`, { headers: { connection: "close" } });
    expect(((await second.json()) as { target: string }).target).toBe("/direct-2");
    // Each connection kept its bytes.
    expect(spy.connections.map((c) => c.framed().requests.map((r) => r.target))).toEqual([["/direct"], ["/direct-2"]]);
  });
});

/** One hostile request: its own request id, and a second request (`smuggled-<n>`) hidden in it. */
interface SmugglingProbe {
  name: string;
  bytes: string;
  /** A control, not an attack: unambiguous framing, the hidden request is the body. */
  control?: boolean;
}

function smugglingProbes(): SmugglingProbe[] {
  const probes: SmugglingProbe[] = [];
  const add = (name: string, build: (id: string, inner: string) => string, control = false) => {
    const id = `probe-${probes.length}`;
    // The hidden request: if the upstream ever parses it as a request of its own, its id shows.
    const inner = `GET /spy/SMUGGLED HTTP/1.1${CRLF}Host: x${CRLF}X-Request-Id: smuggled-${probes.length}${CRLF}${CRLF}`;
    probes.push({ name, bytes: build(id, inner), control });
  };
  const head = (id: string, headers: string[]) =>
    `POST /spy/probe HTTP/1.1${CRLF}Host: portico.test${CRLF}X-Request-Id: ${id}${CRLF}${headers.map((h) => h + CRLF).join("")}${CRLF}`;
  const zeroChunk = (inner: string) => `0${CRLF}${CRLF}${inner}`;
  const innerAsChunk = (inner: string) => `${inner.length.toString(16)}${CRLF}${inner}${CRLF}0${CRLF}${CRLF}`;

  // CL.TE: a front end that trusts Content-Length forwards it all; one trusting TE stops at 0.
  add("CL + TE (CL covers a hidden request)", (id, inner) => {
    const body = zeroChunk(inner);
    return head(id, [`Content-Length: ${body.length}`, "Transfer-Encoding: chunked"]) + body;
  });
  // TE.CL: the hidden request is inside a chunk; CL says the body ends before it.
  add(
    "TE + CL (hidden request inside a chunk)",
    (id, inner) => head(id, ["Transfer-Encoding: chunked", "Content-Length: 4"]) + innerAsChunk(inner),
  );
  for (const [name, te] of [
    ["TE with obs-fold", "Transfer-Encoding:\r\n chunked"],
    ["TE xchunked", "Transfer-Encoding: xchunked"],
    ["TE with a space before the colon", "Transfer-Encoding : chunked"],
    ["TE chunked, identity", "Transfer-Encoding: chunked, identity"],
    ["TE with a tab", "Transfer-Encoding:\tchunked"],
    ["TE twice (chunked, then gzip)", "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip"],
    ["TE in mixed case", "transfer-ENCODING: CHUNKED"],
  ] as const) {
    add(`${name} + CL`, (id, inner) => {
      const body = zeroChunk(inner);
      return head(id, [`Content-Length: ${body.length}`, te]) + body;
    });
    add(`${name}, hidden request in a chunk`, (id, inner) => head(id, [te, "Content-Length: 4"]) + innerAsChunk(inner));
  }
  add(
    "two Content-Lengths (0, then the hidden request's)",
    (id, inner) => head(id, ["Content-Length: 0", `Content-Length: ${inner.length}`]) + inner,
  );
  add(
    "two Content-Lengths (hidden request's, then 0)",
    (id, inner) => head(id, [`Content-Length: ${inner.length}`, "Content-Length: 0"]) + inner,
  );
  add("Content-Length list 0, n", (id, inner) => head(id, [`Content-Length: 0, ${inner.length}`]) + inner);
  add("Content-Length with a plus sign", (id, inner) => head(id, [`Content-Length: +${inner.length}`]) + inner);
  add("bare LF before Content-Length", (id, inner) => head(id, [`X-A: a\nContent-Length: ${inner.length}`]) + inner);
  add("bare CR before Content-Length", (id, inner) => head(id, [`X-A: a\rContent-Length: ${inner.length}`]) + inner);
  add("bare LF line ends throughout", (id, inner) =>
    (head(id, [`Content-Length: ${inner.length}`]) + inner).replaceAll("\r\n", "\n"),
  );
  add(
    "chunk size with a bare LF",
    (id, inner) =>
      `${head(id, ["Transfer-Encoding: chunked"])}${inner.length.toString(16)}\n${inner}${CRLF}0${CRLF}${CRLF}`,
  );
  add(
    "chunk extension hiding a CRLF",
    (id, inner) => `${head(id, ["Transfer-Encoding: chunked"])}2;x=\n\r\nab${CRLF}0${CRLF}${CRLF}${inner}`,
  );
  // The control: the same hidden request under an unambiguous Content-Length is body, not a
  // request — and it does reach the upstream, which proves the spy sees what the probes carry.
  add(
    "control: the hidden request as a plain body",
    (id, inner) => head(id, [`Content-Length: ${inner.length}`]) + inner,
    true,
  );
  return probes;
}

describe("request smuggling: what reached the upstream", () => {
  test("ambiguous framing reaches the upstream as nothing or one well-framed request; never a hidden second one", async () => {
    spy.clear();
    const probes = smugglingProbes();
    // No `Connection: close`: a hidden request is only reached if the connection stays open.
    const answers = await Promise.all(probes.map((p) => rawExchange(gw.port, p.bytes, { timeoutMs: 1_500 })));
    await Bun.sleep(200);

    const upstreamRequests: SpyRequest[] = [];
    const framingErrors: string[] = [];
    for (const conn of spy.connections) {
      const framed = conn.framed();
      upstreamRequests.push(...framed.requests);
      if (framed.error || framed.rest.length > 0)
        framingErrors.push(`connection ${conn.id}: ${framed.error ?? `${framed.rest.length} unframed bytes`}`);
    }
    const loggedIds = new Set(accessLog(gw).map((e) => e.request_id));
    const idOf = (r: SpyRequest) => headerOf(r, "x-request-id") ?? "(none)";

    const rows = probes.map((probe, i) => {
      const statuses = [...answers[i]!.bytes.toString("latin1").matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
      const reached = upstreamRequests.filter((r) => idOf(r) === `probe-${i}` || idOf(r) === `smuggled-${i}`);
      return {
        probe,
        statuses,
        reached: reached.map((r) => `${r.method} ${r.target} (${idOf(r)})`),
        bodies: reached.map((r) => new TextDecoder().decode(r.body)),
      };
    });
    console.log(
      `\nsmuggling probes → client answers | what reached the upstream:\n${rows
        .map((r) => `  ${r.probe.name}: [${r.statuses.join(", ") || "closed"}] | ${r.reached.join("; ") || "nothing"}`)
        .join("\n")}`,
    );

    // Every byte the spy received is well-framed HTTP/1.1.
    expect(framingErrors).toEqual([]);
    // Every request the upstream saw is one the gateway itself framed, routed and logged.
    expect(upstreamRequests.map(idOf).filter((id) => !loggedIds.has(id))).toEqual([]);
    for (const row of rows) {
      if (row.probe.control) {
        // One request, carrying the hidden one as its body, byte for byte.
        expect(row.reached).toEqual([`POST /spy/probe (probe-${rows.indexOf(row)})`]);
        expect(row.bodies[0]).toContain("GET /spy/SMUGGLED HTTP/1.1");
        expect(row.statuses).toEqual(["200"]);
        continue;
      }
      // Nothing, or exactly the outer request: never the hidden one.
      expect({ probe: row.probe.name, reached: row.reached.length <= 1 }).toEqual({
        probe: row.probe.name,
        reached: true,
      });
      expect(row.reached.filter((r) => r.includes("SMUGGLED"))).toEqual([]);
      // A refused probe is refused with a 4xx (or a close), never a 5xx.
      expect(row.statuses.filter((s) => s!.startsWith("5") && s !== "505")).toEqual([]);
    }
    // The gateway is still serving.
    expect((await fetch(`${gw.url}/spy/after`)).status).toBe(200);
  }, 30_000);
});

describe("HTTP/1.1 pipelining", () => {
  // RFC 9112 §9.3.2: a server may process pipelined requests or close after the first, but a
  // request it has already sent upstream must get its answer — otherwise a POST has run and the
  // client, seeing a closed connection and no status, is entitled to send it again.
  //
  // Fails on Bun 1.4.5, and not in gateway code: Bun.serve closes the connection, with nothing
  // written, when a second pipelined request is parsed while an async handler is still answering
  // the first (uWS's HTTP_RESPONSE_PENDING branch). Ten lines of plain Bun.serve do the same —
  // an async handler (`await Bun.sleep(20)`), `GET /one` and `GET /two` in one write: no status
  // line, connection closed; with a synchronous handler both are answered. Upstream work on it:
  // oven-sh/bun pull requests #38128 (open) and #33664, #35036 (closed). `test.failing` turns
  // green — and so fails, to be switched back to `test` — once a Bun release fixes it.
  // docs/gateway.md, "Known limits".
  test.failing("every request that reached the upstream gets its answer", async () => {
    spy.clear();
    const body = '{"n":1}';
    const first = `POST /spy/pipelined-1 HTTP/1.1${CRLF}Host: portico.test${CRLF}Content-Length: ${body.length}${CRLF}${CRLF}${body}`;
    const second = `GET /spy/pipelined-2 HTTP/1.1${CRLF}Host: portico.test${CRLF}${CRLF}`;
    const answer = await rawExchange(gw.port, first + second, { timeoutMs: 2_000 });
    await Bun.sleep(100);
    const answered = [...answer.bytes.toString("latin1").matchAll(/HTTP\/1\.1 (\d{3})/g)].map((m) => m[1]);
    const reached = spy.allRequests().map((r) => `${r.method} ${r.target}`);
    console.log(
      `pipelined POST + GET: upstream received ${JSON.stringify(reached)}; client got ${JSON.stringify(answered)} (connection closed: ${answer.closed})`,
    );
    expect(answered.length).toBeGreaterThanOrEqual(reached.length);
    expect(answered.every((s) => s === "200")).toBe(true);
  });
});

const REQUEST_HOP_BY_HOP = [
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "x-hop-req",
  "x-hop-req-2",
];

describe("hop-by-hop headers", () => {
  test("on the request: none reaches the upstream (nor any header Connection names); end-to-end ones do", async () => {
    spy.clear();
    const body = `5${CRLF}hello${CRLF}0${CRLF}${CRLF}`;
    const request = [
      "POST /spy/hop HTTP/1.1",
      "Host: public.example",
      "Connection: keep-alive, X-Hop-Req",
      "Connection: X-Hop-Req-2",
      "X-Hop-Req: secret",
      "X-Hop-Req-2: secret",
      "Keep-Alive: timeout=5, max=100",
      "Proxy-Connection: keep-alive",
      "Proxy-Authorization: Basic dXNlcjpwYXNz",
      "TE: trailers",
      "Trailer: X-Checksum",
      "Upgrade: h2c",
      "Transfer-Encoding: chunked",
      "X-End-To-End: kept",
      "Content-Type: text/plain",
    ].join(CRLF);
    const answer = await rawExchange(gw.port, `${request}${CRLF}${CRLF}${body}`, {
      done: (b) => parseResponse(b)?.complete === true,
    });
    const res = parseResponse(answer.bytes);
    expect(res?.status).toBe(200);
    const seen = spy.allRequests();
    expect(seen).toHaveLength(1);
    const upstream = seen[0]!;
    console.log("request headers at the upstream:", upstream.headers);
    // Bun's fetch writes its own `Connection: keep-alive` (its pool's): that one is the gateway's.
    const connection = headerOf(upstream, "connection");
    expect(connection === null || connection.toLowerCase() === "keep-alive").toBe(true);
    expect(REQUEST_HOP_BY_HOP.filter((h) => h !== "connection" && headerOf(upstream, h) !== null)).toEqual([]);
    expect(headerOf(upstream, "x-end-to-end")).toBe("kept");
    // The chunked body arrives re-framed with a length (the gateway buffers request bodies).
    expect(new TextDecoder().decode(upstream.body)).toBe("hello");
    expect(headerOf(upstream, "content-length")).toBe("5");
  });

  test("on the response: none reaches the client (nor any header Connection names); end-to-end ones do", async () => {
    spy.clear();
    spy.respond = (_req, conn) =>
      conn.write(
        [
          "HTTP/1.1 200 OK",
          "Connection: keep-alive, X-Hop-Resp",
          "X-Hop-Resp: secret",
          "Keep-Alive: timeout=99, max=7",
          "Proxy-Connection: keep-alive",
          "Proxy-Authenticate: Basic realm=upstream",
          "TE: trailers",
          "Trailer: X-Checksum",
          "Upgrade: h2c",
          "X-End-To-End: kept",
          "Transfer-Encoding: chunked",
          "",
          `5${CRLF}hello${CRLF}0${CRLF}X-Checksum: abc${CRLF}${CRLF}`,
        ].join(CRLF),
      );
    const answer = await rawExchange(gw.port, `GET /spy/hop HTTP/1.1${CRLF}Host: portico.test${CRLF}${CRLF}`, {
      done: (b) => parseResponse(b)?.complete === true,
    });
    const res = parseResponse(answer.bytes)!;
    console.log("response headers at the client:", res.headers);
    expect(res.status).toBe(200);
    expect(res.complete).toBe(true);
    expect(res.body.toString()).toBe("hello");
    const present = (name: string) => res.headers.some(([k]) => k === name);
    expect(
      ["x-hop-resp", "keep-alive", "proxy-connection", "proxy-authenticate", "te", "trailer", "upgrade"].filter(
        present,
      ),
    ).toEqual([]);
    // A Connection header the client sees is the gateway's own (Bun.serve's), naming nothing of the upstream's.
    const connection = responseHeader(res, "connection");
    expect(connection === undefined || /^(keep-alive|close)$/i.test(connection)).toBe(true);
    // The trailer field is not turned into a header either.
    expect(present("x-checksum")).toBe(false);
    expect(responseHeader(res, "x-end-to-end")).toBe("kept");
    // Framing is the gateway's: exactly one of Content-Length / chunked, and the upstream's Keep-Alive parameters are gone.
    expect(present("content-length") !== present("transfer-encoding")).toBe(true);
  });

  test("the gateway's own headers (x-request-id, x-gateway, x-gateway-version) replace any the upstream sent", async () => {
    spy.clear();
    spy.respond = (_req, conn) =>
      conn.write(
        httpResponse(200, "ok", [
          ["Content-Length", "2"],
          ["X-Request-Id", "upstream-id"],
          ["X-Gateway", "upstream"],
          ["Connection", "X-Gateway-Version"],
          ["X-Gateway-Version", "0"],
        ]),
      );
    const answer = await rawExchange(
      gw.port,
      `GET /spy/stamp HTTP/1.1${CRLF}Host: portico.test${CRLF}X-Request-Id: client-id-1${CRLF}${CRLF}`,
      { done: (b) => parseResponse(b)?.complete === true },
    );
    const res = parseResponse(answer.bytes)!;
    expect([res.status, res.body.toString()]).toEqual([200, "ok"]);
    const own = res.headers.filter(([k]) => k.startsWith("x-gateway") || k === "x-request-id");
    expect(own.sort(([a], [b]) => a.localeCompare(b))).toEqual([
      ["x-gateway", gw.instance],
      ["x-gateway-version", "dev"],
      ["x-request-id", "client-id-1"],
    ]);
  });

  test("a response with Content-Length keeps it; a Transfer-Encoding the upstream sent is not repeated", async () => {
    spy.clear();
    spy.respond = (_req, conn) =>
      conn.write(
        httpResponse(200, "12345", [
          ["Content-Length", "5"],
          ["Connection", "X-Hop-Resp"],
          ["X-Hop-Resp", "secret"],
        ]),
      );
    const answer = await rawExchange(gw.port, `GET /spy/cl HTTP/1.1${CRLF}Host: portico.test${CRLF}${CRLF}`, {
      done: (b) => parseResponse(b)?.complete === true,
    });
    const res = parseResponse(answer.bytes)!;
    expect([res.status, res.body.toString(), res.complete]).toEqual([200, "12345", true]);
    expect(res.headers.filter(([k]) => k === "x-hop-resp" || k === "transfer-encoding")).toEqual([]);
    expect(res.headers.filter(([k]) => k === "content-length")).toEqual([["content-length", "5"]]);
  });
});

describe("X-Forwarded-*, Host and Via (pinned: what gateway/src/proxy/headers.ts does today)", () => {
  async function upstreamHeadersFor(port: number, headers: string[], version = "HTTP/1.1"): Promise<SpyRequest> {
    spy.clear();
    const answer = await rawExchange(
      port,
      `GET /spy/fwd ${version}${CRLF}${headers.map((h) => h + CRLF).join("")}${CRLF}`,
      {
        done: (b) => parseResponse(b)?.complete === true,
      },
    );
    expect(parseResponse(answer.bytes)?.status).toBe(200);
    const seen = spy.allRequests();
    expect(seen).toHaveLength(1);
    return seen[0]!;
  }

  const forwarded = (r: SpyRequest) => ({
    host: headerOf(r, "host"),
    "x-forwarded-for": headerOf(r, "x-forwarded-for"),
    "x-forwarded-proto": headerOf(r, "x-forwarded-proto"),
    "x-forwarded-host": headerOf(r, "x-forwarded-host"),
    via: headerOf(r, "via"),
    "x-request-id": headerOf(r, "x-request-id"),
  });

  test("untrusted client: X-Forwarded-* replaced (never extended), Host becomes the endpoint, Via appended to", async () => {
    const seen = await upstreamHeadersFor(gw.port, [
      "Host: public.example",
      "X-Forwarded-For: 6.6.6.6",
      "X-Forwarded-Proto: https",
      "X-Forwarded-Host: evil.example",
      "Via: 1.0 somewhere-else",
      "X-Request-Id: fwd-1",
    ]);
    console.log("untrusted client → upstream:", forwarded(seen));
    expect(forwarded(seen)).toEqual({
      host: spy.address,
      "x-forwarded-for": "127.0.0.1",
      "x-forwarded-proto": "http",
      "x-forwarded-host": "public.example",
      // Appended to, as RFC 9110 §7.6.3 asks.
      via: `1.0 somewhere-else, 1.1 ${gw.instance}`,
      "x-request-id": "fwd-1",
    });
  });

  test("a tracestate travels on beside a valid traceparent, and is discarded without one (W3C Trace Context §4.3)", async () => {
    const valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const traceOf = async (headers: string[]) => {
      const seen = await upstreamHeadersFor(gw.port, ["Host: public.example", ...headers]);
      return { traceparent: headerOf(seen, "traceparent"), tracestate: headerOf(seen, "tracestate") };
    };
    expect(await traceOf([`traceparent: ${valid}`, "tracestate: congo=t61rcWkgMzE"])).toEqual({
      traceparent: expect.stringMatching(/^00-4bf92f3577b34da6a3ce929d0e0e4736-[0-9a-f]{16}-01$/),
      tracestate: "congo=t61rcWkgMzE",
    });
    for (const traceparent of [[], ["traceparent: 00-not-a-trace-01"]])
      expect(await traceOf([...traceparent, "tracestate: congo=t61rcWkgMzE"])).toEqual({
        traceparent: expect.stringMatching(/^00-[0-9a-f]{32}-[0-9a-f]{16}-00$/),
        tracestate: null,
      });
  });

  test("no Host (HTTP/1.0): no X-Forwarded-Host, even when the client sent one", async () => {
    const seen = await upstreamHeadersFor(gw.port, ["X-Forwarded-Host: evil.example"], "HTTP/1.0");
    expect(forwarded(seen)["x-forwarded-host"]).toBeNull();
    expect(forwarded(seen)["x-forwarded-for"]).toBe("127.0.0.1");
  });

  describe("behind a trusted proxy", () => {
    let trusted: SpyGateway;
    beforeAll(async () => {
      trusted = await startSpyGateway("gateway-spy-trusted", spy, { extra: 'trustedProxies: ["127.0.0.1/32"]' });
    }, 30_000);

    test("X-Forwarded-* kept and X-Forwarded-For extended with the direct peer's address", async () => {
      const seen = await upstreamHeadersFor(trusted.port, [
        "Host: lb.internal",
        "X-Forwarded-For: 10.0.0.1, 203.0.113.7",
        "X-Forwarded-Proto: https",
        "X-Forwarded-Host: public.example",
      ]);
      console.log("trusted proxy → upstream:", forwarded(seen));
      expect(forwarded(seen)).toMatchObject({
        host: spy.address,
        // The appended entry is the direct peer (127.0.0.1, the trusted proxy), as every proxy
        // appends the address it received the request from.
        "x-forwarded-for": "10.0.0.1, 203.0.113.7, 127.0.0.1",
        "x-forwarded-proto": "https",
        "x-forwarded-host": "public.example",
        via: `1.1 ${trusted.instance}`,
      });
    });

    test("without X-Forwarded-* from the proxy, the gateway fills them in from the peer", async () => {
      const seen = await upstreamHeadersFor(trusted.port, ["Host: lb.internal"]);
      expect(forwarded(seen)).toMatchObject({
        "x-forwarded-for": "127.0.0.1",
        "x-forwarded-proto": "http",
        "x-forwarded-host": "lb.internal",
      });
    });
  });
});

/** The request target the spy saw for `target` sent through the gateway. */
async function upstreamTargetOf(target: string, method = "GET"): Promise<string | undefined> {
  spy.clear();
  spy.respond = echoResponder;
  const answer = await rawExchange(gw.port, `${method} ${target} HTTP/1.1${CRLF}Host: portico.test${CRLF}${CRLF}`, {
    done: (b) => parseResponse(b)?.complete === true,
  });
  expect(parseResponse(answer.bytes)?.status).toBe(200);
  return spy.allRequests()[0]?.target;
}

describe("http.rewritePrefix", () => {
  test("on an exact route, the whole path is replaced", async () => {
    expect(await upstreamTargetOf("/old")).toBe("/new");
    expect(await upstreamTargetOf("/old?a=1")).toBe("/new?a=1");
  });

  test("the replacement and the rest of the path join with one slash", async () => {
    expect(await upstreamTargetOf("/rw2/users")).toBe("/v2/users");
    expect(await upstreamTargetOf("/rw2")).toBe("/v2/");
    // A route path written with a trailing slash matches as without one, and rewrites so too.
    expect(await upstreamTargetOf("/rw3/users")).toBe("/v3/users");
    expect(await upstreamTargetOf("/rw3")).toBe("/v3");
  });
});

describe("what Bun.serve would write that the upstream did not say", () => {
  test("a body without Content-Type keeps its length and bytes (Bun.serve labels it octet-stream: docs/gateway.md)", async () => {
    for (const size of [4, 1000, 60_000]) {
      const body = "x".repeat(size);
      spy.respond = (_req, conn) => conn.write(httpResponse(500, body, [], "Internal Server Error"));
      const answer = await rawExchange(gw.port, `GET /spy/untyped HTTP/1.1${CRLF}Host: portico.test${CRLF}${CRLF}`, {
        done: (b) => parseResponse(b)?.complete === true,
      });
      const res = parseResponse(answer.bytes)!;
      expect([res.status, res.body.length, res.complete]).toEqual([500, size, true]);
      expect(responseHeader(res, "content-length")).toBe(String(size));
      expect(responseHeader(res, "transfer-encoding")).toBeUndefined();
    }
    // One the upstream names is kept as it is.
    spy.respond = (_req, conn) => conn.write(httpResponse(200, "<p>", [["Content-Type", "text/html"]]));
    const typed = parseResponse(
      (
        await rawExchange(gw.port, `GET /spy/typed HTTP/1.1${CRLF}Host: portico.test${CRLF}${CRLF}`, {
          done: (b) => parseResponse(b)?.complete === true,
        })
      ).bytes,
    )!;
    expect(responseHeader(typed, "content-type")).toBe("text/html");
  });

  test("HEAD: an answer without a length is not given `content-length: 0`; one with a length keeps it", async () => {
    const head = async (): Promise<[string, string][]> => {
      const answer = await rawExchange(gw.port, `HEAD /spy/head HTTP/1.1${CRLF}Host: portico.test${CRLF}${CRLF}`, {
        done: (b) => b.includes("\r\n\r\n"),
        timeoutMs: 2_000,
      });
      const text = answer.bytes.toString("latin1");
      expect(text.startsWith("HTTP/1.1 200")).toBe(true);
      return text
        .slice(0, text.indexOf("\r\n\r\n"))
        .split("\r\n")
        .slice(1)
        .map((line) => {
          const colon = line.indexOf(":");
          return [line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim()] as [string, string];
        });
    };
    spy.respond = (_req, conn) => conn.write(`HTTP/1.1 200 OK${CRLF}Transfer-Encoding: chunked${CRLF}${CRLF}`);
    const chunked = await head();
    expect(chunked.filter(([k]) => k === "content-length")).toEqual([]);
    expect(chunked.filter(([k]) => k === "transfer-encoding")).toEqual([["transfer-encoding", "chunked"]]);
    spy.respond = (_req, conn) => conn.write(`HTTP/1.1 200 OK${CRLF}Content-Length: 1000${CRLF}${CRLF}`);
    const sized = await head();
    expect(sized.filter(([k]) => k === "content-length")).toEqual([["content-length", "1000"]]);
    expect(sized.filter(([k]) => k === "transfer-encoding")).toEqual([]);
    // Neither upstream answer had a Date, and Bun.serve writes none on a HEAD's: the gateway does
    // (RFC 9110 §6.6.1), one, in the IMF-fixdate form.
    for (const answer of [chunked, sized]) {
      const dates = answer.filter(([k]) => k === "date").map(([, v]) => v);
      expect(dates).toHaveLength(1);
      expect(dates[0]).toMatch(/^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
    }
    // One the upstream sent is kept as it is.
    spy.respond = (_req, conn) =>
      conn.write(`HTTP/1.1 200 OK${CRLF}Date: Sun, 06 Nov 1994 08:49:37 GMT${CRLF}Content-Length: 0${CRLF}${CRLF}`);
    expect((await head()).filter(([k]) => k === "date")).toEqual([["date", "Sun, 06 Nov 1994 08:49:37 GMT"]]);
  });
});

describe("the edge's own checks", () => {
  test("`Content-Length: 00` on a GET is a length of zero, not a body", async () => {
    spy.clear();
    spy.respond = echoResponder;
    const answer = await rawExchange(
      gw.port,
      `GET /spy/zero HTTP/1.1${CRLF}Host: portico.test${CRLF}Content-Length: 00${CRLF}${CRLF}`,
      { done: (b) => parseResponse(b)?.complete === true },
    );
    expect(parseResponse(answer.bytes)?.status).toBe(200);
    expect(spy.allRequests().map((r) => r.target)).toEqual(["/spy/zero"]);
  });

  test("a fragment (#) in the query is 400, as in the path: nothing reaches the upstream", async () => {
    spy.clear();
    spy.respond = echoResponder;
    for (const target of ["/spy/q?x=1#frag", "/spy/q#frag", "/spy/q?x=1"]) {
      const answer = await rawExchange(gw.port, `GET ${target} HTTP/1.1${CRLF}Host: portico.test${CRLF}${CRLF}`, {
        done: (b) => parseResponse(b)?.complete === true,
      });
      expect({ target, status: parseResponse(answer.bytes)?.status }).toEqual({
        target,
        status: target.includes("#") ? 400 : 200,
      });
    }
    expect(spy.allRequests().map((r) => r.target)).toEqual(["/spy/q?x=1"]);
  });

  test("the public probes answer GET and HEAD; another method gets 405 with Allow", async () => {
    for (const path of ["/healthz", "/readyz"]) {
      expect((await fetch(`${gw.url}${path}`)).status).toBe(200);
      expect((await fetch(`${gw.url}${path}`, { method: "HEAD" })).status).toBe(200);
      for (const method of ["POST", "DELETE"]) {
        const res = await fetch(`${gw.url}${path}`, { method });
        expect(res.status).toBe(405);
        expect(res.headers.get("allow")).toBe("GET, HEAD");
        expect(res.headers.get("content-type")).toContain("application/problem+json");
      }
    }
  });
});
