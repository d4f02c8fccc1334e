/**
 * Loaded into a proxy by bench/request-path.ts (`bun --preload`), never by the gateway itself.
 * Every upstream try is answered at once by a stub (`H1Pool.send`: a 201 with a small JSON body,
 * made afresh each time as the real client makes it), and the listener's `fetch` handler on
 * REQUEST_PATH_PORT is kept when `Bun.serve` starts it. On SIGUSR2 the handler is called directly —
 * REQUEST_PATH_REQUESTS requests per round, 64 in flight, a `new Request` each — for one warm-up round
 * and REQUEST_PATH_ROUNDS measured ones; the process's CPU per request of each round is written as
 * JSON to REQUEST_PATH_OUT. No socket is involved: `server.requestIP()` finds no peer for these
 * requests, and nothing is written back.
 */
import { renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Server } from "bun";
import type { HttpOutcome } from "../gateway/src/proxy/http.ts";

const out = process.env.REQUEST_PATH_OUT;
const port = Number(process.env.REQUEST_PATH_PORT);
if (!out || !port) throw new Error("request-path-hook: REQUEST_PATH_OUT and REQUEST_PATH_PORT must be set");
function wholeNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  const n = raw === undefined || raw === "" ? fallback : Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`request-path-hook: ${name}=${raw}: expected a whole number ≥ 1`);
  return n;
}
const requests = wholeNumber("REQUEST_PATH_REQUESTS", 50_000);
const rounds = wholeNumber("REQUEST_PATH_ROUNDS", 4);
const IN_FLIGHT = 64;
const ANSWER = new TextEncoder().encode(JSON.stringify({ id: 1, title: "An awesome project" }));

// The client of the tree being measured (the proxy runs from its root: BENCH_SERVICE_ROOT, or this checkout).
const { H1Pool } = (await import(
  join(process.cwd(), "gateway/src/proxy/h1-client.ts")
)) as typeof import("../gateway/src/proxy/h1-client.ts");
H1Pool.prototype.send = (): Promise<HttpOutcome> =>
  Promise.resolve({
    kind: "response",
    response: new Response(ANSWER, {
      status: 201,
      statusText: "Created",
      headers: [
        ["Content-Type", "application/json"],
        ["Content-Length", String(ANSWER.byteLength)],
      ],
    }),
  });

type Handler = (req: Request, server: Server<unknown>) => Response | Promise<Response>;
let kept: { handler: Handler; server: Server<unknown> } | undefined;
const serve = Bun.serve;
Bun.serve = ((options: Parameters<typeof Bun.serve>[0]) => {
  const server = serve(options);
  const fetchHandler = (options as { fetch?: Handler }).fetch;
  if (!kept && fetchHandler && Number((options as { port?: unknown }).port) === port)
    kept = { handler: fetchHandler, server };
  return server;
}) as typeof Bun.serve;

const body = process.env.REQUEST_PATH_BODY ?? "{}";
const bodyLength = Buffer.byteLength(body);
const request = () =>
  new Request(`http://127.0.0.1:${port}/projects`, {
    method: "POST",
    // With its Content-Length, as a load generator's request arrives (a body without one is read as a stream).
    headers: { "content-type": "application/json", "content-length": String(bodyLength), "user-agent": "request-path" },
    body,
  });

async function round(handler: Handler, server: Server<unknown>): Promise<number> {
  const before = process.cpuUsage();
  for (let sent = 0; sent < requests; sent += IN_FLIGHT) {
    const batch: (Response | Promise<Response>)[] = [];
    for (let i = 0; i < IN_FLIGHT; i++) batch.push(handler(request(), server));
    for (const res of await Promise.all(batch))
      if (res.status !== 201) throw new Error(`request-path-hook: the handler answered ${res.status}`);
  }
  const used = process.cpuUsage(before);
  return (used.user + used.system) / requests;
}

process.on("SIGUSR2", async () => {
  try {
    if (!kept) throw new Error(`no Bun.serve listener on port ${port} was started`);
    const { handler, server } = kept;
    await round(handler, server);
    const usPerRequest: number[] = [];
    for (let r = 0; r < rounds; r++) usPerRequest.push(await round(handler, server));
    writeFileSync(`${out}.tmp`, JSON.stringify({ usPerRequest }));
  } catch (err) {
    writeFileSync(`${out}.tmp`, JSON.stringify({ error: String(err) }));
  }
  renameSync(`${out}.tmp`, out);
});
