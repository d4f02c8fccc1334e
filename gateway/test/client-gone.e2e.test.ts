/**
 * A client that goes away mid-request, through a real gateway process: the upstream call it
 * started is cancelled at once — the HTTP upstream sees its connection close, the gRPC server
 * sees the call cancelled (RST_STREAM CANCEL) — instead of running on until the route's timeout.
 * The request is logged and counted as 499, the try as `cancelled`; the endpoint is not blamed
 * (its breaker stays closed though the route's breaker opens after two failures), and the next
 * request goes through. A client that leaves mid-upload never reaches the upstream at all.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type * as grpc from "@grpc/grpc-js";
import { stopAll, waitFor } from "../../scripts/stack/testing/processes.ts";
import { startUserVerifyServer } from "./grpc-upstream.ts";
import { endpointView, type Gateway, removeTempFiles, startGateway, writeRoutes } from "./resilience-harness.ts";
import { accessLog } from "./spy/spy-gateway.ts";
import { type SpyRequest, UpstreamSpy } from "./spy/upstream-spy.ts";

const ROUTE_TIMEOUT_MS = 8_000;

let spy: UpstreamSpy;
let grpcServer: grpc.Server;
let grpcPort: number;
/** Calls the gRPC server received, and whether grpc-js told it each was cancelled. */
const calls: { requestId: string; cancelled: boolean; at: number; cancelledAt?: number }[] = [];
let gw: Gateway;

beforeAll(async () => {
  spy = await UpstreamSpy.start();
  const started = await startUserVerifyServer((call, cb) => {
    const entry = { requestId: String(call.metadata.get("x-request-id")[0] ?? ""), cancelled: false, at: 0 };
    entry.at = performance.now();
    calls.push(entry);
    call.on("cancelled", () => {
      Object.assign(entry, { cancelled: true, cancelledAt: performance.now() });
    });
    // id 1 answers; any other never does (until the deadline).
    if (call.request.id === 1) cb(null, { message: "ok" });
  });
  grpcServer = started.server;
  grpcPort = started.ports[0]!;
  const breaker = "circuitBreaker: { consecutiveFailures: 2 }, outlierDetection: { consecutiveFailures: 2 }";
  const routes = writeRoutes(
    "client-gone",
    `upstreams:
  spy: { protocol: http, endpoints: "${spy.address}", healthCheck: { enabled: false }, ${breaker} }
  rpc: { protocol: grpc, endpoints: "127.0.0.1:${grpcPort}", proto: proto/userverify.proto, healthCheck: { enabled: false }, ${breaker} }
routes:
  - { name: spy, path: /spy, upstream: spy, timeoutMs: ${ROUTE_TIMEOUT_MS}, retry: { attempts: 3 } }
  - { name: verify, path: /verify, match: exact, methods: [POST], upstream: rpc, timeoutMs: ${ROUTE_TIMEOUT_MS}, grpc: { method: userverify.UserVerify/VerifyUser, idempotent: true }, retry: { attempts: 3 } }
`,
  );
  gw = await startGateway("gateway-client-gone", routes, { LOG_LEVEL: "info" });
}, 30_000);

afterAll(async () => {
  spy?.stop();
  grpcServer?.forceShutdown();
  await stopAll();
  removeTempFiles();
});

/** Sends `request` on a raw connection, waits until `arrived()` says the upstream has it, then closes the connection. */
async function sendAndLeave(request: string, arrived: () => boolean): Promise<void> {
  const port = Number(new URL(gw.url).port);
  const socket = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
  socket.write(request);
  await waitFor("the upstream to have the request", arrived, { timeoutMs: 5_000, intervalMs: 5 });
  socket.end();
}

const post = (path: string, id: string, body: string) =>
  `POST ${path} HTTP/1.1\r\nHost: gw\r\nX-Request-ID: ${id}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;

async function metric(pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  const line = text.split("\n").find((l) => pattern.test(l));
  return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
}

describe("the client goes away before the upstream answers", () => {
  test("HTTP: the upstream's connection closes at once; 499 logged; the endpoint is not blamed", async () => {
    spy.respond = () => {}; // never answers
    for (const n of [1, 2, 3]) {
      const id = `gone-http-${n}`;
      const has = (r: SpyRequest) => r.headers.some(([name, value]) => name === "x-request-id" && value === id);
      await sendAndLeave(post("/spy/slow", id, "{}"), () => spy.allRequests().some(has));
      const carrier = spy.connections.find((c) => c.framed().requests.some(has))!;
      const left = performance.now();
      await waitFor("the upstream connection to close", () => carrier.closedAt !== undefined, {
        timeoutMs: 2_000,
        intervalMs: 5,
      });
      expect(carrier.closedAt! - left).toBeLessThan(1_500);
      await waitFor("the access line", () => accessLog(gw).some((e) => e.request_id === id), {
        timeoutMs: 2_000,
        intervalMs: 10,
      });
      expect(accessLog(gw).find((e) => e.request_id === id)!.status).toBe(499);
    }
    // Sent once each: a cancelled try is not retried.
    expect(
      spy.allRequests().filter((r) => r.headers.some(([n, v]) => n === "x-request-id" && v.startsWith("gone-http-"))),
    ).toHaveLength(3);
    expect(await metric(/^portico_gateway_upstream_requests_total\{.*upstream="spy".*outcome="cancelled"/)).toBe(3);
    const endpoint = await endpointView(gw, "spy", spy.address);
    expect(endpoint?.breaker).toBe("closed");
    spy.respond = (_req, conn) => conn.write(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok`);
    const after = await fetch(`${gw.url}/spy/after`, { method: "POST", body: "{}" });
    expect(after.status).toBe(200);
    expect(await after.text()).toBe("ok");
  }, 30_000);

  test("mid-upload: nothing reaches the upstream, and the request is logged as an incomplete body (400)", async () => {
    spy.clear();
    const port = Number(new URL(gw.url).port);
    const socket = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } });
    socket.write(
      'POST /spy/upload HTTP/1.1\r\nHost: gw\r\nX-Request-ID: gone-upload\r\nContent-Length: 1000\r\n\r\n{"a":',
    );
    await Bun.sleep(200);
    socket.end();
    await waitFor("the access line", () => accessLog(gw).some((e) => e.request_id === "gone-upload"), {
      timeoutMs: 3_000,
      intervalMs: 10,
    });
    expect(accessLog(gw).find((e) => e.request_id === "gone-upload")!.status).toBe(400);
    expect(spy.allRequests()).toEqual([]);
  });

  test("gRPC: the server sees the call cancelled at once; 499 logged; the endpoint is not blamed", async () => {
    for (const n of [1, 2, 3]) {
      const id = `gone-grpc-${n}`;
      await sendAndLeave(post("/verify", id, '{"id":2,"token":"t"}'), () => calls.some((c) => c.requestId === id));
      const call = calls.find((c) => c.requestId === id)!;
      await waitFor("the server to see the call cancelled", () => call.cancelled, { timeoutMs: 2_000, intervalMs: 5 });
      expect(call.cancelledAt! - call.at).toBeLessThan(ROUTE_TIMEOUT_MS / 2);
      await waitFor("the access line", () => accessLog(gw).some((e) => e.request_id === id), {
        timeoutMs: 2_000,
        intervalMs: 10,
      });
      expect(accessLog(gw).find((e) => e.request_id === id)!.status).toBe(499);
    }
    expect(calls.filter((c) => c.requestId.startsWith("gone-grpc-"))).toHaveLength(3);
    expect(await metric(/^portico_gateway_upstream_requests_total\{.*upstream="rpc".*outcome="cancelled"/)).toBe(3);
    const endpoint = await endpointView(gw, "rpc", `127.0.0.1:${grpcPort}`);
    expect(endpoint?.breaker).toBe("closed");
    const after = await fetch(`${gw.url}/verify`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"id":1,"token":"t"}',
    });
    expect(after.status).toBe(200);
    expect(await after.json()).toEqual({ message: "ok" });
  }, 30_000);
});
