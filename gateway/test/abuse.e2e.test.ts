/**
 * The abuse suite: hundreds of generated hostile requests, sent over raw TCP to a running local
 * stack (3 gateways, 3 webapps, 3 rpcapps): malformed HTTP framing, invalid header bytes,
 * conflicting lengths, truncated bodies, oversized headers, slow clients, hostile JSON, hostile
 * paths, methods never routed — in plain HTTP, and again over TLS on the HTTPS listener with mutual
 * TLS behind it (`TLS=1 make dev`). Every answer must be a 4xx or a closed connection, each within
 * its bound — never a 5xx for the client's fault, never a hang — and afterwards every process is
 * alive, ready, and the gateways' memory is back within bounds. The counts by outcome are printed.
 *
 * One exception is Bun's own: its HTTP parser answers `505 HTTP Version Not Supported` to a request
 * line it cannot split into method, target and HTTP/1.x (a space or control byte in the target,
 * bare LF line ends, a missing version) — before the gateway sees anything. Those probes are
 * marked `parser`; a 505 is accepted only there and only without the gateway's headers.
 *
 * A second, smaller stack (one gateway in front of a stub upstream) proves the limits that need
 * an upstream that misbehaves: a route slower than the idle timeout, oversized responses, and
 * X-Forwarded-* / Host from an untrusted client.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import { join } from "node:path";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { REPO_ROOT, spawnService, stopAll, waitFor, testTempDir } from "../../scripts/stack/testing/processes.ts";
import { startTestStack, type TestStack } from "../../scripts/stack/testing/stack.ts";
import { parseProtos } from "../../lib/proto.ts";
import { resolveMethod } from "../src/grpc/method.ts";
import { frameMessage } from "../src/grpc/wire.ts";
import { answer, type RawServer, rawServer } from "./raw-h2-server.ts";
import protobuf from "protobufjs";

/** What one probe sends, and what it may be answered with. */
interface Probe {
  category: string;
  name: string;
  /** Sent in order; `gapMs` apart when there are several parts. */
  parts: (string | Uint8Array)[];
  gapMs?: number;
  /** Half-close after the last part (the client is done sending). */
  end?: boolean;
  /** The request line itself is malformed: Bun's parser may answer 505 (see the file comment). */
  parser?: boolean;
  /** Bound on the whole probe; a slow client must have been cut by then. */
  timeoutMs?: number;
  /** Framing probes: the X-Request-Id it carries, and that of the request hidden in it (if any). */
  requestId?: string;
  hiddenId?: string;
  /** No `Connection: close`: a request hidden behind this one is only reached on an open connection. */
  keepOpen?: boolean;
  /** A well-framed request the upstream must receive: proves the upstream check can see arrivals. */
  control?: boolean;
}

type Outcome = { kind: "status"; status: number; fromGateway: boolean } | { kind: "closed" } | { kind: "timeout" };

const IDLE_TIMEOUT_SEC = 2;
const enc = new TextEncoder();

/** Over TLS: the CA the gateway's certificate chains to (the HTTPS listener). */
type Transport = { tls: false } | { tls: true; ca: string };

/** Sends a probe on a fresh connection; the outcome is the first final status line, or how it ended. */
function send(port: number, probe: Probe, transport: Transport = { tls: false }): Promise<Outcome> {
  return new Promise((resolve) => {
    const socket = transport.tls
      ? tlsConnect({ host: "127.0.0.1", port, ca: transport.ca, servername: "localhost" })
      : connect({ host: "127.0.0.1", port });
    let received = Buffer.alloc(0);
    let settled = false;
    const timers: ReturnType<typeof setTimeout>[] = [];
    const finish = (outcome: Outcome) => {
      if (settled) return;
      settled = true;
      timers.forEach(clearTimeout);
      socket.destroy();
      resolve(outcome);
    };
    const parsed = (): Outcome | undefined => {
      let text = received.toString("latin1");
      // Skip interim 1xx answers (100 Continue).
      while (/^HTTP\/1\.[01] 1\d\d [^\r\n]*\r\n(?:[^\r\n]*\r\n)*?\r\n/.test(text))
        text = text.replace(/^HTTP\/1\.[01] 1\d\d [^\r\n]*\r\n(?:[^\r\n]*\r\n)*?\r\n/, "");
      const head = text.indexOf("\r\n\r\n");
      if (head < 0) return undefined;
      const status = /^HTTP\/1\.[01] (\d{3})/.exec(text);
      if (!status) return { kind: "closed" };
      return {
        kind: "status",
        status: Number(status[1]),
        fromGateway: /\r\nx-gateway:/i.test(text.slice(0, head + 2)),
      };
    };
    timers.push(setTimeout(() => finish({ kind: "timeout" }), probe.timeoutMs ?? 5000));
    socket.on("data", (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      const outcome = parsed();
      if (outcome) finish(outcome);
    });
    socket.on("error", () => {});
    socket.on("close", () => finish(parsed() ?? { kind: "closed" }));
    socket.on(transport.tls ? "secureConnect" : "connect", () => {
      probe.parts.forEach((part, i) => {
        timers.push(
          setTimeout(
            () => {
              if (settled || socket.destroyed) return;
              socket.write(part, () => {});
              if (i === probe.parts.length - 1 && probe.end) socket.end();
            },
            i * (probe.gapMs ?? 0),
          ),
        );
      });
    });
  });
}

// ---- the generated probes -------------------------------------------------------------------

const CRLF = "\r\n";
const request = (line: string, headers: string[] = [], body = "") =>
  `${line}${CRLF}${[...headers, ""].join(CRLF)}${CRLF}${body}`;
const host = "Host: portico.test";
const close = "Connection: close";

function requestLineProbes(): Probe[] {
  const probes: Probe[] = [];
  const methods = ["GET", "G ET", "get", "FOO", "\x00GET", "G".repeat(2000)];
  const targets = ["/projects/", "", "/a b", "/\x01", "*", "\\projects", "/projects/\x7f"];
  const versions = ["HTTP/1.1", "HTTP/2.0", "HTTP/0.9", "http/1.1", ""];
  for (const method of methods) {
    for (const target of targets) {
      for (const version of versions) {
        if (method === "GET" && target === "/projects/" && version === "HTTP/1.1") continue; // well-formed
        const line = [method, target, version].filter((p, i) => p !== "" || i === 1).join(" ");
        probes.push({
          category: "request line",
          name: JSON.stringify(line.slice(0, 60)),
          parts: [request(line, [host, close])],
          parser: true,
        });
      }
    }
  }
  probes.push({
    category: "request line",
    name: "garbage bytes",
    parts: [new Uint8Array([0x16, 0x03, 0x01, 0x00, 0xff, 0x0d, 0x0a, 0x0d, 0x0a])],
    parser: true,
  });
  probes.push({
    category: "request line",
    name: "TLS ClientHello on plain HTTP",
    parts: [
      new Uint8Array([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, ...new Array(64).fill(0x41)]),
    ],
    end: true,
    parser: true,
  });
  probes.push({
    category: "request line",
    name: "HTTP/2 preface",
    parts: ["PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"],
    parser: true,
  });
  probes.push({
    category: "request line",
    name: "leading empty lines",
    parts: [`${CRLF.repeat(3)}${request("GET /nope HTTP/1.1", [host, close])}`],
    parser: true,
  });
  return probes;
}

function headerProbes(): Probe[] {
  const bad: [string, string[]][] = [
    ["NUL in a value", ["X-A: a\x00b"]],
    ["CTL in a value", ["X-A: a\x01b"]],
    ["DEL in a value", ["X-A: a\x7fb"]],
    ["CR inside a value", ["X-A: a\rb"]],
    ["space before the colon", ["X-A : b"]],
    ["no colon", ["X-A-B"]],
    ["empty name", [": b"]],
    ["parenthesis in the name", ["X(A): b"]],
    ["non-ASCII name", ["X-Ä: b"]],
    ["obs-fold", ["X-A: a", "  folded"]],
    ["obs-fold with tab", ["X-A: a", "\tfolded"]],
    ["two Host headers", ["Host: other.test"]],
    ["Host with a path", ["Host: evil.test/x"]],
    ["Host with a space", ["Host: evil test"]],
    ["Host with userinfo", ["Host: user@evil.test"]],
    ["Host with a bad port", ["Host: evil.test:99999999"]],
    ["oversized header (64 KiB)", [`X-Big: ${"a".repeat(64 * 1024)}`]],
    ["oversized header (17 KiB)", [`X-Big: ${"a".repeat(17 * 1024)}`]],
    ["300 small headers", Array.from({ length: 300 }, (_, i) => `X-H${i}: ${"v".repeat(40)}`)],
    ["many cookies", [`Cookie: ${Array.from({ length: 3000 }, (_, i) => `c${i}=v`).join("; ")}`]],
    ["8-bit (obs-text) in a value", ["X-A: caf\xe9 \xff"]],
  ];
  const probes: Probe[] = [];
  // Requests refused whatever the headers (no route; a method the route lacks; a POST without a
  // body): a header the parser tolerates still gets a 4xx, and a 5xx from handling it would show.
  for (const line of ["GET /nope HTTP/1.1", "GET /verify/ HTTP/1.1", "POST /projects/ HTTP/1.1"]) {
    for (const [name, headers] of bad) {
      const withHost = name.startsWith("Host with") ? headers : [host, ...headers];
      probes.push({
        category: "header bytes",
        name: `${name} → ${line}`,
        parts: [request(line, [...withHost, close])],
      });
    }
    const crlf = request(line, [host, close]);
    probes.push({
      category: "header bytes",
      name: `bare LF line ends → ${line}`,
      parts: [crlf.replaceAll("\r\n", "\n")],
      parser: true,
    });
    probes.push({
      category: "header bytes",
      name: `bare CR line ends → ${line}`,
      parts: [crlf.replaceAll("\r\n", "\r")],
      parser: true,
    });
    probes.push({
      category: "header bytes",
      name: `mixed line ends → ${line}`,
      parts: [crlf.replace("\r\nConnection", "\nConnection")],
      parser: true,
    });
  }
  return probes;
}

function framingProbes(): Probe[] {
  const cases: [string, string[], string, Partial<Probe>?][] = [
    [
      "Content-Length and Transfer-Encoding",
      ["Content-Length: 4", "Transfer-Encoding: chunked"],
      `5${CRLF}hello${CRLF}0${CRLF}${CRLF}`,
    ],
    [
      "Transfer-Encoding and Content-Length",
      ["Transfer-Encoding: chunked", "Content-Length: 30"],
      `5${CRLF}hello${CRLF}0${CRLF}${CRLF}`,
    ],
    ["two different Content-Lengths", ["Content-Length: 5", "Content-Length: 3"], "hello"],
    ["Content-Length list", ["Content-Length: 5, 3"], "hello"],
    ["negative Content-Length", ["Content-Length: -1"], "hello"],
    ["hex Content-Length", ["Content-Length: 0x5"], "hello"],
    ["Content-Length with a sign", ["Content-Length: +5"], "hello"],
    ["huge Content-Length", ["Content-Length: 99999999999999999999999"], "hello"],
    ["Content-Length over the route limit", [`Content-Length: ${2 * 1024 * 1024}`], "x"],
    ["Transfer-Encoding gzip", ["Transfer-Encoding: gzip"], "hello"],
    ["Transfer-Encoding identity", ["Transfer-Encoding: identity"], "hello"],
    [
      "Transfer-Encoding chunked, identity",
      ["Transfer-Encoding: chunked, identity"],
      `5${CRLF}hello${CRLF}0${CRLF}${CRLF}`,
    ],
    [
      "Transfer-Encoding twice",
      ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
      `5${CRLF}hello${CRLF}0${CRLF}${CRLF}`,
    ],
    ["Transfer-Encoding xchunked", ["Transfer-Encoding: xchunked"], `5${CRLF}hello${CRLF}0${CRLF}${CRLF}`],
    [
      "Transfer-Encoding with a space before the colon",
      ["Transfer-Encoding : chunked"],
      `5${CRLF}hello${CRLF}0${CRLF}${CRLF}`,
    ],
    ["chunk size not hex", ["Transfer-Encoding: chunked"], `zz${CRLF}hello${CRLF}0${CRLF}${CRLF}`],
    ["chunk size overflow", ["Transfer-Encoding: chunked"], `fffffffffffffffffff${CRLF}hello${CRLF}0${CRLF}${CRLF}`],
    ["chunk size negative", ["Transfer-Encoding: chunked"], `-5${CRLF}hello${CRLF}0${CRLF}${CRLF}`],
    ["chunk longer than its size", ["Transfer-Encoding: chunked"], `2${CRLF}hello${CRLF}0${CRLF}${CRLF}`],
    ["chunks with bare LF", ["Transfer-Encoding: chunked"], `5\nhello\n0\n\n`],
    [
      "chunked body over the route limit",
      ["Transfer-Encoding: chunked"],
      `${Array.from({ length: 20 }, () => `10000${CRLF}${"a".repeat(0x10000)}${CRLF}`).join("")}0${CRLF}${CRLF}`,
    ],
    ["truncated body, client done", ["Content-Length: 100"], '{"id": 1,', { end: true }],
    ["truncated chunked body, client done", ["Transfer-Encoding: chunked"], `40${CRLF}{"id": 1`, { end: true }],
    ["truncated body, client silent", ["Content-Length: 100"], '{"id": 1,', { timeoutMs: 10_000 }],
    [
      "truncated chunked body, client silent",
      ["Transfer-Encoding: chunked"],
      `40${CRLF}{"id": 1`,
      { timeoutMs: 10_000 },
    ],
    [
      "smuggled request after Content-Length: 0",
      ["Content-Length: 0"],
      request("GET /metrics HTTP/1.1", [host, close]),
    ],
    ["Expect: 100-continue with a bad body", ["Expect: 100-continue", "Content-Length: 3"], "{x}"],
    ["body on a GET", ["Content-Length: 5"], "hello"],
  ];
  // A second request hidden in the first one's body: if an upstream ever receives it as a
  // request of its own, its X-Request-Id shows in that upstream's access log.
  const hidden = (id: string) => {
    const body = '{"title":"smuggled"}';
    return request(
      "POST /projects/ HTTP/1.1",
      [host, `X-Request-Id: ${id}`, "Content-Type: application/json", `Content-Length: ${body.length}`],
      body,
    );
  };
  const smuggling: [string, (hiddenId: string) => [string[], string]][] = [
    // CL.TE: Content-Length covers the hidden request; chunked framing ends before it.
    [
      "CL + TE, a request hidden after the last chunk",
      (id) => {
        const body = `0${CRLF}${CRLF}${hidden(id)}`;
        return [[`Content-Length: ${body.length}`, "Transfer-Encoding: chunked"], body];
      },
    ],
    // TE.CL: the hidden request is a chunk's data; Content-Length ends the body before it.
    [
      "TE + CL, a request hidden in a chunk",
      (id) => {
        const inner = hidden(id);
        return [
          ["Transfer-Encoding: chunked", "Content-Length: 4"],
          `${inner.length.toString(16)}${CRLF}${inner}${CRLF}0${CRLF}${CRLF}`,
        ];
      },
    ],
    [
      "two Content-Lengths, a request hidden past the first",
      (id) => {
        const inner = hidden(id);
        return [["Content-Length: 0", `Content-Length: ${inner.length}`], inner];
      },
    ],
    [
      "obs-folded Transfer-Encoding, a request hidden after the last chunk",
      (id) => {
        const body = `0${CRLF}${CRLF}${hidden(id)}`;
        return [[`Content-Length: ${body.length}`, "Transfer-Encoding:", " chunked"], body];
      },
    ],
  ];
  const probes: Probe[] = [];
  let n = 0;
  for (const path of ["/verify/", "/projects/", "/nope"]) {
    for (const [name, headers, payload, extra] of cases) {
      // A GET with a body is legal HTTP: on /projects/ it would rightly list the projects.
      if (name === "body on a GET" && path === "/projects/") continue;
      // The smuggled GET is answered too on the same connection; the first answer is what counts.
      const method = name === "body on a GET" ? "GET" : path !== "/nope" ? "POST" : "PUT";
      const requestId = `abuse-framing-${n++}`;
      probes.push({
        category: "framing",
        name: `${name} → ${method} ${path}`,
        parts: [
          request(
            `${method} ${path} HTTP/1.1`,
            [
              host,
              `X-Request-Id: ${requestId}`,
              "Content-Type: application/json",
              ...headers,
              ...(extra?.end || extra?.timeoutMs ? [] : [close]),
            ],
            payload,
          ),
        ],
        requestId,
        ...extra,
      });
    }
    for (const [name, build] of smuggling) {
      const method = path !== "/nope" ? "POST" : "PUT";
      const requestId = `abuse-framing-${n++}`;
      const hiddenId = `abuse-hidden-${n}`;
      const [headers, payload] = build(hiddenId);
      probes.push({
        category: "framing",
        name: `${name} → ${method} ${path}`,
        parts: [
          request(
            `${method} ${path} HTTP/1.1`,
            [host, `X-Request-Id: ${requestId}`, "Content-Type: application/json", ...headers],
            payload,
          ),
        ],
        requestId,
        hiddenId,
        keepOpen: true,
        // The connection stays open for whatever the hidden request would get: bound the wait.
        timeoutMs: 3_000,
      });
    }
  }
  // The control: well-framed, refused by the webapp itself (title must be a string), so it must
  // be in the webapp's access log once — proof that the upstream check below sees arrivals.
  const body = '{"title": 5}';
  probes.push({
    category: "framing",
    name: "control: a well-framed request the webapp refuses → POST /projects/",
    parts: [
      request(
        "POST /projects/ HTTP/1.1",
        [
          host,
          "X-Request-Id: abuse-framing-control",
          "Content-Type: application/json",
          `Content-Length: ${body.length}`,
          close,
        ],
        body,
      ),
    ],
    requestId: "abuse-framing-control",
    control: true,
  });
  return probes;
}

/** One access log line ("request") of a stack process: webapp and gateway write the same fields. */
interface AccessLine {
  process: string;
  request_id: string;
  method: string;
  path: string;
  status: number;
}

function accessLines(stack: TestStack, kind: "webapp" | "gateway"): AccessLine[] {
  const found: AccessLine[] = [];
  for (const [name, lines] of stack.output) {
    if (!name.startsWith(`${kind}-`)) continue;
    for (const line of lines) {
      if (!line.includes('"msg":"request"')) continue;
      try {
        found.push({ process: name, ...(JSON.parse(line) as Omit<AccessLine, "process">) });
      } catch {}
    }
  }
  return found;
}

/** Raw JSON bodies that must be refused, each for the gRPC route (/verify) and the HTTP one (/projects). */
function hostileBodies(): [string, Uint8Array | string][] {
  const deep = (n: number, open = "[", shut = "]") => open.repeat(n) + shut.repeat(n);
  const deepObject = (n: number) => `${'{"a":'.repeat(n)}1${"}".repeat(n)}`;
  const values: [string, string][] = [
    ["array nested 33 deep", deep(33)],
    ["array nested 1000 deep", deep(1000)],
    ["array nested 400k deep", deep(400_000)],
    ["object nested 10k deep", deepObject(10_000)],
    ["string of 100 k chars", JSON.stringify("x".repeat(100_000))],
    ["string of 900 k chars", JSON.stringify("y".repeat(900_000))],
    ["1e999", "1e999"],
    ["-1e999", "-1e999"],
    ["2^31", "2147483648"],
    ["-2^31-1", "-2147483649"],
    ["2^53+1", "9007199254740993"],
    ["20 digits", "99999999999999999999"],
    ["400 digits", "1".repeat(400)],
    ["a fraction", "1.5"],
    ["-0.0e-999", "-0.0e-999"],
    ["lone high surrogate", '"\\ud800"'],
    ["lone low surrogate", '"x\\udc00y"'],
    ["an object", '{"nested": true}'],
    ["a list", "[1, 2, 3]"],
    ["true", "true"],
  ];
  const bodies: [string, Uint8Array | string][] = [];
  for (const [name, value] of values) {
    bodies.push([`id = ${name}`, `{"id": ${value}, "token": "t"}`]);
    bodies.push([`token = ${name}`, `{"id": 1, "token": ${value}}`]);
    bodies.push([`title = ${name}`, `{"title": ${value}}`]);
  }
  const raw: [string, Uint8Array | string][] = [
    ["__proto__ key", '{"__proto__": {"id": 1, "token": "t", "title": "x"}}'],
    ["nested __proto__", '{"id": 1, "token": "t", "x": {"__proto__": {"admin": true}}}'],
    ["constructor.prototype", '{"constructor": {"prototype": {"id": 1, "title": "x"}}}'],
    ["prototype key", '{"prototype": {"title": "x"}, "id": 1}'],
    ["a top-level array", "[]"],
    ["a top-level string", '"text"'],
    ["a top-level number", "42"],
    ["null", "null"],
    ["unterminated object", '{"id": 1'],
    ["unterminated string", '{"id": "1'],
    ["single quotes", "{'id': 1}"],
    ["trailing comma", '{"id": 1,}'],
    ["comment", '/* c */ {"id": 1}'],
    ["NaN literal", '{"id": NaN}'],
    ["Infinity literal", '{"id": Infinity}'],
    ["undefined literal", '{"id": undefined}'],
    ["trailing garbage", '{"id": 1, "token": "t"} x'],
    ["two documents", '{"id": 1}{"id": 2}'],
    ["duplicate key, last one wrong", '{"id": 1, "token": "t", "title": "ok", "id": "x", "title": 5}'],
    ["BOM then an empty object", "\ufeff{}"],
    ["an empty body", ""],
    ["whitespace only", "   \n\t "],
    [
      "invalid UTF-8 byte 0xff",
      new Uint8Array([...enc.encode('{"id": 1, "token": "'), 0xff, ...enc.encode('", "title": "a\xff"}')]),
    ],
    [
      "overlong UTF-8 for '/'",
      new Uint8Array([...enc.encode('{"id": 1, "token": "'), 0xc0, 0xaf, ...enc.encode('"}')]),
    ],
    [
      "UTF-8 encoded surrogate (CESU)",
      new Uint8Array([...enc.encode('{"id": 1, "token": "'), 0xed, 0xa0, 0x80, ...enc.encode('"}')]),
    ],
    [
      "truncated multi-byte sequence",
      new Uint8Array([...enc.encode('{"id": 1, "token": "'), 0xe2, 0x82, ...enc.encode('"}')]),
    ],
    ["UTF-16 body", new Uint8Array([0xff, 0xfe, ...Array.from(enc.encode('{"id":1}')).flatMap((b) => [b, 0])])],
    ["NUL bytes", '{"id": 1,\u0000 "token": "t"}'],
    ["unknown field, 100 k long name", `{"${"k".repeat(100_000)}": 1}`],
    ["1000 unknown fields", `{${Array.from({ length: 1000 }, (_, i) => `"f${i}": ${i}`).join(",")}}`],
  ];
  return [...bodies, ...raw];
}

function jsonProbes(): Probe[] {
  const probes: Probe[] = [];
  for (const [name, body] of hostileBodies()) {
    const bytes = typeof body === "string" ? enc.encode(body) : body;
    for (const path of ["/verify/", "/projects/"]) {
      // /projects needs a title; every body here lacks a valid one, so both routes must refuse it.
      const head = (extra: string[]) =>
        enc.encode(request(`POST ${path} HTTP/1.1`, [host, "Content-Type: application/json", ...extra, close]));
      probes.push({
        category: "hostile JSON",
        name: `${name} → ${path}`,
        parts: [concat(head([`Content-Length: ${bytes.length}`]), bytes)],
      });
      if (bytes.length > 0 && bytes.length < 200_000) {
        const chunked = concat(
          enc.encode(`${bytes.length.toString(16)}${CRLF}`),
          bytes,
          enc.encode(`${CRLF}0${CRLF}${CRLF}`),
        );
        probes.push({
          category: "hostile JSON",
          name: `${name} (chunked) → ${path}`,
          parts: [concat(head(["Transfer-Encoding: chunked"]), chunked)],
        });
      }
    }
  }
  // The wrong media type on the HTTP route; valid JSON but not declared as such.
  probes.push({
    category: "hostile JSON",
    name: "text/plain → /projects/",
    parts: [
      request(
        "POST /projects/ HTTP/1.1",
        [host, "Content-Type: text/plain", "Content-Length: 15", close],
        '{"title": "x"}\n',
      ),
    ],
  });
  return probes;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

function pathProbes(): Probe[] {
  const paths = [
    "/projects/../admin",
    "/projects/../../etc/passwd",
    "/projects/%2e%2e/%2e%2e/etc/passwd",
    "/projects/%2E%2E/metrics",
    "/%2e%2e/",
    "/..",
    "/projects/..%2fadmin",
    "/projects/..%2Fadmin",
    "/projects/%2fadmin",
    "/projects/..%5cadmin",
    "/projects\\..\\admin",
    "/projects/%00",
    "/projects%00/",
    "/projects/%",
    "/projects/%zz",
    "/projects/%c0%ae%c0%ae/admin",
    "/projects/%ff",
    "/projects/1/../../../metrics",
    "/projects/#/../../admin",
    "/projects#x",
    "//admin",
    "///etc/passwd",
    "/./admin",
    "/admin",
    "/metrics",
    "/config",
    "/upstreams",
    "/dashboard",
    "/PROJECTS/",
    "/projects;/../admin",
    "/projectsX",
    "/verify/../admin",
    "/verify/extra",
    "/projects/%252e%252e/admin",
    "/projects/1%2F..%2F..%2Fadmin",
    `/projects/${"a".repeat(5000)}`,
    `/${"a/".repeat(3000)}`,
    `/projects/${"%2e".repeat(3000)}`,
    `/projects/${"b".repeat(20_000)}`,
  ];
  const probes: Probe[] = [];
  for (const path of paths) {
    for (const method of ["GET", "DELETE", "PUT", "PATCH"]) {
      probes.push({
        category: "hostile path",
        name: `${method} ${path.slice(0, 50)}`,
        parts: [request(`${method} ${path} HTTP/1.1`, [host, close])],
      });
    }
  }
  // Without a Host (HTTP/1.0) Bun hands over the path alone; it must still be matched as sent.
  probes.push({
    category: "hostile path",
    name: "HTTP/1.0 GET /nope/projects/ without Host",
    parts: ["GET /nope/projects/ HTTP/1.0\r\n\r\n"],
  });
  probes.push({
    category: "hostile path",
    name: "GET /nope/projects/ with Host: x/y",
    parts: [request("GET /nope/projects/ HTTP/1.1", ["Host: x/y", close])],
  });
  return probes;
}

function methodProbes(): Probe[] {
  const methods = [
    "TRACE",
    "CONNECT",
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "SEARCH",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "M-SEARCH",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PURGE",
    "LINK",
    "UNLINK",
    "QUERY",
    "SOURCE",
    "ACL",
    "BIND",
    "REBIND",
    "UNBIND",
    "MKCALENDAR",
    "FOO",
    "get",
    "Get",
  ];
  const probes: Probe[] = [];
  for (const method of methods) {
    for (const target of ["/projects/", "/verify/", "/healthz", "/nope"]) {
      const line = method === "CONNECT" ? "CONNECT portico.test:443 HTTP/1.1" : `${method} ${target} HTTP/1.1`;
      probes.push({ category: "method", name: `${method} ${target}`, parts: [request(line, [host, close])] });
    }
  }
  // Known methods a route does not allow.
  for (const [method, target] of [
    ["DELETE", "/projects/"],
    ["PUT", "/projects/1"],
    ["GET", "/verify/"],
    ["PATCH", "/verify/"],
    ["OPTIONS", "/verify/"],
  ]) {
    probes.push({
      category: "method",
      name: `${method} ${target}`,
      parts: [request(`${method} ${target} HTTP/1.1`, [host, close, "Content-Length: 0"])],
    });
  }
  return probes;
}

/** Slow clients: each must be cut by the server, not left holding a connection. */
function slowProbes(): Probe[] {
  const trickle = (text: string) => text.split("");
  const probes: Probe[] = [];
  for (let i = 0; i < 8; i++) {
    probes.push({
      category: "slow client",
      name: `slowloris headers #${i}`,
      parts: trickle(`GET /projects/ HTTP/1.1\r\nHost: portico.test\r\nX-Slow: ${"s".repeat(200)}`),
      gapMs: 250,
      timeoutMs: 20_000,
    });
  }
  for (let i = 0; i < 4; i++) {
    probes.push({
      category: "slow client",
      name: `slow body #${i}`,
      parts: [
        request("POST /verify/ HTTP/1.1", [host, "Content-Type: application/json", "Content-Length: 300"]),
        ...trickle(" ".repeat(200)),
      ],
      gapMs: 200,
      timeoutMs: 20_000,
    });
  }
  probes.push({ category: "slow client", name: "connects and sends nothing", parts: [], timeoutMs: 20_000 });
  probes.push({
    category: "slow client",
    name: "half a request line, then silence",
    parts: ["GET /proj"],
    timeoutMs: 20_000,
  });
  probes.push({
    category: "slow client",
    name: "headers complete, body never sent",
    parts: [request("POST /projects/ HTTP/1.1", [host, "Content-Type: application/json", "Content-Length: 50"])],
    timeoutMs: 20_000,
  });
  return probes;
}

// ---- the suite ----------------------------------------------------------------------------------

function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

async function runAll(port: number, probes: Probe[], concurrency: number, transport: Transport): Promise<Outcome[]> {
  const outcomes: Outcome[] = new Array(probes.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < probes.length) {
        const i = next++;
        outcomes[i] = await send(port, probes[i]!, transport);
      }
    }),
  );
  return outcomes;
}

function label(outcome: Outcome): string {
  return outcome.kind === "status" ? String(outcome.status) : outcome.kind;
}

describe.each([
  ["in plain HTTP", false],
  ["over TLS (the HTTPS listener; mutual TLS behind it)", true],
] as const)("the abuse suite against the local stack, %s", (_mode, overTls) => {
  let stack: TestStack;
  let port: number;
  let transport: Transport = { tls: false };
  /** Where the well-behaved requests go: the port under test. */
  let base: string;
  let trust: { tls?: { ca: string } } = {};

  beforeAll(async () => {
    // Made here, not when the describe is collected: the other mode's afterAll (stopAll()) would
    // remove them before this one's tests run.
    const tlsDir = overTls ? testTempDir("abuse-tls") : undefined;
    const dir = testTempDir("abuse");
    // The shipped routes, with a short idle timeout so that slow clients are cut quickly here.
    const routesFile = join(dir, "routes.yaml");
    writeFileSync(
      routesFile,
      `${readFileSync(join(REPO_ROOT, "gateway/routes.yaml"), "utf8")}\nlimits:\n  idleTimeoutSec: ${IDLE_TIMEOUT_SEC}\n`,
    );
    // Access logs (info) are how the framing probes are checked against what reached the webapps.
    stack = await startTestStack({
      routesFile,
      env: { LOG_LEVEL: "info" },
      ...(tlsDir ? { tls: { dir: tlsDir, httpsPort: await freePort() } } : {}),
    });
    if (stack.opts.tls) {
      const ca = readFileSync(join(stack.opts.tls.dir, "ca.crt"), "utf8");
      port = stack.opts.tls.httpsPort;
      transport = { tls: true, ca };
      base = stack.gatewayHttpsUrl!;
      trust = { tls: { ca } };
    } else {
      port = stack.opts.gatewayPort;
      base = stack.gatewayUrl;
    }
  }, 60_000);

  afterAll(async () => {
    await stack?.stop();
    await stopAll();
  });

  test("≥ 500 hostile requests: every answer a 4xx or a closed connection, none hangs; all processes stay healthy", async () => {
    const gateways = stack.processes.filter((p) => p.kind === "gateway");
    // Warm up (JIT, connection pools) so the memory baseline is the serving state, not start-up.
    for (let i = 0; i < 60; i++) {
      await fetch(`${base}/projects/?limit=1`, { headers: { connection: "close" }, ...trust });
      await fetch(`${base}/verify/`, {
        ...trust,
        method: "POST",
        headers: { "content-type": "application/json", connection: "close" },
        body: '{"id": 1, "token": "t"}',
      });
    }
    const rssBefore = gateways.map((p) => rssBytes(p.proc.pid));

    const fast = [
      ...requestLineProbes(),
      ...headerProbes(),
      ...framingProbes(),
      ...jsonProbes(),
      ...pathProbes(),
      ...methodProbes(),
    ];
    const slow = slowProbes();
    const started = performance.now();
    // Slow clients run alongside the rest: the gateway must keep serving while they hang on.
    const cutAfter = new Map<string, number[]>();
    const slowRun = Promise.all(
      slow.map(async (p) => {
        const t0 = performance.now();
        const outcome = await send(port, p, transport);
        const kind = p.name.replace(/ #\d+$/, "");
        cutAfter.set(kind, [...(cutAfter.get(kind) ?? []), Math.round((performance.now() - t0) / 100) / 10]);
        return outcome;
      }),
    );
    const fastOutcomes = await runAll(port, fast, 16, transport);
    const duringSlow = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(2000), ...trust });
    const slowOutcomes = await slowRun;
    const seconds = (performance.now() - started) / 1000;

    const probes = [...fast, ...slow];
    const outcomes = [...fastOutcomes, ...slowOutcomes];
    const counts = new Map<string, number>();
    const byCategory = new Map<string, Map<string, number>>();
    for (const [i, outcome] of outcomes.entries()) {
      const key = label(outcome) === "505" ? "505 (Bun's parser)" : label(outcome);
      counts.set(key, (counts.get(key) ?? 0) + 1);
      const cat = byCategory.get(probes[i]!.category) ?? new Map<string, number>();
      cat.set(key, (cat.get(key) ?? 0) + 1);
      byCategory.set(probes[i]!.category, cat);
    }
    const sorted = [...counts].sort(([a], [b]) => a.localeCompare(b));
    console.log(`\nabuse suite, ${_mode}: ${probes.length} hostile requests in ${seconds.toFixed(1)} s`);
    console.log(`| outcome | count |\n|---|---|\n${sorted.map(([k, n]) => `| ${k} | ${n} |`).join("\n")}`);
    console.log("by category:", Object.fromEntries([...byCategory].map(([c, m]) => [c, Object.fromEntries(m)])));
    console.log("slow clients cut after (s):", Object.fromEntries(cutAfter));

    const failures = outcomes
      .map((outcome, i) => ({ probe: probes[i]!, outcome }))
      .filter(({ probe, outcome }) => {
        if (outcome.kind === "closed") return false;
        if (outcome.kind === "timeout") return true;
        if (outcome.status >= 400 && outcome.status < 500) return false;
        return !(outcome.status === 505 && probe.parser && !outcome.fromGateway);
      })
      .map(({ probe, outcome }) => `${probe.category}: ${probe.name} → ${label(outcome)}`);
    expect(probes.length).toBeGreaterThanOrEqual(500);
    expect(failures).toEqual([]);

    // The first status is not the whole story for framing: what reached the upstream decides
    // whether a request was smuggled. Each framing probe reached the webapps at most once; a
    // request hidden in a probe never did; every request a webapp got is one a gateway framed and
    // logged itself (so gateway and webapp agree on where each request ends).
    await Bun.sleep(500);
    const webappLines = accessLines(stack, "webapp").filter((l) => l.request_id?.startsWith("abuse-"));
    const gatewayIds = new Set(accessLines(stack, "gateway").map((l) => l.request_id));
    const framing = probes.filter((p) => p.requestId);
    const reached = (id: string | undefined) => webappLines.filter((l) => l.request_id === id);
    const upstreamFailures = framing.flatMap((p) => {
      const problems: string[] = [];
      const outer = reached(p.requestId);
      if (outer.length > 1) problems.push(`reached the webapps ${outer.length} times`);
      if (p.control && outer.length !== 1)
        problems.push(`the control reached the webapps ${outer.length} times, not once`);
      const inner = reached(p.hiddenId);
      if (inner.length > 0)
        problems.push(
          `its hidden request reached ${inner.map((l) => `${l.process} (${l.method} ${l.path} → ${l.status})`).join(", ")}`,
        );
      return problems.map((problem) => `${p.name}: ${problem}`);
    });
    const unframed = webappLines
      .filter((l) => !gatewayIds.has(l.request_id))
      .map((l) => `${l.request_id} at ${l.process}`);
    console.log(
      `framing probes: ${framing.length}, of which ${framing.filter((p) => reached(p.requestId).length > 0).length} reached a webapp ` +
        `(each once at most), ${framing.filter((p) => p.hiddenId).length} carried a hidden request, ${webappLines.filter((l) => l.request_id.startsWith("abuse-hidden-")).length} of those reached a webapp`,
    );
    expect(upstreamFailures).toEqual([]);
    expect(unframed).toEqual([]);
    expect(duringSlow.status).toBe(200);
    // No slow client was left to hang on: each was cut well before its bound.
    expect(slowOutcomes.every((o) => o.kind !== "timeout")).toBe(true);

    // Every process is alive and ready.
    for (const p of stack.processes) {
      expect(p.proc.exitCode).toBeNull();
      expect((await fetch(p.readyUrl)).status).toBe(200);
    }
    // The seed requests still work.
    const seed = await fetch(`${base}/verify/`, {
      ...trust,
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"id": 121, "token": "a$$"}',
    });
    expect(await seed.json()).toEqual({ message: "Verified: 121" });

    // Memory is back within bounds: the hostile bodies (up to 2 MiB each) were not kept.
    let rssAfter: number[] = [];
    await waitFor(
      "gateway memory to settle",
      () => {
        rssAfter = gateways.map((p) => rssBytes(p.proc.pid));
        return rssAfter.every((after, i) => after - rssBefore[i]! < 96 * 1024 * 1024);
      },
      { timeoutMs: 10_000, intervalMs: 250 },
    );
    console.log(
      "gateway RSS before → after (MiB):",
      gateways.map(
        (p, i) => `${p.name} ${(rssBefore[i]! / 2 ** 20).toFixed(0)} → ${(rssAfter[i]! / 2 ** 20).toFixed(0)}`,
      ),
    );
    expect(rssAfter.every((rss) => rss < 512 * 1024 * 1024)).toBe(true);
  }, 90_000);
});

/**
 * A google.rpc.Status (code 3) with two details: a VerifyReply, whose type the route's .proto
 * defines, and a google.rpc.BadRequest, which it does not. Written with a schema of the test's own.
 */
const RICH_STATUS = (() => {
  const root = protobuf.parse(
    `syntax = "proto3";
    message Any { string type_url = 1; bytes value = 2; }
    message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
    message Reply { string message = 1; }`,
    { keepCase: true },
  ).root;
  const Status = root.lookupType("Status");
  const Reply = root.lookupType("Reply");
  return Buffer.from(
    Status.encode({
      code: 3,
      message: "bad id",
      details: [
        {
          type_url: "type.googleapis.com/userverify.VerifyReply",
          value: Reply.encode({ message: "id must be > 0" }).finish(),
        },
        { type_url: "type.googleapis.com/google.rpc.BadRequest", value: Buffer.from([0x0a, 0x02, 0x0a, 0x00]) },
      ],
    }).finish(),
  );
})();

describe("limits that need a misbehaving upstream", () => {
  let gw: string;
  let stub: ReturnType<typeof Bun.serve>;
  let grpcStub: RawServer | undefined;
  let echoStub: RawServer | undefined;
  const MAX_RESPONSE = 1024 * 1024;
  const verify = resolveMethod(parseProtos(["proto/userverify.proto"]), "userverify.UserVerify/VerifyUser");

  beforeAll(async () => {
    // A gRPC server whose every reply is a message past the limit (declared in its length prefix).
    const tooLarge = frameMessage(Buffer.alloc(MAX_RESPONSE + 16, 0x61));
    grpcStub = await rawServer((stream) =>
      answer(stream, tooLarge, { "grpc-status": "0" }, { "x-served-by": "grpc-stub" }),
    );
    // One that answers VerifyReply { message } with the trace metadata it received.
    echoStub = await rawServer((stream, headers) => {
      stream.resume();
      stream.on("end", () => {
        if (headers["x-request-id"] === "unauthenticated")
          return answer(stream, null, { "grpc-status": "16", "grpc-message": "no token" });
        if (headers["x-request-id"] === "rich-details")
          return answer(stream, null, {
            "grpc-status": "3",
            "grpc-message": "bad id",
            "grpc-status-details-bin": RICH_STATUS.toString("base64"),
          });
        const message = `traceparent=${headers.traceparent ?? ""} tracestate=${headers.tracestate ?? ""}`;
        answer(stream, frameMessage(verify.responseType.encode({ message }).finish()), { "grpc-status": "0" });
      });
    });
    stub = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(req) {
        const path = new URL(req.url).pathname;
        if (path.startsWith("/slow")) {
          await Bun.sleep(5000);
          return new Response("finally");
        }
        if (path === "/stub/big-declared") return new Response(new Uint8Array(2 * MAX_RESPONSE));
        if (path === "/stub/big-streamed" || path === "/stub/small-streamed") {
          const chunks = path === "/stub/big-streamed" ? 32 : 4;
          let sent = 0;
          return new Response(
            new ReadableStream({
              pull(controller) {
                if (sent++ >= chunks) return controller.close();
                controller.enqueue(new Uint8Array(64 * 1024).fill(0x61));
              },
            }),
          );
        }
        return Response.json({
          host: req.headers.get("host"),
          forwarded: Object.fromEntries(
            [...req.headers].filter(
              ([k]) => k.startsWith("x-forwarded") || k === "via" || k === "x-real-ip" || k === "forwarded",
            ),
          ),
        });
      },
    });
    const dir = testTempDir("limits");
    const routes = join(dir, "routes.yaml");
    writeFileSync(
      routes,
      `limits: { idleTimeoutSec: ${IDLE_TIMEOUT_SEC}, maxResponseBytes: ${MAX_RESPONSE} }
upstreams:
  stub: { protocol: http, endpoints: "127.0.0.1:${stub.port}", healthCheck: { enabled: false }, outlierDetection: { consecutiveFailures: 1000 } }
  grpcstub: { protocol: grpc, endpoints: "${grpcStub.address}", proto: ${join(REPO_ROOT, "proto/userverify.proto")}, healthCheck: { enabled: false } }
  grpcecho: { protocol: grpc, endpoints: "${echoStub.address}", proto: ${join(REPO_ROOT, "proto/userverify.proto")}, healthCheck: { enabled: false } }
routes:
  - { name: slow, path: /slow, match: exact, upstream: stub, timeoutMs: 8000, retry: { attempts: 1 } }
  - { name: slow-timeout, path: /slow-timeout, match: exact, upstream: stub, timeoutMs: 3000, retry: { attempts: 1 } }
  - { name: stub, path: /stub, upstream: stub }
  - { name: verify-big, path: /verify-big, match: exact, methods: [POST], upstream: grpcstub, grpc: { method: userverify.UserVerify/VerifyUser } }
  - { name: verify-echo, path: /verify-echo, match: exact, methods: [POST], upstream: grpcecho, grpc: { method: userverify.UserVerify/VerifyUser } }
`,
    );
    const [port, adminPort] = [await freePort(), await freePort()];
    const gateway = spawnService(
      "gateway",
      { PORT: String(port), ADMIN_PORT: String(adminPort), HOST: "127.0.0.1", ROUTES_FILE: routes },
      "gateway-limits",
    );
    gw = `http://127.0.0.1:${port}`;
    await waitFor("the gateway to be ready", async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).ok, {
      proc: gateway,
    });
  }, 30_000);

  afterAll(async () => {
    stub?.stop(true);
    grpcStub?.close();
    echoStub?.close();
    await stopAll();
  });

  test("a route slower than the idle timeout still gets its answer: 200 within its timeout, 504 past it", async () => {
    const timed = async (path: string) => {
      const started = performance.now();
      const res = await fetch(`${gw}${path}`, { signal: AbortSignal.timeout(15_000) });
      return { status: res.status, text: await res.text(), ms: performance.now() - started };
    };
    const [slow, late] = await Promise.all([timed("/slow"), timed("/slow-timeout")]);
    expect([slow.status, slow.text]).toEqual([200, "finally"]);
    expect(slow.ms).toBeGreaterThan(IDLE_TIMEOUT_SEC * 1000 + 2000);
    expect(late.status).toBe(504);
    expect(late.ms).toBeGreaterThanOrEqual(2900);
  }, 20_000);

  test("an upstream response over limits.maxResponseBytes: 502 when declared, cut at the limit when streamed", async () => {
    const declared = await fetch(`${gw}/stub/big-declared`);
    expect(declared.status).toBe(502);
    expect(((await declared.json()) as { title: string }).title).toBe("Upstream response too large");

    const small = await fetch(`${gw}/stub/small-streamed`);
    expect((await small.arrayBuffer()).byteLength).toBe(4 * 64 * 1024);

    const streamed = await fetch(`${gw}/stub/big-streamed`);
    expect(streamed.status).toBe(200);
    let received = 0;
    let cut = false;
    try {
      const reader = streamed.body!.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        received += value.byteLength;
      }
    } catch {
      cut = true;
    }
    expect(received).toBeLessThanOrEqual(MAX_RESPONSE);
    // Cut means cut: the client must see the body fail. A stream that simply ends early would be
    // a truncated 200 the client takes for the whole answer.
    expect(cut).toBe(true);
    // The gateway keeps serving after cutting a response.
    expect((await fetch(`${gw}/stub/small-streamed`)).status).toBe(200);
  });

  test("a gRPC reply over limits.maxResponseBytes: 502 as on the HTTP route, not a 429 telling the client to slow down", async () => {
    const res = await fetch(`${gw}/verify-big`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id: 121, token: "a$$" }),
    });
    const problem = (await res.json()) as { title: string; detail: string; upstream: string };
    expect({ status: res.status, title: problem.title, upstream: problem.upstream }).toEqual({
      status: 502,
      title: "Upstream response too large",
      upstream: "grpcstub",
    });
    expect(problem.detail).toContain(`${MAX_RESPONSE + 16}-byte reply message; the limit is ${MAX_RESPONSE}`);
    expect(res.headers.get("x-served-by")).toBe("grpc-stub");
  });

  test("gRPC route, tracing off: the caller's trace id and tracestate reach the upstream's metadata", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const res = await fetch(`${gw}/verify-echo`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
        tracestate: "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
      },
      body: JSON.stringify({ id: 121, token: "a$$" }),
    });
    expect(res.status).toBe(200);
    const { message } = (await res.json()) as { message: string };
    // The gateway's own span id as the parent, the caller's trace and sampled flag.
    expect(message).toMatch(new RegExp(`^traceparent=00-${traceId}-[0-9a-f]{16}-01 `));
    expect(message).toEndWith(" tracestate=congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
  });

  test("a status with details (grpc-status-details-bin) has them in the body, as grpc-gateway writes them", async () => {
    const res = await fetch(`${gw}/verify-echo`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": "rich-details" },
      body: JSON.stringify({ id: 121, token: "a$$" }),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({
      code: 3,
      message: "bad id",
      details: [
        // A type the route's .proto defines: its fields.
        { "@type": "type.googleapis.com/userverify.VerifyReply", message: "id must be > 0" },
        // One it does not: its bytes (a form of the gateway's own; protojson refuses such an Any).
        { "@type": "type.googleapis.com/google.rpc.BadRequest", value: "CgIKAA==" },
      ],
    });
  });

  test("UNAUTHENTICATED from the service is a 401 that names a challenge (RFC 9110 §15.5.2)", async () => {
    const res = await fetch(`${gw}/verify-echo`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-request-id": "unauthenticated" },
      body: JSON.stringify({ id: 121, token: "a$$" }),
    });
    expect(res.status).toBe(401);
    // The route has no auth of its own: a Bearer challenge in the default realm.
    expect(res.headers.get("www-authenticate")).toBe('Bearer realm="portico"');
    expect(await res.json()).toMatchObject({ code: 16, message: "no token", request_id: "unauthenticated" });
  });

  test("a tracestate without a valid traceparent is discarded (W3C Trace Context §4.3), not passed on with a new trace", async () => {
    for (const traceparent of [undefined, "garbage", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"]) {
      const res = await fetch(`${gw}/verify-echo`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          ...(traceparent ? { traceparent } : {}),
          tracestate: "congo=t61rcWkgMzE",
        },
        body: JSON.stringify({ id: 121, token: "a$$" }),
      });
      expect(res.status).toBe(200);
      const { message } = (await res.json()) as { message: string };
      expect({ traceparent, message }).toEqual({
        traceparent,
        message: expect.stringMatching(/^traceparent=00-[0-9a-f]{32}-[0-9a-f]{16}-00 tracestate=$/),
      });
    }
  });

  test("Host, X-Forwarded-*, X-Real-IP and Forwarded from an untrusted client are replaced or dropped, never passed on", async () => {
    const res = await fetch(`${gw}/stub/echo`, {
      headers: {
        host: "public.example",
        "x-real-ip": "6.6.6.6",
        forwarded: "for=6.6.6.6;proto=https",
        "x-forwarded-for": "6.6.6.6",
        "x-forwarded-host": "evil.example",
        "x-forwarded-proto": "https",
      },
    });
    const seen = (await res.json()) as { host: string; forwarded: Record<string, string> };
    expect(seen.host).toBe(`127.0.0.1:${stub.port}`);
    expect(seen.forwarded["x-forwarded-for"]).toBe("127.0.0.1");
    expect(seen.forwarded["x-forwarded-host"]).toBe("public.example");
    expect(seen.forwarded["x-forwarded-proto"]).toBe("http");
    expect(seen.forwarded["x-real-ip"]).toBe("127.0.0.1");
    expect(seen.forwarded.forwarded).toBeUndefined();
  });
});
