/**
 * Three gateway processes sharing one Redis, hammered concurrently: one budget for all of them,
 * within ±2% of the configured limit; then Redis stops answering and is killed mid-run (no
 * request hangs; the `local` fallback admits limit ÷ 3 per gateway), and after it restarts the
 * gateways use the shared budget again. The figures are printed for the README.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RedisClient } from "bun";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { requireBinary, stopAll } from "../../scripts/stack/testing/processes.ts";
import {
  hammer,
  startGatewayOn,
  startStubUpstream,
  type TestGateway,
  TestRedis,
  waitForLog,
  writeRoutes,
} from "./ratelimit-harness.ts";

const hasRedis = requireBinary("redis-server");
// Above the 100 ms default: on a busy shared 2-core machine Redis itself can stall that long,
// and a stall would send the gateways to their fallback in the middle of the accuracy runs.
const REDIS_TIMEOUT_MS = 250;
let redis: TestRedis;
let stub: Awaited<ReturnType<typeof startStubUpstream>>;
let gateways: TestGateway[] = [];

beforeAll(async () => {
  if (!hasRedis) return;
  [redis, stub] = await Promise.all([TestRedis.start(), startStubUpstream()]);
  const routesFile = writeRoutes(`
upstreams:
  stub: { protocol: http, endpoints: "${stub.address}" }
rateLimit:
  fallback: local
  redisTimeoutMs: ${REDIS_TIMEOUT_MS}
routes:
  - { name: per-minute, path: /per-minute, upstream: stub, rateLimit: { rate: 100, period: 1m } }
  - { name: per-second, path: /per-second, upstream: stub, rateLimit: { rate: 100, period: 1s, burst: 50 } }
  - { name: outage, path: /outage, upstream: stub, rateLimit: { rate: 60, period: 1m } }
`);
  const ports = await Promise.all([0, 1, 2].map(async () => [await freePort(), await freePort()] as const));
  const peers = ports.map(([, admin]) => `http://127.0.0.1:${admin}`).join(",");
  gateways = await Promise.all(
    ports.map(([port, admin], i) =>
      startGatewayOn(`gateway-${i + 1}`, routesFile, port, admin, {
        REDIS_URL: redis.url,
        GATEWAY_PEERS: peers,
        GATEWAY_PEERS_INTERVAL_MS: "200",
      }),
    ),
  );
  // The local fallback divides by the live replicas: wait until every gateway has counted all three.
  await Promise.all(
    gateways.map((g) => waitForLog(g.proc, "rate limiter: live gateway replicas changed", { peers: 3 })),
  );
}, 30_000); // processes start slowly on a busy 2-core machine

afterAll(async () => {
  stub?.stop();
  await stopAll();
});

const targets = (path: string) => gateways.map((g) => ({ url: `${g.url}${path}` }));
const percent = (admitted: number, expected: number) => `${(((admitted - expected) / expected) * 100).toFixed(2)}%`;

describe.skipIf(!hasRedis)("one budget shared by three gateways", () => {
  test("100 per minute across 3 gateways admits 100 (plus what the rate earns meanwhile), not 300", async () => {
    const run = await hammer(targets("/per-minute"), { durationMs: 2000, concurrency: 8 });
    const admitted = run.total(200);
    // The burst of 100 at once, then one request every 600 ms.
    const expected = 100 + Math.floor(run.elapsedMs / 600);
    console.log(
      `rate-limit accuracy (100/min, 3 gateways, ${run.requests} requests in ${Math.round(run.elapsedMs)} ms): admitted ${admitted}, expected ${expected} (${percent(admitted, expected)}); per gateway ${run.statuses.map((s) => s.get(200) ?? 0).join("/")}`,
    );
    expect(run.total(0)).toBe(0);
    expect(run.total(200) + run.total(429)).toBe(run.requests);
    expect(Math.abs(admitted - expected)).toBeLessThanOrEqual(expected * 0.02);
  });

  test("100 per second (burst 50) across 3 gateways holds the rate within ±2% under concurrent load", async () => {
    const run = await hammer(targets("/per-second"), { durationMs: 3000, concurrency: 8 });
    const admitted = run.total(200);
    // The burst at once, then 100 per second from the first admitted request to the last. (The
    // burst also absorbs a stall of the machine of up to 500 ms, which would otherwise lose the
    // requests the clients could not send meanwhile.)
    const expected = 50 + (run.admittingMs / 1000) * 100;
    console.log(
      `rate-limit accuracy (100/s, burst 50, 3 gateways, ${run.requests} requests in ${Math.round(run.elapsedMs)} ms): admitted ${admitted} in ${Math.round(run.admittingMs)} ms, expected ${expected.toFixed(1)} (${percent(admitted, expected)})`,
    );
    expect(run.total(0)).toBe(0);
    expect(Math.abs(admitted - expected)).toBeLessThanOrEqual(expected * 0.02);
  });
});

describe.skipIf(!hasRedis)("Redis stops answering, is killed, and comes back", () => {
  test("no request hangs; meanwhile each gateway admits limit ÷ 3; afterwards the shared budget is used again", async () => {
    const linesBefore = gateways.map((g) => g.proc.lines.length);
    // A stopped Redis keeps its connections open and answers nothing (like a network partition):
    // every call must be cut short by the timeout. Half-way through, it is killed outright.
    redis.pause();
    const killing = Bun.sleep(700).then(() => redis.kill());
    const outage = await hammer(targets("/outage"), { durationMs: 1500, concurrency: 4 });
    await killing;
    const perGateway = outage.statuses.map((s) => s.get(200) ?? 0);
    console.log(
      `rate-limit outage (redis stopped, then killed; fallback local, redis timeout ${REDIS_TIMEOUT_MS} ms): ${outage.requests} requests, max latency ${outage.maxLatencyMs.toFixed(1)} ms, admitted per gateway ${perGateway.join("/")} (limit 60 ÷ 3 = 20 each)`,
    );
    expect(outage.total(0)).toBe(0);
    // Against the configured REDIS_TIMEOUT_MS: a request waits at most one Redis timeout (plus the
    // quarter-timeout grace turn for a late timer); the other 340 ms are the gateway, the stub and
    // this client sharing 2 busy cores. A hang would show as the client's own timeout.
    expect(outage.maxLatencyMs).toBeLessThan(REDIS_TIMEOUT_MS + 400);
    // 60 per minute ÷ 3 gateways: a burst of 20 each, plus at most one earned in 1.5 s.
    expect(perGateway).toHaveLength(3);
    for (const admitted of perGateway) {
      expect(admitted).toBeGreaterThanOrEqual(20);
      expect(admitted).toBeLessThanOrEqual(21);
    }
    for (const [i, g] of gateways.entries()) {
      await waitForLog(g.proc, "rate limiter: redis unavailable, deciding by the fallback", {}, 1000, linesBefore[i]);
    }

    // Back, empty: every gateway returns to Redis by itself, and the 3 share one fresh budget of 60.
    const linesAtRestart = gateways.map((g) => g.proc.lines.length);
    await redis.restart();
    await Promise.all(
      gateways.map((g, i) => waitForLog(g.proc, "rate limiter: using redis", {}, 5000, linesAtRestart[i])),
    );
    const after = await hammer(targets("/outage"), { durationMs: 1000, concurrency: 4 });
    console.log(
      `rate-limit after redis restart: admitted ${after.total(200)} across 3 gateways (shared limit 60), per gateway ${after.statuses.map((s) => s.get(200) ?? 0).join("/")}`,
    );
    expect(after.total(0)).toBe(0);
    expect(after.total(200)).toBeGreaterThanOrEqual(60);
    expect(after.total(200)).toBeLessThanOrEqual(61);
    const client = new RedisClient(redis.url);
    expect(await client.exists("portico:rl:outage:ip:ip:127.0.0.1")).toBe(true);
    client.close();
  });
});
