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
 *   The write-back sends its last batches and calls `useBeforeUp` at once: requests go to Redis
 *   from then on, queued behind those batches on the one connection (so Redis decides them
 *   knowing of the batches, and no request falls between the last batch and Redis's return).
 * - A call that changes budgets (a request, a write-back batch) is numbered, and Redis logs the
 *   numbers of those it applied (the call log, one per gateway process, `callLogKey`) until the
 *   gateway has their answers. A call whose answer is lost (a timeout, a dropped connection) may
 *   have been applied or not, or may still be when a stopped Redis resumes: the write-back first
 *   sets a fence (fence.lua), after which Redis refuses every call numbered up to the last one
 *   sent, and learns which of them were applied. So the fallback counts such a call only when
 *   Redis did not: each is counted once.
 * - Every Redis call's latency and outcome goes to the limiter's stats (metrics).
 */
import type { Logger } from "../../../lib/log.ts";
import { BoundedRedis } from "../../../lib/redis.ts";
import type { GcraCheck, GcraOutcome, GcraResult } from "./gcra.ts";
import fenceScript from "./fence.lua" with { type: "text" };
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
  /** This process's call log (its fence: `<key>:fence`); unique per process. */
  callLogKey: string;
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
const FENCE_SCRIPT_SHA = new Bun.CryptoHasher("sha1").update(fenceScript).digest("hex");

/** A call sent whose answer was lost: Redis may have applied it (`fence` tells). */
export interface Unanswered {
  unanswered: number;
}

export class RedisGcra {
  readonly #redis: BoundedRedis;
  /** The call log and its fence (keys of every numbered call). */
  readonly #log: readonly [string, string];
  /** The number of the last call sent. */
  #seq = 0;
  /** Numbered calls without their answer yet, oldest first; a lost one stays until `fence`. */
  readonly #waiting = new Set<number>();
  readonly #lost = new Set<number>();
  /** Requests go to Redis before the probe marks it up: the write-back's last batches are sent. */
  #beforeUp = false;

  constructor(
    readonly url: string,
    opts: RedisGcraOptions,
  ) {
    const { log, stats } = opts;
    this.#log = [opts.callLogKey, `${opts.callLogKey}:fence`];
    this.#redis = new BoundedRedis(url, {
      timeoutMs: opts.timeoutMs,
      probeIntervalMs: opts.probeIntervalMs ?? 250,
      check: async () => {
        parseReply(await this.#evalsha([GCRA_SCRIPT_SHA, "1", opts.probeKey, "1", "1000000000"]), 1);
        await opts.beforeUp?.(this);
      },
      onCall: (ms, result) => stats.recordRedisCall(ms, result),
      onStateChange: (change) => {
        this.#beforeUp = false;
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
    return this.#redis.isUp || this.#beforeUp;
  }

  /**
   * Sends requests to Redis from now on, before the probe marks it up (the write-back, right after
   * sending its last batches), or stops that (a batch failed). A request that fails stops it too.
   */
  useBeforeUp(use: boolean): void {
    this.#beforeUp = use;
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
   * Checks every policy of one request in Redis. `null` when Redis is down: the caller decides by
   * its fallback; so it does when the call fails (slow, a dropped connection, an error), which
   * Redis may have applied all the same: `unanswered` names it.
   */
  async take(checks: readonly GcraCheck[]): Promise<GcraOutcome | Unanswered | null> {
    if (!this.isUp) return null;
    const n = checks.length;
    const args = this.#scriptArgs(GCRA_SCRIPT_SHA, n, 2);
    for (let i = 0; i < n; i++) {
      const c = checks[i]!;
      args[2 + i] = c.key;
      args[4 + n + 2 * i] = String(c.intervalUs);
      args[5 + n + 2 * i] = String(c.burst);
    }
    const seq = this.#numbered(args);
    try {
      const outcome = parseReply(await this.#evalsha(args), n);
      this.#waiting.delete(seq);
      return outcome;
    } catch (err) {
      this.#lost.add(seq);
      this.#beforeUp = false;
      this.#redis.markDown(err instanceof Error ? err.message : String(err));
      return { unanswered: seq };
    }
  }

  /**
   * Sends one batch of buckets the fallback decided to reconcile.lua, whether or not Redis is
   * marked up (it runs before it is). `ordered`: as EVAL, so that it runs before anything sent
   * after it (an EVALSHA answered NOSCRIPT would be sent again behind those). `fullInMs` resolves
   * with each bucket's time until full (0: full); when it rejects, `seq` names the call for `fence`.
   */
  writeBack(writebacks: readonly Writeback[], ordered = false): { seq: number; fullInMs: Promise<number[]> } {
    const n = writebacks.length;
    const args = this.#scriptArgs(RECONCILE_SCRIPT_SHA, n, 4);
    for (let i = 0; i < n; i++) {
      const w = writebacks[i]!;
      args[2 + i] = w.key;
      args[4 + n + 4 * i] = String(w.seedUs);
      args[5 + n + 4 * i] = String(w.advanceUs);
      args[6 + n + 4 * i] = String(w.intervalUs);
      args[7 + n + 4 * i] = String(w.burst);
    }
    const seq = this.#numbered(args);
    const reply = ordered ? this.#eval(args, RECONCILE_SCRIPT) : this.#evalsha(args, RECONCILE_SCRIPT);
    const fullInMs = reply.then(
      (r) => {
        const figures = parseFigures(r, n);
        this.#waiting.delete(seq);
        return figures;
      },
      (err) => {
        this.#lost.add(seq);
        throw err;
      },
    );
    return { seq, fullInMs };
  }

  /**
   * Settles the calls whose answers were lost: from now on Redis refuses every call numbered up
   * to the last one sent, and says which of them it had applied. Resolves with their numbers (of
   * those that admitted a request or wrote a batch back); at once when no answer was lost.
   */
  async fence(): Promise<Set<number>> {
    if (this.#lost.size === 0) return new Set();
    const lost = [...this.#lost];
    const reply = await this.#evalsha([FENCE_SCRIPT_SHA, "2", ...this.#log, String(this.#seq)], fenceScript);
    if (!Array.isArray(reply)) throw new Error(`unexpected reply from the fence script: ${JSON.stringify(reply)}`);
    for (const seq of lost) {
      this.#lost.delete(seq);
      this.#waiting.delete(seq);
    }
    return new Set(reply.map(Number));
  }

  /**
   * The arguments of a numbered script call on `n` buckets, with `perKey` fields each: sha,
   * numkeys, the buckets (args[2 + i]), the call log and its fence, the buckets' fields
   * (args[4 + n + perKey * i + j]), then the call's number and the number acknowledged
   * (#numbered). The caller fills in the buckets and their fields.
   */
  #scriptArgs(sha: string, n: number, perKey: number): string[] {
    const args = new Array<string>(6 + n * (perKey + 1));
    args[0] = sha;
    args[1] = String(n + 2);
    args[2 + n] = this.#log[0];
    args[3 + n] = this.#log[1];
    return args;
  }

  /** Numbers a call: its number and the number acknowledged go in the last two of `args`. */
  #numbered(args: string[]): number {
    const seq = ++this.#seq;
    this.#waiting.add(seq);
    // Every call before the oldest still waiting has its answer: Redis may drop those from the log.
    const acked = (this.#waiting.values().next().value as number) - 1;
    args[args.length - 2] = String(seq);
    args[args.length - 1] = String(acked);
    return seq;
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
      return this.#eval(args, source);
    }
  }

  /** EVALSHA's `args` sent as EVAL of `source` (the sha replaced by the script). */
  #eval(args: string[], source: string): Promise<unknown> {
    return this.#redis.send("EVAL", [source, ...args.slice(1)]);
  }

  close(): void {
    this.#beforeUp = false;
    this.#redis.close();
  }
}

function parseFigures(reply: unknown, buckets: number): number[] {
  if (!Array.isArray(reply) || reply.length !== buckets || reply.some((v) => !(Number(v) >= 0)))
    throw new Error(`unexpected reply from the write-back script: ${JSON.stringify(reply)}`);
  return reply.map(Number);
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
