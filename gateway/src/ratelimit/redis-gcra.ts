/**
 * GCRA in Redis: one Lua script (gcra.lua) run with EVALSHA, shared by every gateway. The
 * connection (lib/redis.ts) bounds every call by `timeoutMs`, drops a connection that stops
 * answering, and probes a down Redis back; here:
 *
 * - While Redis is down, requests never touch it: `take` answers `null` and the caller decides by
 *   the fallback. Any failed call (timeout, closed connection, an error reply) counts as down.
 * - The probe runs the script itself on a throwaway key, so "up" also means "the script loads";
 *   then `beforeUp` (the limiter's write-back of what its fallback admitted meanwhile), so that
 *   no request is decided by Redis before Redis knows of those. Redis stays down until both work.
 * - Every Redis call's latency and outcome goes to the limiter's stats (metrics).
 */
import type { Logger } from "../../../lib/log.ts";
import { BoundedRedis } from "../../../lib/redis.ts";
import type { GcraCheck, GcraOutcome, GcraResult } from "./gcra.ts";
import script from "./gcra.lua" with { type: "text" };
import reconcileScript from "./reconcile.lua" with { type: "text" };
import type { Writeback } from "./fallback-ledger.ts";
import type { RateLimitStats } from "./stats.ts";

export { redactUrl } from "../../../lib/redis.ts";

export interface RedisGcraOptions {
  timeoutMs: number;
  probeIntervalMs?: number;
  /** Key the probe writes (it expires after 1 ms). */
  probeKey: string;
  log: Logger;
  stats: RateLimitStats;
  /** Called when Redis becomes usable or stops being usable. */
  onChange?: (up: boolean) => void;
  /** Runs on a reachable Redis before it is used again; a rejection keeps it down (the probe retries). */
  beforeUp?: (redis: RedisGcra) => Promise<void>;
}

export const GCRA_SCRIPT = script;
export const GCRA_SCRIPT_SHA = new Bun.CryptoHasher("sha1").update(script).digest("hex");
export const RECONCILE_SCRIPT = reconcileScript;
export const RECONCILE_SCRIPT_SHA = new Bun.CryptoHasher("sha1").update(reconcileScript).digest("hex");

export class RedisGcra {
  readonly #redis: BoundedRedis;

  constructor(
    readonly url: string,
    opts: RedisGcraOptions,
  ) {
    const { log, stats } = opts;
    this.#redis = new BoundedRedis(url, {
      timeoutMs: opts.timeoutMs,
      probeIntervalMs: opts.probeIntervalMs ?? 250,
      check: async () => {
        parseReply(await this.#evalsha([GCRA_SCRIPT_SHA, "1", opts.probeKey, "1", "1000000000"]), 1);
        await opts.beforeUp?.(this);
      },
      onCall: (ms, result) => stats.recordRedisCall(ms, result),
      onStateChange: (change) => {
        if (change.up) {
          log.info({ redis: this.displayUrl, after_ms: Math.round(change.downMs) }, "rate limiter: using redis");
        } else {
          stats.fallbackEntries++;
          log.warn(
            { redis: this.displayUrl, reason: change.reason },
            "rate limiter: redis unavailable, deciding by the fallback",
          );
        }
        opts.onChange?.(change.up);
      },
      log,
      name: "rate limiter",
    });
  }

  /** Whether requests are decided by Redis now. */
  get isUp(): boolean {
    return this.#redis.isUp;
  }

  /** The URL without its password, for logs and the admin page. */
  get displayUrl(): string {
    return this.#redis.displayUrl;
  }

  /** Connects; resolves once Redis answered or `waitMs` passed (the probe keeps trying). */
  start(waitMs: number): Promise<boolean> {
    return this.#redis.start(waitMs);
  }

  /**
   * Checks every policy of one request in Redis. `null` when Redis cannot decide now (down, slow,
   * or answering with an error): the caller decides by its fallback.
   */
  async take(checks: readonly GcraCheck[]): Promise<GcraOutcome | null> {
    if (!this.#redis.isUp) return null;
    const args = new Array<string>(2 + checks.length * 3);
    args[0] = GCRA_SCRIPT_SHA;
    args[1] = String(checks.length);
    for (let i = 0; i < checks.length; i++) {
      const c = checks[i]!;
      args[2 + i] = c.key;
      args[2 + checks.length + 2 * i] = String(c.intervalUs);
      args[3 + checks.length + 2 * i] = String(c.burst);
    }
    try {
      return parseReply(await this.#evalsha(args), checks.length);
    } catch (err) {
      this.#redis.markDown(err instanceof Error ? err.message : String(err));
      return null;
    }
  }

  /**
   * Writes back buckets the fallback decided (reconcile.lua), whether or not Redis is marked up
   * (it runs before it is). Resolves with the number of buckets written.
   */
  async writeBack(writebacks: readonly Writeback[]): Promise<number> {
    if (writebacks.length === 0) return 0;
    const args = new Array<string>(2 + writebacks.length * 5);
    args[0] = RECONCILE_SCRIPT_SHA;
    args[1] = String(writebacks.length);
    const argv = 2 + writebacks.length;
    writebacks.forEach((w, i) => {
      args[2 + i] = w.key;
      args[argv + 4 * i] = String(w.seedUs);
      args[argv + 4 * i + 1] = String(w.advanceUs);
      args[argv + 4 * i + 2] = String(w.intervalUs);
      args[argv + 4 * i + 3] = String(w.burst);
    });
    return Number(await this.#evalsha(args, RECONCILE_SCRIPT));
  }

  /** Runs the script once on a throwaway key; marks Redis up when that works. */
  probe(): Promise<void> {
    return this.#redis.probe();
  }

  /** EVALSHA, loading the script with EVAL when Redis does not have it (restart, SCRIPT FLUSH). */
  async #evalsha(args: string[], source = GCRA_SCRIPT): Promise<unknown> {
    try {
      return await this.#redis.send("EVALSHA", args);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith("NOSCRIPT")) throw err;
      return this.#redis.send("EVAL", [source, ...args.slice(1)]);
    }
  }

  close(): void {
    this.#redis.close();
  }
}

function parseReply(reply: unknown, policies: number): GcraOutcome {
  if (!Array.isArray(reply) || reply.length !== 1 + policies * 3)
    throw new Error(`unexpected reply from the rate-limit script: ${JSON.stringify(reply)}`);
  const results: GcraResult[] = new Array(policies);
  for (let i = 0; i < policies; i++) {
    results[i] = {
      remaining: Number(reply[1 + 3 * i]),
      resetMs: Number(reply[2 + 3 * i]),
      retryAfterMs: Number(reply[3 + 3 * i]),
    };
  }
  return { allowed: reply[0] === 1, results };
}
