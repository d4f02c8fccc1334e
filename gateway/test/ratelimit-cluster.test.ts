/**
 * Three gateway processes sharing one Redis: one budget for all of them, within ±2% of the
 * configured limit; then Redis stops answering (SIGSTOP) or is killed mid-run: no request hangs,
 * the `local` fallback admits limit ÷ 3 per gateway, and when Redis is back each gateway writes
 * back what it admitted, so that over the outage and the recovery together no more than the limit
 * (× 1.1) is admitted — not a fresh budget on top. The figures are printed for the README.
 *
 * The accuracy runs send at a steady, known rate (`pace`), not as fast as possible: a flat-out
 * load saturates this 2-core machine, and the times the client measures then drift from the
 * times Redis decided at by tens of milliseconds — the cause of the ±2% check failing by 9–15
 * requests of ~350 on a busy machine. Paced at 3× the limit the demand never pauses and the
 * client's clock stays within a few ms of Redis's. The GCRA bound on Redis's own clock (never
 * more than burst + rate × elapsed) is checked too: it does not depend on the client's timing.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RedisClient } from "bun";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { requireBinary, stopAll } from "../../scripts/stack/testing/processes.ts";
import {
  hammer,
  pace,
  type PacedAnswer,
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
/** The outage routes' limit: per hour, so that what is earned back during the test (0.025/s) is negligible. */
const OUTAGE_LIMIT = 90;
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
  - { name: flat-out, path: /flat-out, upstream: stub, rateLimit: { rate: 100, period: 1s, burst: 50 } }
  - { name: outage-stop, path: /outage-stop, upstream: stub, rateLimit: { rate: ${OUTAGE_LIMIT}, period: 1h } }
  - { name: outage-kill, path: /outage-kill, upstream: stub, rateLimit: { rate: ${OUTAGE_LIMIT}, period: 1h } }
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

/** Redis's clock, in seconds. */
async function redisTime(): Promise<number> {
  const client = new RedisClient(redis.url);
  try {
    const [s, us] = (await client.send("TIME", [])) as [string, string];
    return Number(s) + Number(us) / 1e6;
  } finally {
    client.close();
  }
}

/** The admitted answers' send times: the first and the last. */
function admittedWindow(answers: PacedAnswer[]): { admitted: number; firstMs: number; lastMs: number } {
  const ok = answers.filter((a) => a.status === 200).map((a) => a.sentAt);
  return { admitted: ok.length, firstMs: Math.min(...ok), lastMs: Math.max(...ok) };
}

describe.skipIf(!hasRedis)("one budget shared by three gateways", () => {
  test("100 per minute across 3 gateways admits 100 (plus what the rate earns meanwhile), not 300", async () => {
    const [from, run, to] = [
      await redisTime(),
      await pace(targets("/per-minute"), { ratePerSecond: 150, count: 300 }),
      await redisTime(),
    ];
    const { admitted, firstMs } = admittedWindow(run.answers);
    const lastSent = Math.max(...run.answers.map((a) => a.sentAt));
    // The burst of 100 at once, then one request every 600 ms while the demand lasts.
    const expected = 100 + Math.floor((lastSent - firstMs) / 600);
    const perGateway = [0, 1, 2].map((t) => run.answers.filter((a) => a.target === t && a.status === 200).length);
    console.log(
      `rate-limit accuracy (100/min, 3 gateways, ${run.answers.length} requests at 150/s): admitted ${admitted}, expected ${expected} (${percent(admitted, expected)}); per gateway ${perGateway.join("/")}; sender lag ≤ ${run.maxLagMs.toFixed(0)} ms`,
    );
    expect(run.skipped).toBe(0);
    expect(run.answers.filter((a) => a.status !== 200 && a.status !== 429)).toEqual([]);
    expect(admitted).toBeLessThanOrEqual(100 + Math.floor(((to - from) * 1000) / 600) + 1);
    expect(Math.abs(admitted - expected)).toBeLessThanOrEqual(expected * 0.02);
  });

  test("100 per second (burst 50) across 3 gateways holds the rate within ±2% under a steady 3× overload", async () => {
    const from = await redisTime();
    const run = await pace(targets("/per-second"), { ratePerSecond: 300, count: 900 });
    const to = await redisTime();
    const { admitted, firstMs, lastMs } = admittedWindow(run.answers);
    // GCRA admits the burst at once, then one request per 10 ms from the first admitted one to the last.
    const expected = 50 + ((lastMs - firstMs) / 1000) * 100;
    const bound = 50 + (to - from) * 100;
    console.log(
      `rate-limit accuracy (100/s, burst 50, 3 gateways, ${run.answers.length} requests at 300/s): admitted ${admitted} in ${Math.round(lastMs - firstMs)} ms, expected ${expected.toFixed(1)} (${percent(admitted, expected)}); Redis-clock bound ${bound.toFixed(1)}; sender lag ≤ ${run.maxLagMs.toFixed(0)} ms`,
    );
    expect(run.skipped).toBe(0);
    expect(run.answers.filter((a) => a.status !== 200 && a.status !== 429)).toEqual([]);
    expect(admitted).toBeLessThanOrEqual(Math.floor(bound) + 1);
    expect(Math.abs(admitted - expected)).toBeLessThanOrEqual(expected * 0.02);
  });

  test("a rough load as fast as the clients go stays within ±10% of the limit", async () => {
    const run = await hammer(targets("/flat-out"), { durationMs: 2000, concurrency: 4 });
    const admitted = run.total(200);
    const expected = 50 + (run.admittingMs / 1000) * 100;
    console.log(
      `rate-limit accuracy, flat-out load (100/s, burst 50, 3 gateways, ${run.requests} requests): admitted ${admitted}, expected ${expected.toFixed(1)} (${percent(admitted, expected)})`,
    );
    expect(run.total(0)).toBe(0);
    expect(Math.abs(admitted - expected)).toBeLessThanOrEqual(expected * 0.1);
  });
});

/**
 * Spends a third of the budget through Redis, takes Redis away (`outage`), loads the route
 * through the fallback, brings Redis back and loads it again; returns what was admitted in each phase.
 */
async function outageAndRecovery(
  path: string,
  outage: { start: () => void | Promise<void>; end: () => Promise<void> },
): Promise<{ before: number; during: number[]; after: number; maxLatencyMs: number }> {
  const third = OUTAGE_LIMIT / 3;
  const before = await pace(targets(path), { ratePerSecond: 100, count: third });
  const linesBefore = gateways.map((g) => g.proc.lines.length);
  await outage.start();
  const during = await hammer(targets(path), { durationMs: 1500, concurrency: 4 });
  for (const [i, g] of gateways.entries())
    await waitForLog(g.proc, "rate limiter: redis unavailable, deciding by the fallback", {}, 1000, linesBefore[i]);
  expect(during.total(0)).toBe(0);

  const linesAtReturn = gateways.map((g) => g.proc.lines.length);
  await outage.end();
  await Promise.all(
    gateways.map((g, i) => waitForLog(g.proc, "rate limiter: using redis", {}, 5000, linesAtReturn[i])),
  );
  for (const [i, g] of gateways.entries())
    await waitForLog(
      g.proc,
      "rate limiter: wrote back what the fallback admitted during the outage",
      {},
      1000,
      linesAtReturn[i],
    );
  const after = await hammer(targets(path), { durationMs: 1000, concurrency: 4 });
  expect(after.total(0)).toBe(0);
  return {
    before: before.answers.filter((a) => a.status === 200).length,
    during: during.statuses.map((s) => s.get(200) ?? 0),
    after: after.total(200),
    maxLatencyMs: during.maxLatencyMs,
  };
}

describe.skipIf(!hasRedis)("Redis goes away and comes back: the limit holds over the outage and the recovery", () => {
  test("stopped (SIGSTOP), resumed: each gateway admits limit ÷ 3 meanwhile, then writes back; total ≤ limit × 1.1", async () => {
    const run = await outageAndRecovery("/outage-stop", {
      start: () => redis.pause(),
      end: async () => redis.resume(),
    });
    const total = run.before + run.during.reduce((a, b) => a + b, 0) + run.after;
    console.log(
      `rate-limit outage (redis stopped, then resumed; limit ${OUTAGE_LIMIT}/h, fallback local): before ${run.before}, during ${run.during.join("/")} (max latency ${run.maxLatencyMs.toFixed(0)} ms), after ${run.after}: total ${total} (≤ ${Math.floor(OUTAGE_LIMIT * 1.1)})`,
    );
    // A stopped Redis is cut short by the timeout: no request waits on it much longer. The bound is
    // loose (3 gateways, Redis and the load share 2 cores, and timers run late), yet far below the
    // load's own 5 s request timeout, the wait a missing Redis timeout would end in.
    expect(run.maxLatencyMs).toBeLessThan(REDIS_TIMEOUT_MS * 10);
    expect(run.before).toBe(OUTAGE_LIMIT / 3);
    // Each gateway's share (30) minus its share of what Redis had already admitted (10).
    for (const admitted of run.during) expect(admitted).toBeOneOf([20, 21]);
    expect(total).toBeGreaterThanOrEqual(OUTAGE_LIMIT);
    expect(total).toBeLessThanOrEqual(OUTAGE_LIMIT * 1.1);
  });

  test("killed, restarted empty: the write-back restores what Redis lost as well as what the fallback admitted; total ≤ limit × 1.1", async () => {
    const run = await outageAndRecovery("/outage-kill", {
      start: () => redis.kill(),
      end: () => redis.restart(),
    });
    const total = run.before + run.during.reduce((a, b) => a + b, 0) + run.after;
    console.log(
      `rate-limit outage (redis killed, restarted empty; limit ${OUTAGE_LIMIT}/h, fallback local): before ${run.before}, during ${run.during.join("/")}, after ${run.after}: total ${total} (≤ ${Math.floor(OUTAGE_LIMIT * 1.1)}; without the write-back a fresh ${OUTAGE_LIMIT} after)`,
    );
    expect(run.before).toBe(OUTAGE_LIMIT / 3);
    for (const admitted of run.during) expect(admitted).toBeOneOf([20, 21]);
    expect(total).toBeGreaterThanOrEqual(OUTAGE_LIMIT);
    expect(total).toBeLessThanOrEqual(OUTAGE_LIMIT * 1.1);
    // The shared bucket is back in Redis, as full as the three gateways together made it.
    const client = new RedisClient(redis.url);
    expect(await client.exists("portico:rl:outage-kill:ip:ip:127.0.0.1")).toBe(true);
    client.close();
  });
});
