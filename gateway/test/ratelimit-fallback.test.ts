/**
 * The limiter in-process against a real redis-server that is stopped, killed and restarted:
 * each fallback mode does what routes.yaml says, a dead Redis costs a request at most the
 * timeout, the limiter returns to Redis by itself, and its counters see every decision.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { requireBinary, stopAll, waitFor } from "../../scripts/stack/testing/processes.ts";
import { RateLimiter } from "../src/ratelimit/limiter.ts";
import { PeerCounter } from "../src/ratelimit/peers.ts";
import {
  compilePolicies,
  DEFAULT_RATE_LIMIT_SETTINGS,
  type FallbackMode,
  type RouteRateLimit,
} from "../src/ratelimit/policy.ts";
import pino from "pino";
import { TestRedis } from "./ratelimit-harness.ts";

const hasRedis = requireBinary("redis-server");
const log = pino({ level: process.env.TEST_VERBOSE ? "debug" : "silent" });
const TIMEOUT_MS = 80;
let redis: TestRedis;
const limiters: RateLimiter[] = [];

beforeAll(async () => {
  if (hasRedis) redis = await TestRedis.start();
});

afterEach(async () => {
  for (const l of limiters.splice(0)) l.close();
  if (!hasRedis) return;
  redis.resume();
  if (!redis.isRunning) await redis.restart();
});

afterAll(stopAll);

/** burst 10, 10 per minute, keyed by IP. */
const limits: RouteRateLimit = compilePolicies({ rate: 10, period: "1m" }, (path, message) => {
  throw new Error(`${path.join(".")}: ${message}`);
});
const noHeaders = new Headers();

async function limiter(fallback: FallbackMode, opts: { replicas?: number; url?: string } = {}): Promise<RateLimiter> {
  const l = new RateLimiter({
    redisUrl: opts.url ?? redis.url,
    settings: {
      ...DEFAULT_RATE_LIMIT_SETTINGS,
      fallback,
      redisTimeoutMs: TIMEOUT_MS,
      replicas: opts.replicas ?? 1,
      keyPrefix: `test:${Math.random()}:`,
    },
    log,
    peers: new PeerCounter({ log }),
    probeIntervalMs: 50,
  });
  limiters.push(l);
  await l.start(opts.url ? 100 : 2000);
  if (!opts.url) expect(l.mode()).toBe("redis");
  return l;
}

/** How many of `n` requests from one client are admitted. */
async function admitted(l: RateLimiter, n: number, ip = "192.0.2.1"): Promise<number> {
  let ok = 0;
  for (let i = 0; i < n; i++) if ((await l.check("r", limits, ip, noHeaders)).allowed) ok++;
  return ok;
}

describe.skipIf(!hasRedis)("when Redis is unreachable", () => {
  test("open: every request is admitted, with RateLimit-Policy and no live figures", async () => {
    const l = await limiter("open");
    expect(l.mode()).toBe("redis");
    await redis.kill();
    expect(await admitted(l, 30)).toBe(30);
    expect(l.mode()).toBe("fallback");
    const decision = await l.check("r", limits, "192.0.2.1", noHeaders);
    const headers = new Headers();
    decision.setHeaders(headers);
    expect([...headers.keys()]).toEqual(["ratelimit-policy"]);
    expect(l.stats.decisions.get("r")).toMatchObject({ allowed: 31, denied: 0, fallback: 31 });
  });

  test("closed: every request to a limited route gets 503 problem+json with Retry-After: 1", async () => {
    const l = await limiter("closed");
    await redis.kill();
    const decision = await l.check("r", limits, "192.0.2.1", noHeaders);
    expect(decision.allowed).toBe(false);
    const res = decision.response("req-1");
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("1");
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(await res.json()).toMatchObject({
      title: "Rate limiter unavailable",
      status: 503,
      request_id: "req-1",
      route: "r",
    });
    expect(await admitted(l, 5)).toBe(0);
  });

  test("local: this gateway admits the limit divided by the live replicas, from memory", async () => {
    const l = await limiter("local", { replicas: 2 });
    await redis.kill();
    // burst 10 ÷ 2 gateways
    expect(await admitted(l, 20)).toBe(5);
    expect(await admitted(l, 20, "192.0.2.2")).toBe(5);
    expect(l.stats.decisions.get("r")).toMatchObject({ allowed: 10, denied: 30, fallback: 40 });
  });

  test("local: the fallback starts from the shared figures this gateway last saw, not from full budgets", async () => {
    const l = await limiter("local", { replicas: 2 });
    expect(await admitted(l, 12, "192.0.2.1")).toBe(10); // used up in Redis
    expect(await admitted(l, 4, "192.0.2.2")).toBe(4); // 6 of 10 left in Redis
    await redis.kill();
    expect(await admitted(l, 5, "192.0.2.1")).toBe(0);
    expect(await admitted(l, 5, "192.0.2.2")).toBe(3); // this gateway's half of the 6 left
    expect(await admitted(l, 5, "192.0.2.3")).toBe(5); // a client never seen: half of a full budget
  });

  test("a Redis that stops answering costs one request the timeout; the next are decided at once", async () => {
    const l = await limiter("local", { replicas: 1 });
    redis.pause();
    const start = performance.now();
    await l.check("r", limits, "192.0.2.1", noHeaders);
    const first = performance.now() - start;
    console.log(`redis stopped: the first request waited ${first.toFixed(1)} ms (timeout ${TIMEOUT_MS} ms)`);
    // Against the configured redisTimeoutMs (a real redis-server process): not before it; after it
    // by at most the grace turn BoundedRedis gives a late timer (TIMEOUT_MS / 4) and 30 ms more.
    expect(first).toBeGreaterThanOrEqual(TIMEOUT_MS - 1);
    expect(first).toBeLessThan(TIMEOUT_MS * 1.25 + 30);
    expect(l.stats.redis.timeouts).toBe(1);
    expect(l.mode()).toBe("fallback");
    // The next are decided at once: synchronously (a decision, not a promise), with no call to
    // Redis. Checked, not timed.
    const callsBefore = l.stats.redis.calls;
    for (let i = 0; i < 5; i++) {
      expect(l.check("r", limits, "192.0.2.1", noHeaders)).not.toBeInstanceOf(Promise);
    }
    expect(l.stats.redis.calls).toBe(callsBefore);

    // Resumed: the probe finds it and requests go back to Redis without anyone's help.
    redis.resume();
    await waitFor("the limiter to use redis again", () => l.mode() === "redis", { timeoutMs: 3000 });
    const before = l.stats.redis.calls;
    await l.check("r", limits, "192.0.2.9", noHeaders);
    expect(l.stats.redis.calls).toBe(before + 1);
  });

  test("a reply late only because this process was busy is not taken for an outage", async () => {
    const l = await limiter("local", { replicas: 1 });
    const pending = l.check("r", limits, "192.0.2.1", noHeaders);
    const busyUntil = performance.now() + TIMEOUT_MS * 2;
    while (performance.now() < busyUntil) {} // the reply arrives while the event loop is blocked
    await pending;
    expect(l.mode()).toBe("redis");
    expect(l.stats.redis.timeouts).toBe(0);
  });

  test("started while Redis is down, the fallback decides until Redis appears, then Redis does", async () => {
    const port = await freePort();
    const l = await limiter("closed", { url: `redis://127.0.0.1:${port}` });
    expect(l.mode()).toBe("fallback");
    expect((await l.check("r", limits, "192.0.2.1", noHeaders)).allowed).toBe(false);
    const late = await TestRedis.start(port);
    await waitFor("the limiter to connect", () => l.mode() === "redis", { timeoutMs: 3000 });
    expect((await l.check("r", limits, "192.0.2.1", noHeaders)).allowed).toBe(true);
    await late.kill();
  });
});

describe.skipIf(!hasRedis)("what the limiter counts", () => {
  test("decisions per route with their source, and the latency of each Redis call", async () => {
    const l = await limiter("local", { replicas: 1 });
    const seen: string[] = [];
    l.stats.onDecision = (route, outcome, source) => seen.push(`${route} ${outcome} ${source}`);
    const callsBefore = l.stats.redis.calls;
    expect(await admitted(l, 12)).toBe(10);
    expect(l.stats.decisions.get("r")).toEqual({ allowed: 10, denied: 2, fallback: 0 });
    expect(seen.at(0)).toBe("r allowed redis");
    expect(seen.at(-1)).toBe("r denied redis");
    const r = l.stats.redis;
    expect(r.calls - callsBefore).toBe(12);
    expect(r.buckets.reduce((a, b) => a + b, 0)).toBe(r.calls);
    expect(r.maxMs).toBeGreaterThan(0);
    expect(l.status()).toEqual({ mode: "redis", fallback: "local", redis: redis.url, replicas: 1 });
  });

  test("without a Redis URL the limiter runs in memory", async () => {
    const l = new RateLimiter({ log });
    limiters.push(l);
    await l.start();
    expect(l.mode()).toBe("memory");
    expect(await admitted(l, 12)).toBe(10);
    expect(l.stats.decisions.get("r")).toEqual({ allowed: 10, denied: 2, fallback: 0 });
  });
});
