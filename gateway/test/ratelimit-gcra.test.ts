/**
 * The GCRA itself: the Lua script against a real redis-server, and the in-memory version used
 * without Redis and by the `local` fallback, through the same cases, each on its own clock (the
 * in-memory one on a clock the test moves, Redis on its TIME); then what only Redis does.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RedisClient } from "bun";
import pino from "pino";
import { requireBinary, stopAll } from "../../scripts/stack/testing/processes.ts";
import { type GcraCheck, type GcraOutcome, MemoryGcra } from "../src/ratelimit/gcra.ts";
import { GCRA_SCRIPT_SHA, RedisGcra } from "../src/ratelimit/redis-gcra.ts";
import { RateLimitStats } from "../src/ratelimit/stats.ts";
import { TestRedis } from "./ratelimit-harness.ts";

const hasRedis = requireBinary("redis-server");
const log = pino({ level: "silent" });
let redis: TestRedis;
let store: RedisGcra;
let raw: RedisClient;
/** The in-memory store's clock (µs), moved by the test: no case waits on it, none can be flaky. */
let memoryNowUs = 1_000_000_000;
const memory = new MemoryGcra(() => memoryNowUs);

beforeAll(async () => {
  if (!hasRedis) return;
  redis = await TestRedis.start();
  store = new RedisGcra(redis.url, {
    timeoutMs: 1000,
    probeKey: "test:probe",
    callLogKey: "test:calls",
    log,
    stats: new RateLimitStats(),
  });
  expect(await store.start(3000)).toBe(true);
  raw = new RedisClient(redis.url);
}, 30_000); // processes start slowly on a busy 2-core machine

afterAll(async () => {
  store?.close();
  raw?.close();
  memory.close();
  await stopAll();
});

/** Redis's decision (the test fails when Redis does not decide). */
async function redisTake(checks: GcraCheck[]): Promise<GcraOutcome> {
  const outcome = await store.take(checks);
  if (!outcome || "unanswered" in outcome) throw new Error("redis did not decide");
  return outcome;
}

let keys = 0;
/** A bucket no other test touches. */
const fresh = (intervalUs: number, burst: number): GcraCheck => ({
  key: `test:${++keys}:${Math.random()}`,
  intervalUs,
  burst,
});

/** A store under test, with its clock: what time it is for it, and how to let time pass. */
interface StoreUnderTest {
  name: string;
  take: (checks: GcraCheck[]) => Promise<GcraOutcome>;
  nowMs: () => number;
  pass: (ms: number) => Promise<void>;
}

const stores: StoreUnderTest[] = [
  {
    // Redis decides on its own clock (TIME, real time): these cases wait for real, and leave
    // room for this process to stall a few hundred milliseconds on a busy machine.
    name: "redis (gcra.lua)",
    take: redisTake,
    nowMs: () => performance.now(),
    pass: (ms) => Bun.sleep(ms),
  },
  {
    name: "memory",
    take: async (checks) => memory.take(checks),
    nowMs: () => memoryNowUs / 1000,
    pass: async (ms) => {
      memoryNowUs += ms * 1000;
    },
  },
];

for (const { name, take, nowMs, pass } of stores) {
  describe.skipIf(!hasRedis && name.startsWith("redis"))(`GCRA in ${name}`, () => {
    test("an idle client gets exactly its burst at once, then a refusal saying when to retry", async () => {
      const bucket = fresh(1_000_000, 5); // 1 per second, burst 5
      const remaining: number[] = [];
      const startedAt = nowMs();
      for (let i = 0; i < 5; i++) {
        const { allowed, results } = await take([bucket]);
        expect(allowed).toBe(true);
        remaining.push(results[0]!.remaining);
      }
      expect(remaining).toEqual([4, 3, 2, 1, 0]);
      const refused = await take([bucket]);
      expect(refused.allowed).toBe(false);
      expect(refused.results[0]!.remaining).toBe(0);
      // Less what passed since the first take (real time on Redis; none on the test clock).
      const elapsed = Math.ceil(nowMs() - startedAt);
      expect(refused.results[0]!.retryAfterMs).toBeGreaterThanOrEqual(1000 - elapsed - 1);
      expect(refused.results[0]!.retryAfterMs).toBeLessThanOrEqual(1000);
      // Five requests ahead at one per second: full again in ~5 s.
      expect(refused.results[0]!.resetMs).toBeGreaterThanOrEqual(5000 - elapsed - 1);
      expect(refused.results[0]!.resetMs).toBeLessThanOrEqual(5000);
    });

    test("retry-after is exact: a request well before it is refused, one just after it is admitted", async () => {
      const bucket = fresh(1_000_000, 1); // 1 per second, no burst
      expect((await take([bucket])).allowed).toBe(true);
      const refused = await take([bucket]);
      expect(refused.allowed).toBe(false);
      const retryAfterMs = refused.results[0]!.retryAfterMs;
      const refusedAt = nowMs();
      // 600 ms before it: room for this process or Redis to stall.
      await pass(retryAfterMs - 600);
      expect((await take([bucket])).allowed).toBe(false);
      await pass(Math.max(0, refusedAt + retryAfterMs + 5 - nowMs()));
      expect((await take([bucket])).allowed).toBe(true);
    });

    test("at a steady rate it admits burst + elapsed / interval, not more", async () => {
      // 100 per second, burst 30, a request every millisecond or so. GCRA banks no credit beyond
      // the burst, so what a store should admit depends on when the requests came, and on a busy
      // machine they come late (a Redis round trip can take longer than the 10 ms interval). So
      // the store is judged against the GCRA's definition fed with the times they were sent.
      const bucket = fresh(10_000, 30);
      let admitted = 0;
      let defined = 0; // what the definition admits
      let tat = Number.NEGATIVE_INFINITY; // its theoretical arrival time
      let maxRoundTripMs = 0;
      const start = nowMs();
      let last = start;
      while (nowMs() - start < 500) {
        last = nowMs();
        const at = Math.max(tat, last);
        if (at - last <= 290) {
          defined++;
          tat = at + 10;
        }
        if ((await take([bucket])).allowed) admitted++;
        maxRoundTripMs = Math.max(maxRoundTripMs, nowMs() - last);
        await pass(1);
      }
      const earned = 30 + Math.floor((last - start) / 10);
      // The store decides at some instant of the round trip, not at the send: each interval the
      // round trip spans can move one decision.
      const slack = 1 + Math.ceil(maxRoundTripMs / 10);
      console.log(
        `[gcra ${name}] ${admitted} admitted, ${defined} by definition, round trip ≤ ${maxRoundTripMs.toFixed(1)} ms`,
      );
      expect(admitted).toBeLessThanOrEqual(earned + slack);
      expect(Math.abs(admitted - defined)).toBeLessThanOrEqual(slack);
      if (name === "memory") expect([admitted, defined]).toEqual([earned, earned]); // exact on a test clock
    });

    test("the budget is whole again after one idle period", async () => {
      // 3 per 1.5 s: five takes in a row earn nothing new unless they take 500 ms (a stall).
      const bucket = fresh(500_000, 3);
      const admitted = async (n: number) => {
        let ok = 0;
        for (let i = 0; i < n; i++) if ((await take([bucket])).allowed) ok++;
        return ok;
      };
      expect(await admitted(5)).toBe(3);
      await pass(1_520); // one period
      expect(await admitted(5)).toBe(3);
    });

    test("policies are decided together: a refusal by one uses up nothing in the others", async () => {
      const tight = fresh(10_000_000, 2);
      const loose = fresh(10_000_000, 10);
      expect((await take([tight, loose])).allowed).toBe(true);
      const second = await take([tight, loose]);
      expect(second.allowed).toBe(true);
      expect(second.results.map((r) => r.remaining)).toEqual([0, 8]);
      const third = await take([tight, loose]);
      expect(third.allowed).toBe(false);
      expect(third.results[0]!.retryAfterMs).toBeGreaterThan(0);
      // The loose policy would have admitted it and still has all 8 it had.
      expect(third.results[1]).toMatchObject({ remaining: 8, retryAfterMs: 0 });
      expect((await take([loose])).results[0]!.remaining).toBe(7);
    });
  });
}

describe("GCRA in memory, on a clock the test controls", () => {
  test("an idle bucket admits its first request whatever the clock's value (no float rounding)", () => {
    for (const nowUs of [2_912_345_678.123_456, 1.7e15 + 0.5, 123.456]) {
      const gcra = new MemoryGcra(() => nowUs, 60_000);
      for (const intervalUs of [500_000, 1_000_000 / 3, 0.7])
        expect(gcra.take([{ key: `k${intervalUs}`, intervalUs, burst: 1 }]).allowed).toBe(true);
      gcra.close();
    }
  });

  test("a client earns exactly one request per interval, and idle time beyond the burst is not banked", () => {
    let nowUs = 1_000_000_000;
    const gcra = new MemoryGcra(() => nowUs, 60_000);
    const bucket = { key: "k", intervalUs: 100_000, burst: 2 };
    const admitted = (n: number) => Array.from({ length: n }, () => gcra.take([bucket]).allowed).filter(Boolean).length;
    expect(admitted(5)).toBe(2);
    nowUs += 99_999;
    expect(admitted(1)).toBe(0);
    nowUs += 1;
    expect(admitted(5)).toBe(1);
    nowUs += 10_000_000; // idle for 100 intervals
    expect(admitted(5)).toBe(2);
    gcra.close();
  });
});

describe.skipIf(!hasRedis)("gcra.lua in Redis", () => {
  test("the script is reloaded when Redis has lost it (SCRIPT FLUSH, a restart)", async () => {
    await raw.send("SCRIPT", ["FLUSH"]);
    expect(await raw.send("SCRIPT", ["EXISTS", GCRA_SCRIPT_SHA])).toEqual([0]);
    expect((await redisTake([fresh(1000, 1)])).allowed).toBe(true);
    expect(await raw.send("SCRIPT", ["EXISTS", GCRA_SCRIPT_SHA])).toEqual([1]);
  });

  test("a bucket holds its TAT on Redis's clock and expires once it is full again", async () => {
    const bucket = fresh(300_000, 2);
    const redisNowUs = async () => {
      const [seconds, micros] = (await raw.send("TIME", [])) as [string, string];
      return Number(seconds) * 1e6 + Number(micros);
    };
    const before = await redisNowUs();
    await store.take([bucket]);
    const outcome = await redisTake([bucket]);
    const after = await redisNowUs();
    const tat = Number(await raw.get(bucket.key));
    // Two requests 300 ms apart in the future of the first one's time on Redis's clock, whatever
    // this machine's clock says: that time lies between the two TIMEs around the takes.
    expect(tat - 600_000).toBeGreaterThanOrEqual(before);
    expect(tat - 600_000).toBeLessThanOrEqual(after);
    const ttl = Number(await raw.send("PTTL", [bucket.key]));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(outcome.results[0]!.resetMs);
  });

  test("a refused request writes nothing", async () => {
    const bucket = fresh(10_000_000, 1);
    await store.take([bucket]);
    const before = await raw.get(bucket.key);
    expect((await redisTake([bucket])).allowed).toBe(false);
    expect(await raw.get(bucket.key)).toBe(before);
  });
});
