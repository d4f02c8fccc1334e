/**
 * BoundedRedis against a real redis-server: calls answer, and an outage — a stopped server, a
 * killed one, none at all — fails calls within the timeout, never hangs them, and ends by
 * itself when Redis is back.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import {
  BoundedRedis,
  type BoundedRedisOptions,
  isRedisUnavailable,
  type RedisCallResult,
  redactUrl,
  type RedisStateChange,
  RedisTimeoutError,
  RedisUnavailableError,
} from "./redis.ts";
import { freePort } from "../scripts/stack/testing/ports.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { requireBinary, spawnProcess, stopAll, stopProcess, waitFor } from "../scripts/stack/testing/processes.ts";
import { TestRedis } from "../scripts/stack/testing/redis.ts";

const hasRedis = requireBinary("redis-server");
const TIMEOUT_MS = 200;
let redis: TestRedis;
const clients: BoundedRedis[] = [];

beforeAll(async () => {
  if (hasRedis) redis = await TestRedis.start();
}, 30_000); // processes start slowly on a busy 2-core machine

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
});

afterAll(() => stopAll());

/** A client that records its state changes and calls; closed after the test. */
function client(url = redis.url, opts: Partial<BoundedRedisOptions> = {}) {
  const changes: RedisStateChange[] = [];
  const calls: RedisCallResult[] = [];
  const bounded = new BoundedRedis(url, {
    timeoutMs: TIMEOUT_MS,
    probeIntervalMs: 50,
    onStateChange: (c) => changes.push(c),
    onCall: (_, r) => calls.push(r),
    ...opts,
  });
  clients.push(bounded);
  return { redis: bounded, changes, calls };
}

/** How long `promise` took to settle, and how. */
async function timed(promise: Promise<unknown>): Promise<{ ms: number; error: unknown }> {
  const start = performance.now();
  let error: unknown;
  try {
    await promise;
  } catch (err) {
    error = err;
  }
  return { ms: performance.now() - start, error };
}

/**
 * The error `promise` failed with, provided it settled before the event loop's next turn: it
 * waited on no socket and no timer. A deterministic "at once", where a time limit would be a guess.
 */
async function failureAtOnce(promise: Promise<unknown>): Promise<unknown> {
  let settled: { error: unknown } | undefined;
  promise.then(
    () => (settled = { error: undefined }),
    (error) => (settled = { error }),
  );
  await new Promise((resolve) => setImmediate(resolve));
  if (!settled) throw new Error("the call was still pending a loop turn later: it waited on Redis or a timer");
  return settled.error;
}

describe.skipIf(!hasRedis)("BoundedRedis", () => {
  test("connects, answers calls with Bun's reply types, and reports each call", async () => {
    const { redis: r, changes, calls } = client();
    expect(await r.start(3000)).toBe(true);
    expect(changes).toMatchObject([{ up: true }]);
    expect(await r.call("SET", ["lib:a", "1"])).toBe("OK");
    expect(await r.call("INCR", ["lib:a"])).toBe(2);
    expect(await r.call("MGET", ["lib:a", "lib:missing"])).toEqual(["2", null]);
    expect(calls.slice(-3)).toEqual(["ok", "ok", "ok"]);
  });

  test("an error reply fails that call only: Redis stays up and the error is not an outage", async () => {
    const { redis: r, calls } = client();
    await r.start(3000);
    await r.call("SET", ["lib:text", "x"]);
    const { error } = await timed(r.call("INCR", ["lib:text"]));
    expect((error as Error).message).toStartWith("ERR value is not an integer");
    expect(isRedisUnavailable(error)).toBe(false);
    expect(r.isUp).toBe(true);
    expect(calls.at(-1)).toBe("error");
    expect(await r.call("GET", ["lib:text"])).toBe("x");
  });

  test("an out-of-memory refusal counts as unavailable (retry later), not as a bad command", async () => {
    const { redis: r } = client();
    await r.start(3000);
    await r.call("CONFIG", ["SET", "maxmemory", "1"]);
    try {
      const { error } = await timed(r.call("SET", ["lib:big", "x"]));
      expect((error as Error).message).toStartWith("OOM");
      expect(isRedisUnavailable(error)).toBe(true);
    } finally {
      await r.call("CONFIG", ["SET", "maxmemory", "0"]);
    }
  });

  test("a Redis refusing writes since its snapshot failed (MISCONF) counts as unavailable, not as a bad command", async () => {
    // A redis-server of its own that snapshots to a directory, removed under it: BGSAVE fails,
    // and with stop-writes-on-bgsave-error (the default) every write is refused.
    const dir = mkdtempSync(join(tmpdir(), "portico-misconf-"));
    const port = await freePort();
    const argv = ["redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "3600 1"];
    const server = spawnProcess(`redis-misconf-${port}`, [...argv, "--appendonly", "no", "--dir", dir]);
    try {
      const { redis: r } = client(`redis://127.0.0.1:${port}`);
      expect(await r.start(5000)).toBe(true);
      rmSync(dir, { recursive: true, force: true });
      await r.call("BGSAVE", []);
      let error: unknown;
      await waitFor(
        "writes to be refused",
        async () => {
          error = (await timed(r.call("SET", ["lib:misconf", "x"]))).error;
          return error !== undefined;
        },
        { timeoutMs: 5000 },
      );
      expect((error as Error).message).toStartWith("MISCONF");
      expect(isRedisUnavailable(error)).toBe(true);
    } finally {
      await stopProcess(server, "SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a stopped Redis: the first call fails after the timeout, the calls queued behind it with it, later ones at once; back by itself", async () => {
    const { redis: r, changes, calls } = client();
    await r.start(3000);
    await r.call("SET", ["lib:kept", "before"]);
    redis.pause();
    try {
      const first = timed(r.call("GET", ["lib:kept"]));
      await Bun.sleep(TIMEOUT_MS / 2);
      // Five more queued behind it on the connection that stopped answering, half its timeout later.
      const behind = await Promise.all(Array.from({ length: 5 }, () => timed(r.call("GET", ["lib:kept"]))));
      const { ms, error } = await first;
      expect(error).toBeInstanceOf(RedisTimeoutError);
      // Against the configured timeout (a real redis-server process): never before it. After it
      // by the grace turn BoundedRedis gives a late timer (TIMEOUT_MS / 4) and however late this
      // process's timers run on a loaded machine (CI has seen 120 ms): the bound only has to be
      // far below any other timeout that could end the wait.
      expect(ms).toBeGreaterThanOrEqual(TIMEOUT_MS - 1);
      expect(ms).toBeLessThan(TIMEOUT_MS * 10);
      expect(behind).toHaveLength(5);
      for (const later of behind) {
        expect(isRedisUnavailable(later.error)).toBe(true);
        // They fail with the first one (its timeout drops the connection), not by their own timeout.
        expect(later.error).not.toBeInstanceOf(RedisTimeoutError);
      }
      expect(calls.filter((c) => c === "timeout")).toHaveLength(1);
      expect(r.isUp).toBe(false);
      expect(changes.at(-1)).toEqual({ up: false, reason: `no answer within ${TIMEOUT_MS} ms` });

      expect(await failureAtOnce(r.call("GET", ["lib:kept"]))).toBeInstanceOf(RedisUnavailableError);
    } finally {
      redis.resume();
    }
    await waitFor("the probe to find Redis again", () => r.isUp, { timeoutMs: 5000 });
    expect(changes.at(-1)).toMatchObject({ up: true });
    expect(await r.call("GET", ["lib:kept"])).toBe("before");
  });

  test("a stopped Redis while this process is busy: the call at the head times out, the ones queued behind it fail with it", async () => {
    const { redis: r, calls } = client();
    await r.start(3000);
    redis.pause();
    try {
      const first = timed(r.call("GET", ["lib:kept"]));
      await Bun.sleep(TIMEOUT_MS / 2);
      const behind = Promise.all(Array.from({ length: 5 }, () => timed(r.call("GET", ["lib:kept"]))));
      // The process is off the CPU past every call's deadline (a loaded machine, a long GC): all
      // their timers come due late, together; the head's is given its grace turn first.
      const spinUntil = performance.now() + TIMEOUT_MS;
      while (performance.now() < spinUntil) {}
      const { error } = await first;
      expect(error).toBeInstanceOf(RedisTimeoutError);
      for (const later of await behind) {
        expect(isRedisUnavailable(later.error)).toBe(true);
        expect(later.error).not.toBeInstanceOf(RedisTimeoutError);
      }
      expect(calls.filter((c) => c === "timeout")).toHaveLength(1);
      expect(r.isUp).toBe(false);
    } finally {
      redis.resume();
    }
    await waitFor("the probe to find Redis again", () => r.isUp, { timeoutMs: 5000 });
  });

  test("a killed Redis: calls fail at once; restarted on its port, the client is back by itself", async () => {
    const { redis: r, changes } = client();
    await r.start(3000);
    const pending = timed(r.call("BLPOP", ["lib:never", "10"])); // waiting on Redis when it dies
    await redis.kill();
    try {
      const died = await pending;
      expect(isRedisUnavailable(died.error)).toBe(true);
      await waitFor("the closed connection to mark Redis down", () => !r.isUp, { timeoutMs: 1000 });
      expect(changes.at(-1)).toEqual({ up: false, reason: "connection closed" });
      expect(await failureAtOnce(r.call("PING", []))).toBeInstanceOf(RedisUnavailableError);
      // The probe keeps failing meanwhile (connection refused): still down, nothing hangs.
      await Bun.sleep(200);
      expect(r.isUp).toBe(false);
    } finally {
      await redis.restart();
    }
    await waitFor("the probe to reconnect", () => r.isUp, { timeoutMs: 5000 });
    expect(await r.call("PING", [])).toBe("PONG");
  });

  test("started with no Redis there: start() gives up after its wait, and the probe connects once Redis appears", async () => {
    const port = await freePort();
    const { redis: r } = client(`redis://127.0.0.1:${port}`);
    const started = await timed(r.start(300));
    expect(r.isUp).toBe(false);
    // Against start()'s wait of 300 ms (it races every probe against it), with the margin a busy
    // 2-core machine needs. A hang would take 10 s or forever.
    expect(started.ms).toBeLessThan(3000);
    expect((await timed(r.call("PING", []))).error).toBeInstanceOf(RedisUnavailableError);
    const late = await TestRedis.start(port);
    await waitFor("the probe to connect", () => r.isUp, { timeoutMs: 5000 });
    expect(await r.call("PING", [])).toBe("PONG");
    await late.kill();
  });

  test("`check` decides what counts as up: a probe whose check fails keeps Redis down", async () => {
    let healthy = false;
    const { redis: r } = client(redis.url, {
      check: async (self) => {
        await self.send("PING", []);
        if (!healthy) throw new Error("not yet");
      },
    });
    expect(await r.start(200)).toBe(false);
    healthy = true;
    await waitFor("the probe to pass", () => r.isUp, { timeoutMs: 2000 });
  });

  test("unreachable from the start (no server, a refused password): said once at warn with the URL, then at debug", async () => {
    const port = await freePort();
    // The test server asks for a password for the length of the test; the connection that set it stays authenticated.
    const { redis: admin } = client();
    await admin.start(3000);
    await admin.call("CONFIG", ["SET", "requirepass", "the-password"]);
    try {
      for (const url of [`redis://127.0.0.1:${port}`, `redis://:not-the-password@127.0.0.1:${redis.port}`])
        await expectOneWarning(url);
    } finally {
      await admin.call("CONFIG", ["SET", "requirepass", ""]);
    }
  });

  /** A client of `url` that cannot connect logs one warning naming the (redacted) URL, then only debug lines. */
  async function expectOneWarning(url: string): Promise<void> {
    const lines: { level: string; msg: string }[] = [];
    const record = (level: string) => (_obj: object, msg: string) => lines.push({ level, msg });
    const log = { warn: record("warn"), debug: record("debug") } as unknown as BoundedRedisOptions["log"];
    const { redis: r } = client(url, { log, name: "test store" });
    await waitFor("three failed probes", () => lines.length >= 3, { timeoutMs: 5000 });
    expect(r.isUp).toBe(false);
    const warnings = lines.filter((l) => l.level === "warn");
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!.msg).toContain(`test store: redis at ${redactUrl(url)} is unavailable`);
    expect(warnings[0]!.msg).not.toContain("not-the-password");
    expect(lines.slice(1).every((l) => l.level === "debug")).toBe(true);
  }

  test("a closed client refuses every call at once", async () => {
    const { redis: r } = client();
    await r.start(3000);
    r.close();
    expect(r.isUp).toBe(false);
    expect(await failureAtOnce(r.call("PING", []))).toBeInstanceOf(RedisUnavailableError);
    expect(await failureAtOnce(r.send("PING", []))).toBeInstanceOf(RedisUnavailableError);
    expect(await r.start(100)).toBe(false);
  });
});

describe("redactUrl", () => {
  test("hides the password and keeps the rest", () => {
    expect(redactUrl("redis://user:s3cret@redis:6379/2")).toBe("redis://user:***@redis:6379/2");
    expect(redactUrl("redis://redis:6379")).toBe("redis://redis:6379");
    expect(redactUrl("not a url")).toBe("(unparsable REDIS_URL)");
  });
});
