/**
 * GCRA in Redis: one Lua script (gcra.lua) run with EVALSHA, shared by every gateway, and the
 * connection's health. The rules that keep a Redis outage from reaching a request:
 *
 * - Bun's client queues commands while disconnected and waits for the whole outage (DESIGN.md);
 *   it is created with `enableOfflineQueue: false`, so a call on a closed connection fails at once.
 * - Every call is bounded by `timeoutMs` (plus a quarter of it when this process was itself too
 *   busy to read the reply in time). A call that times out (a stopped or unreachable server
 *   keeps the TCP connection open) marks Redis down and closes the connection, which fails every
 *   other call waiting on it at once instead of each waiting for its own timeout.
 * - While down, requests never touch Redis: the caller decides them by the fallback. A probe runs
 *   the script every `probeIntervalMs` and marks Redis up again when it answers.
 * - The client's own reconnection is off (`autoReconnect: false`): it gives up after ~30 s and
 *   never retries afterwards, so the probe reconnects instead, for as long as the outage lasts.
 */
import { RedisClient } from "bun";
import type { Logger } from "../../../lib/log.ts";
import type { GcraCheck, GcraOutcome, GcraResult } from "./gcra.ts";
import script from "./gcra.lua" with { type: "text" };
import type { RateLimitStats } from "./stats.ts";

export interface RedisGcraOptions {
  timeoutMs: number;
  probeIntervalMs?: number;
  /** Key the probe writes (it expires after 1 ms). */
  probeKey: string;
  log: Logger;
  stats: RateLimitStats;
  /** Called when Redis becomes usable or stops being usable. */
  onChange?: (up: boolean) => void;
}

class RedisTimeoutError extends Error {
  override name = "RedisTimeoutError";
}

export const GCRA_SCRIPT = script;
export const GCRA_SCRIPT_SHA = new Bun.CryptoHasher("sha1").update(script).digest("hex");

export class RedisGcra {
  readonly #client: RedisClient;
  readonly #opts: Required<Omit<RedisGcraOptions, "onChange">> & Pick<RedisGcraOptions, "onChange">;
  readonly #probeTimer: Timer;
  #up = false;
  #closed = false;
  #probing: Promise<void> | undefined;
  #connecting: Promise<void> | undefined;
  #downSince = performance.now();

  constructor(
    readonly url: string,
    opts: RedisGcraOptions,
  ) {
    this.#opts = { probeIntervalMs: 250, ...opts };
    this.#client = new RedisClient(url, {
      enableOfflineQueue: false,
      autoReconnect: false,
      connectionTimeout: connectTimeoutMs(opts.timeoutMs),
    });
    this.#client.onclose = () => {
      if (!this.#closed) this.#markDown("connection closed");
    };
    this.#probeTimer = setInterval(() => void this.probe(), this.#opts.probeIntervalMs);
    this.#probeTimer.unref();
  }

  /** Whether requests are decided by Redis now. */
  get isUp(): boolean {
    return this.#up;
  }

  /** The URL without its password, for logs and the admin page. */
  get displayUrl(): string {
    return redactUrl(this.url);
  }

  /** Connects; resolves once Redis answered or `waitMs` passed (the probe keeps trying). */
  async start(waitMs: number): Promise<boolean> {
    const deadline = performance.now() + waitMs;
    while (!this.#up && !this.#closed && performance.now() < deadline) {
      await Promise.race([this.probe(), Bun.sleep(Math.max(0, deadline - performance.now()))]);
      if (!this.#up) await Bun.sleep(Math.min(50, Math.max(0, deadline - performance.now())));
    }
    return this.#up;
  }

  /**
   * Checks every policy of one request in Redis. `null` when Redis cannot decide now (down, slow,
   * or answering with an error): the caller decides by its fallback.
   */
  async take(checks: readonly GcraCheck[]): Promise<GcraOutcome | null> {
    if (!this.#up) return null;
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
      this.#markDown(describe(err));
      return null;
    }
  }

  /** Runs the script once on a throwaway key; marks Redis up when that works. */
  probe(): Promise<void> {
    if (this.#up || this.#closed) return Promise.resolve();
    this.#probing ??= this.#probeOnce().finally(() => (this.#probing = undefined));
    return this.#probing;
  }

  async #probeOnce(): Promise<void> {
    try {
      if (!this.#client.connected) {
        // One connect at a time: a second connect() while one is pending would only wait on it.
        this.#connecting ??= this.#client.connect().finally(() => (this.#connecting = undefined));
        await withTimeout(this.#connecting, connectTimeoutMs(this.#opts.timeoutMs));
      }
      parseReply(await this.#evalsha([GCRA_SCRIPT_SHA, "1", this.#opts.probeKey, "1", "1000000000"]), 1);
      this.#markUp();
    } catch (err) {
      this.#opts.log.debug({ err: describe(err) }, "rate limiter: redis probe failed");
    }
  }

  /** EVALSHA, loading the script with EVAL when Redis does not have it (restart, SCRIPT FLUSH). */
  async #evalsha(args: string[]): Promise<unknown> {
    try {
      return await this.#send("EVALSHA", args);
    } catch (err) {
      if (!(err instanceof Error) || !err.message.startsWith("NOSCRIPT")) throw err;
      return this.#send("EVAL", [GCRA_SCRIPT, ...args.slice(1)]);
    }
  }

  #send(command: string, args: string[]): Promise<unknown> {
    const start = performance.now();
    const { stats, timeoutMs } = this.#opts;
    return new Promise((resolve, reject) => {
      let timedOut = false;
      let graceGiven = false;
      const expire = () => {
        // A timer that fires late means this process was busy (GC, a burst of requests), and the
        // reply may be sitting unread in the socket: timers run before I/O in each loop turn. So
        // a late timer gives the reply one more short turn before Redis is called unreachable.
        const late = performance.now() - start - timeoutMs;
        if (!graceGiven && late > timeoutMs / 4) {
          graceGiven = true;
          timer = setTimeout(expire, Math.max(1, timeoutMs / 4));
          return;
        }
        timedOut = true;
        stats.recordRedisCall(performance.now() - start, "timeout");
        reject(new RedisTimeoutError(`no answer within ${timeoutMs} ms`));
        this.#markDown(`no answer within ${timeoutMs} ms`);
        // A connection that stopped answering holds every call queued behind this one: drop it.
        this.#client.close();
      };
      let timer = setTimeout(expire, timeoutMs);
      this.#client.send(command, args).then(
        (reply) => {
          clearTimeout(timer);
          if (timedOut) return;
          stats.recordRedisCall(performance.now() - start, "ok");
          resolve(reply);
        },
        (err) => {
          clearTimeout(timer);
          if (timedOut) return;
          stats.recordRedisCall(performance.now() - start, "error");
          reject(err);
        },
      );
    });
  }

  #markDown(reason: string): void {
    if (!this.#up || this.#closed) return;
    this.#up = false;
    this.#downSince = performance.now();
    this.#opts.stats.fallbackEntries++;
    this.#opts.log.warn({ redis: this.displayUrl, reason }, "rate limiter: redis unavailable, deciding by the fallback");
    this.#opts.onChange?.(false);
    // Try again almost at once (after the connection is dropped): a stall of a few milliseconds
    // should not keep the gateway on its fallback for a whole probe interval.
    setTimeout(() => void this.probe(), 10).unref();
  }

  #markUp(): void {
    if (this.#up || this.#closed) return;
    this.#up = true;
    this.#opts.log.info({ redis: this.displayUrl, after_ms: Math.round(performance.now() - this.#downSince) }, "rate limiter: using redis");
    this.#opts.onChange?.(true);
  }

  close(): void {
    this.#closed = true;
    this.#up = false;
    clearInterval(this.#probeTimer);
    this.#client.close();
  }
}

function parseReply(reply: unknown, policies: number): GcraOutcome {
  if (!Array.isArray(reply) || reply.length !== 1 + policies * 3) throw new Error(`unexpected reply from the rate-limit script: ${JSON.stringify(reply)}`);
  const results: GcraResult[] = new Array(policies);
  for (let i = 0; i < policies; i++) {
    results[i] = { remaining: Number(reply[1 + 3 * i]), resetMs: Number(reply[2 + 3 * i]), retryAfterMs: Number(reply[3 + 3 * i]) };
  }
  return { allowed: reply[0] === 1, results };
}

/** A connection to a live Redis is made in a millisecond or two, even across nodes. */
function connectTimeoutMs(callTimeoutMs: number): number {
  return Math.max(250, 2 * callTimeoutMs);
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: Timer | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new RedisTimeoutError(`no connection within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function describe(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(unparsable REDIS_URL)";
  }
}
