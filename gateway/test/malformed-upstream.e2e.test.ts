/**
 * An upstream that answers with broken HTTP (test/spy/upstream-spy.ts scripts the bytes): each
 * case must end, for the client, in one of two clean ways, within the route timeout:
 *   - "502": nothing of the upstream's answer was sent yet, so the gateway answers a 502
 *     problem+json of its own (a 504 when the upstream never completes a head);
 *   - "cut": the status line and headers were already sent (the body streams through), so the
 *     gateway closes the connection before the body's framing completes — a client can tell the
 *     body is incomplete (no terminating chunk, fewer bytes than Content-Length), never a clean
 *     short 200.
 * Not clean: an empty reply (the connection closed with no byte although nothing had been sent,
 * so a 502 was still possible), a complete 200 made out of broken bytes, or a hang.
 * And after each: the gateway process is alive, the next request through it succeeds, and it does
 * not travel on the connection that carried the broken answer (its framing cannot be trusted).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { stopAll } from "../../scripts/stack/testing/processes.ts";
import { removeTempFiles } from "./resilience-harness.ts";
import { parseResponse, rawExchange, responseHeader } from "./spy/raw-client.ts";
import { type SpyGateway, startSpyGateway } from "./spy/spy-gateway.ts";
import { type Responder, UpstreamSpy } from "./spy/upstream-spy.ts";

const ROUTE_TIMEOUT_MS = 1_500;
const CRLF = "\r\n";
const ok = (headers: string[]) => `HTTP/1.1 200 OK${CRLF}${headers.map((h) => h + CRLF).join("")}${CRLF}`;

type Expected = "502" | "504" | "cut";

interface Case {
  name: string;
  /** What the spy does with the request. */
  respond: Responder;
  /** The clean outcomes allowed for this case ("cut" also covers a head cut before its end). */
  expect: Expected[];
  /** The answer's framing is sound (only its content is hostile): its connection may be reused. */
  framingSound?: boolean;
}

/** Writes `bytes`, then closes (FIN) unless `keepOpen`. */
const answer =
  (bytes: string, then: "close" | "reset" | "keep-open" = "close"): Responder =>
  async (_req, conn) => {
    await conn.write(bytes);
    if (then === "close") conn.end();
    if (then === "reset") conn.reset();
  };

const CASES: Case[] = [
  {
    name: "bad status line",
    respond: answer(`HTTP/1.1 abc Nope${CRLF}Content-Length: 2${CRLF}${CRLF}ok`),
    expect: ["502"],
  },
  { name: "HTTP/0.9 garbage (no status line)", respond: answer("hello, this is not HTTP\n"), expect: ["502"] },
  {
    name: "status line only, no header end",
    respond: answer(`HTTP/1.1 200 OK${CRLF}Content-Length: 2${CRLF}`),
    expect: ["502"],
  },
  {
    name: "conflicting Content-Lengths",
    respond: answer(`${ok(["Content-Length: 5", "Content-Length: 7"])}hello12`, "keep-open"),
    expect: ["502"],
  },
  {
    name: "Content-Length list with differing values",
    respond: answer(`${ok(["Content-Length: 5, 7"])}hello12`, "keep-open"),
    expect: ["502"],
  },
  {
    name: "Content-Length + Transfer-Encoding",
    respond: answer(
      `${ok(["Content-Length: 3", "Transfer-Encoding: chunked"])}5${CRLF}hello${CRLF}0${CRLF}${CRLF}`,
      "keep-open",
    ),
    expect: ["502"],
  },
  {
    name: "negative Content-Length",
    respond: answer(`${ok(["Content-Length: -1"])}hello`, "keep-open"),
    expect: ["502"],
  },
  {
    name: "non-numeric Content-Length",
    respond: answer(`${ok(["Content-Length: five"])}hello`, "keep-open"),
    expect: ["502"],
  },
  {
    name: "truncated chunked body (close after part of a chunk)",
    respond: answer(`${ok(["Transfer-Encoding: chunked"])}a${CRLF}hello`),
    expect: ["cut", "502"],
  },
  {
    name: "chunked body without its last chunk (close)",
    respond: answer(`${ok(["Transfer-Encoding: chunked"])}5${CRLF}hello${CRLF}`),
    expect: ["cut", "502"],
  },
  {
    name: "body shorter than Content-Length (close)",
    respond: answer(`${ok(["Content-Length: 100"])}only ten b`),
    expect: ["cut", "502"],
  },
  { name: "early close before any byte", respond: answer(""), expect: ["502"] },
  { name: "reset before any byte", respond: answer("", "reset"), expect: ["502"] },
  {
    name: "early close mid-body (Content-Length 64 KiB, 16 KiB sent)",
    respond: answer(`${ok(["Content-Length: 65536"])}${"x".repeat(16 * 1024)}`),
    expect: ["cut", "502"],
  },
  {
    name: "reset mid-body (chunked)",
    respond: answer(`${ok(["Transfer-Encoding: chunked"])}4000${CRLF}${"y".repeat(8 * 1024)}`, "reset"),
    expect: ["cut", "502"],
  },
  {
    name: "huge header (1 MiB value)",
    respond: answer(`${ok([`X-Huge: ${"h".repeat(1024 * 1024)}`, "Content-Length: 2"])}ok`, "keep-open"),
    // Requests past limits.maxHeaderBytes (16 KiB) get 431; a response head 64 times that should not pass either.
    expect: ["502"],
    framingSound: true,
  },
  {
    name: "invalid chunk size",
    respond: answer(`${ok(["Transfer-Encoding: chunked"])}zz${CRLF}hello${CRLF}0${CRLF}${CRLF}`, "keep-open"),
    expect: ["cut", "502"],
  },
  {
    name: "100 Continue, then nothing (connection open)",
    respond: answer(`HTTP/1.1 100 Continue${CRLF}${CRLF}`, "keep-open"),
    expect: ["504"],
  },
  {
    name: "102 Processing, then close",
    respond: answer(`HTTP/1.1 102 Processing${CRLF}${CRLF}`),
    expect: ["502"],
  },
  {
    name: "headers, then silence (body never comes)",
    respond: answer(ok(["Content-Length: 10"]), "keep-open"),
    expect: ["cut", "504"],
  },
];

interface Observed {
  outcome: Expected | "empty" | "complete" | "hung" | "other";
  status: number | undefined;
  problemJson: boolean;
  ms: number;
  detail: string;
}

function classify(raw: Buffer, closed: boolean, ms: number): Observed {
  const res = parseResponse(raw);
  const base = { status: res?.status, ms: Math.round(ms) };
  if (!res) {
    // A status line and part of the head, then the close: the head's end never came.
    const statusLine = /^HTTP\/1\.1 (\d{3})/.exec(raw.toString("latin1"));
    if (closed && statusLine)
      return {
        ...base,
        status: Number(statusLine[1]),
        outcome: "cut",
        problemJson: false,
        detail: `head cut after ${raw.length} bytes`,
      };
    const outcome = !closed ? "hung" : raw.length === 0 ? "empty" : "other";
    return { ...base, outcome, problemJson: false, detail: `${raw.length} bytes, no response head` };
  }
  const problemJson = (responseHeader(res, "content-type") ?? "").startsWith("application/problem+json");
  const detail = problemJson
    ? String((JSON.parse(res.body.toString()) as { detail?: string }).detail)
    : `${res.body.length} body bytes`;
  if (res.status === 502 || res.status === 504) {
    return { ...base, outcome: res.complete ? (String(res.status) as Expected) : "other", problemJson, detail };
  }
  if (!res.complete) return { ...base, outcome: closed ? "cut" : "hung", problemJson, detail };
  return { ...base, outcome: "complete", problemJson, detail };
}

let spy: UpstreamSpy;
let gw: SpyGateway;

beforeAll(async () => {
  spy = await UpstreamSpy.start();
  gw = await startSpyGateway("gateway-malformed", spy, { timeoutMs: ROUTE_TIMEOUT_MS });
}, 30_000);

afterAll(async () => {
  await stopAll();
  spy?.stop();
  removeTempFiles();
});

describe("malformed upstream responses", () => {
  test("each ends cleanly for the client (502/504 problem+json, or a detectable cut), within the route timeout; the gateway keeps serving", async () => {
    const rows: string[] = [];
    const failures: string[] = [];
    for (const c of CASES) {
      spy.clear();
      spy.respond = c.respond;
      const exchange = await rawExchange(gw.port, `GET /spy/case HTTP/1.1${CRLF}Host: portico.test${CRLF}${CRLF}`, {
        timeoutMs: ROUTE_TIMEOUT_MS + 2_000,
        done: (b) => parseResponse(b)?.complete === true,
      });
      const observed = classify(exchange.bytes, exchange.closed, exchange.ms);
      const caseConn = spy.connections.find((conn) => conn.framed().requests.some((r) => r.target === "/spy/case"));

      // The next request, answered well, succeeds (a fresh or a still-sound pooled connection).
      spy.clear();
      const next = await fetch(`${gw.url}/spy/next`, { signal: AbortSignal.timeout(ROUTE_TIMEOUT_MS + 2_000) }).then(
        async (r) => `${r.status} ${(await r.json()) ? "echo" : ""}`,
        (e: Error) => `failed: ${e.message}`,
      );
      const nextConn = spy.connections.find((conn) => conn.framed().requests.some((r) => r.target === "/spy/next"));
      const reused = caseConn !== undefined && caseConn === nextConn;
      const alive = gw.proc.proc.exitCode === null;
      rows.push(
        `| ${c.name} | ${observed.outcome} | ${observed.status ?? "-"} | ${observed.problemJson ? "yes" : "no"} | ${observed.ms} | ${observed.detail.slice(0, 70)} | ${next} | ${reused ? "REUSED" : "no"} |`,
      );
      const problems: string[] = [];
      if (!c.expect.includes(observed.outcome as Expected))
        problems.push(`outcome ${observed.outcome} (status ${observed.status}), expected ${c.expect.join(" or ")}`);
      if ((observed.outcome === "502" || observed.outcome === "504") && !observed.problemJson)
        problems.push("the 5xx is not problem+json");
      if (observed.ms > ROUTE_TIMEOUT_MS + 1_000) problems.push(`took ${observed.ms} ms`);
      if (next !== "200 echo") problems.push(`next request: ${next}`);
      if (reused && !c.framingSound)
        problems.push("the next request reused the connection that carried the broken answer");
      if (!alive) problems.push("the gateway exited");
      if (problems.length) failures.push(`${c.name}: ${problems.join("; ")}`);
    }
    console.log(
      `\nmalformed upstream responses (route timeout ${ROUTE_TIMEOUT_MS} ms):\n| case | outcome | status | problem+json | ms | detail | next request | upstream conn reused |\n|---|---|---|---|---|---|---|---|\n${rows.join("\n")}`,
    );
    expect(failures).toEqual([]);
  }, 60_000);
});

describe("an upstream that dies right after its head", () => {
  // Whether the client gets any byte depends on whether Bun.serve flushed the head before the
  // body failed, so one try proves little: repeated, an empty reply shows on (measured) 15–50 % of
  // tries today, and a fix shows as none in all of them.
  test("never an empty reply: a 502 (nothing sent yet) or a cut response whose status line arrived", async () => {
    const scripts: [string, string][] = [
      ["head only (Content-Length 100), then close", `${ok(["Content-Length: 100"])}`],
      ["10 of 100 bytes, then close", `${ok(["Content-Length: 100"])}only ten b`],
    ];
    const tally: Record<string, number> = {};
    for (const [name, bytes] of scripts) {
      for (let i = 0; i < 15; i++) {
        spy.clear();
        spy.respond = answer(bytes);
        const exchange = await rawExchange(gw.port, `GET /spy/dies HTTP/1.1${CRLF}Host: portico.test${CRLF}${CRLF}`, {
          timeoutMs: ROUTE_TIMEOUT_MS + 2_000,
          done: (b) => parseResponse(b)?.complete === true,
        });
        const { outcome } = classify(exchange.bytes, exchange.closed, exchange.ms);
        tally[`${name}: ${outcome}`] = (tally[`${name}: ${outcome}`] ?? 0) + 1;
      }
    }
    console.log("upstream dies right after its head, 15 tries each:", tally);
    expect(Object.keys(tally).filter((k) => !k.endsWith(": 502") && !k.endsWith(": cut"))).toEqual([]);
  }, 30_000);
});
