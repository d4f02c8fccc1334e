/**
 * A client that goes away, as the request path sees it (upstream/client-watch.ts): the transports
 * look at the client only from CLIENT_WATCH_MS into a try on, so a try that fails sooner is not
 * cancelled by them — dispatch's retry must then not be sent for a client already gone. In process:
 * a Gateway on a real listener, stub upstreams on loopback, a raw TCP client that sends a request
 * and closes at once.
 */
import { afterAll, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import type { Server } from "bun";
import pino from "pino";
import { Lifecycle } from "../../lib/lifecycle.ts";
import { parseConfig } from "../src/config/load.ts";
import { Gateway } from "../src/server.ts";
import { startUserVerifyServer } from "./grpc-upstream.ts";

const log = pino({ level: "silent" });
const servers: Server<undefined>[] = [];
const gateways: Gateway[] = [];
const stops: (() => void)[] = [];
afterAll(() => {
  for (const g of gateways) g.close();
  for (const s of servers) s.stop(true);
  for (const stop of stops) stop();
});

function gatewayOf(yaml: string): { gateway: Gateway; port: number } {
  const gateway = new Gateway(parseConfig(yaml, "routes.yaml"), {
    identity: { service: "gateway", version: "t", instance: "gw" },
    log,
    lifecycle: new Lifecycle({ drainDelayMs: 0, shutdownTimeoutMs: 1000, log }),
  });
  gateways.push(gateway);
  const listener = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: gateway.fetch });
  servers.push(listener as Server<undefined>);
  return { gateway, port: listener.port! };
}

/** An upstream that answers every request 503 after `delayMs`, counting them. */
function failing(delayMs: number) {
  const state = { requests: 0 };
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      // A warm-up request (it fills the gateway's pool) is answered at once and not counted.
      if (req.url.endsWith("/warm")) return new Response("ok");
      state.requests++;
      await req.arrayBuffer();
      await Bun.sleep(delayMs);
      return new Response("busy", { status: 503 });
    },
  });
  servers.push(server);
  return { port: server.port!, state };
}

/** Sends one request (a path: a GET of it; else the request as written) and closes the connection without waiting. */
async function sendAndLeave(port: number, request: string): Promise<void> {
  const socket = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
  socket.write(request.startsWith("/") ? `GET ${request} HTTP/1.1\r\nHost: gw.test\r\n\r\n` : request);
  socket.flush();
  await Bun.sleep(2);
  socket.end();
}

/**
 * Clients that each send `request` and leave 2 ms in, one at a time, until `wanted` of them had a
 * first try sent (on a busy machine a client may be gone before its first try: then nothing is sent
 * for it), at most `most` clients. Returns how many tries reached the upstreams for each client,
 * read once its try's 503 (15 ms) and any retry after it (15 ms more) have had time to come.
 */
async function leaveUntilTried(
  port: number,
  request: string,
  tries: () => number,
  wanted: number,
  most = wanted * 4,
): Promise<number[]> {
  const perClient: number[] = [];
  while (perClient.filter((n) => n > 0).length < wanted && perClient.length < most) {
    const before = tries();
    await sendAndLeave(port, request);
    await Bun.sleep(80);
    perClient.push(tries() - before);
  }
  return perClient;
}

/** What leaveUntilTried's clients must show: `wanted` had their first try sent, none had a retry. */
async function expectNoRetryForGoneClients(
  perClient: number[],
  tries: () => number,
  triesBefore: number,
  wanted: number,
) {
  expect(perClient.filter((n) => n > 0)).toHaveLength(wanted);
  expect(Math.max(...perClient)).toBe(1);
  // Nothing came later either.
  await Bun.sleep(200);
  expect(tries() - triesBefore).toBe(wanted);
}

test("HTTP: a retry is not sent for a client that went away during the try before it", async () => {
  const a = failing(15);
  const b = failing(15);
  const c = failing(15);
  const { gateway, port } = gatewayOf(`
upstreams:
  web: { protocol: http, endpoints: "127.0.0.1:${a.port},127.0.0.1:${b.port},127.0.0.1:${c.port}", healthCheck: { enabled: false } }
routes:
  - { name: r, path: /r, methods: [GET], upstream: web, retry: { attempts: 3 } }
`);
  await gateway.upstreams.get("web")!.ready;
  const total = () => a.state.requests + b.state.requests + c.state.requests;

  const retries = gateway.upstreams.get("web")!.retries;
  // While connected, a 503 is retried on the other endpoints: three tries, two of them retries.
  expect((await fetch(`http://127.0.0.1:${port}/r`)).status).toBe(503);
  expect(total()).toBe(3);
  expect(retries.attempted).toBe(2);

  // Gone 2 ms in: the first try's 503 (15 ms, before the transport looks at the client) is the only
  // one, and the retry not sent is not counted as sent (portico_gateway_upstream_retries_total).
  const perClient = await leaveUntilTried(port, "/r", total, 3);
  await expectNoRetryForGoneClients(perClient, total, 3, 3);
  expect(retries.attempted).toBe(2);
});

test("a retry not sent for a client already gone takes nothing from the route's retry budget", async () => {
  const a = failing(15);
  const b = failing(15);
  // Ten retries per 10 s and no share of the traffic: what ten leaving clients would have spent.
  const { gateway, port } = gatewayOf(`
upstreams:
  web:
    protocol: http
    endpoints: "127.0.0.1:${a.port},127.0.0.1:${b.port}"
    healthCheck: { enabled: false }
    # Neither breaker nor ejection takes the failing endpoints out during the test.
    circuitBreaker: { consecutiveFailures: 1000 }
    outlierDetection: { maxEjectedPercent: 0 }
routes:
  - { name: r, path: /r, match: exact, methods: [GET], upstream: web, retry: { attempts: 2, budgetPercent: 0, minRetriesPerSecond: 1 } }
  - { name: warm, path: /warm, match: exact, methods: [GET], upstream: web }
`);
  await gateway.upstreams.get("web")!.ready;
  const retries = gateway.upstreams.get("web")!.retries;
  // Connections to both endpoints first: each leaving client's try then goes out at once, well
  // within the 2 ms before it leaves, rather than after a connect it may not outlast.
  await Promise.all(Array.from({ length: 10 }, () => fetch(`http://127.0.0.1:${port}/warm`).then((r) => r.text())));
  const total = () => a.state.requests + b.state.requests;
  await expectNoRetryForGoneClients(await leaveUntilTried(port, "/r", total, 10), total, 0, 10);
  // A client that stays still gets its retry from the budget.
  expect((await fetch(`http://127.0.0.1:${port}/r`)).status).toBe(503);
  expect(a.state.requests + b.state.requests).toBe(12);
  expect(retries).toEqual({ attempted: 1, budgetExhausted: 0 });
});

test("gRPC: the same for a call answered UNAVAILABLE", async () => {
  let calls = 0;
  const { server, ports } = await startUserVerifyServer((_call, callback) => {
    calls++;
    setTimeout(() => callback({ code: grpc.status.UNAVAILABLE, details: "busy" }), 15);
  }, 3);
  stops.push(() => server.forceShutdown());
  const { gateway, port } = gatewayOf(`
upstreams:
  rpc: { protocol: grpc, endpoints: "${ports.map((p) => `127.0.0.1:${p}`).join(",")}", proto: proto/userverify.proto, healthCheck: { enabled: false } }
routes:
  - { name: v, path: /v, match: exact, methods: [POST], upstream: rpc, grpc: { method: userverify.UserVerify/VerifyUser, idempotent: true }, retry: { attempts: 3 } }
`);
  await gateway.upstreams.get("rpc")!.ready;
  const body = JSON.stringify({ id: 1, token: "t" });
  const post = (path: string) =>
    `POST ${path} HTTP/1.1\r\nHost: gw.test\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;

  const stay = await fetch(`http://127.0.0.1:${port}/v`, {
    method: "POST",
    body,
    headers: { "content-type": "application/json" },
  });
  const retries = gateway.upstreams.get("rpc")!.retries;
  expect(stay.status).toBe(503);
  expect(calls).toBe(3);
  expect(retries.attempted).toBe(2);

  const perClient = await leaveUntilTried(port, post("/v"), () => calls, 3);
  await expectNoRetryForGoneClients(perClient, () => calls, 3, 3);
  expect(retries.attempted).toBe(2);
});
