/**
 * A Redis connection whose calls never wait longer than a timeout: Bun's RedisClient with the
 * rules that keep a Redis outage from reaching a caller as a hang. The gateway's rate limiter
 * (gateway/src/ratelimit/redis-gcra.ts) and webapp's project store use it.
 *
 * - Bun's client queues commands while disconnected and waits for the whole outage (docs/design.md, "Known traps");
 *   it is created with `enableOfflineQueue: false`, so a call on a closed connection fails at once.
 * - Every call is bounded by `timeoutMs` (plus a quarter of it when this process was itself too
 *   busy to read the reply in time). A call that times out (a stopped or unreachable server
 *   keeps the TCP connection open) marks Redis down and closes the connection, which fails every
 *   other call waiting on it at once instead of each waiting for its own timeout.
 * - While down, `call` fails at once without touching Redis. A probe connects and runs `check`
 *   (PING by default) every `probeIntervalMs` and marks Redis up again when it answers.
 * - The client's own reconnection is off (`autoReconnect: false`): it gives up after ~30 s and
 *   never retries afterwards (measured on Bun 1.4.5), so the probe reconnects instead, for as
 *   long as the outage lasts.
 *
 * @example
 *   const redis = new BoundedRedis("redis://redis:6379", { timeoutMs: 500, onStateChange: (s) => log.info(s) });
 *   await redis.start(1000); // connected, or the probe keeps trying
 *   try {
 *     await redis.call("GET", ["key"]);
 *   } catch (err) {
 *     if (isRedisUnavailable(err)) return unavailable(); // down, slow, or the connection dropped
 *     throw err;
 *   }
 */
import { RedisClient } from "bun";
import type { Logger } from "./log.ts";

export type RedisCallResult = "ok" | "error" | "timeout";

/** Redis became usable (after `downMs` without it), or stopped being usable (and why). */
export type RedisStateChange = { up: true; downMs: number } | { up: false; reason: string };

export interface BoundedRedisOptions {
  /** Bound on every call, in ms; a connection attempt gets twice as long (at least 250 ms). */
  timeoutMs: number;
  /** How often a down Redis is retried (ms). */
  probeIntervalMs?: number;
  /** What proves Redis usable again, run by the probe on a connected client (use `send`); PING by default. */
  check?: (redis: BoundedRedis) => Promise<unknown>;
  /** After every call sent: its latency and how it ended (metrics). */
  onCall?: (ms: number, result: RedisCallResult) => void;
  onStateChange?: (change: RedisStateChange) => void;
  /**
   * Failed probes are logged here at debug level, as "<name>: redis probe failed" — but the first
   * one of an outage nobody reported (Redis never reachable since the start, or down again after
   * onStateChange said it was up and then a probe alone found it down) at warn, with the reason.
   */
  log?: Logger;
  name?: string;
}

/** The call was not sent: Redis is down (the probe is on it) or the connection was closed for good. */
export class RedisUnavailableError extends Error {
  override name = "RedisUnavailableError";
}

export class RedisTimeoutError extends Error {
  override name = "RedisTimeoutError";
}

/**
 * Server errors that say "not now" rather than "wrong command": still loading its data, busy with
 * a script, a read-only replica, out of memory under its maxmemory policy, refusing writes since
 * its last snapshot to disk failed (MISCONF, stop-writes-on-bgsave-error).
 * https://redis.io/docs/latest/develop/reference/protocol-spec/#simple-errors
 */
const TRANSIENT_SERVER_ERROR = /^(LOADING|BUSY|MASTERDOWN|READONLY|OOM|MISCONF|TRYAGAIN|CLUSTERDOWN|NOREPLICAS)\b/;

/** Whether a failed call means "Redis cannot serve now" (retry later), not a bug in the command. */
export function isRedisUnavailable(err: unknown): boolean {
  if (err instanceof RedisUnavailableError || err instanceof RedisTimeoutError) return true;
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  // Bun: "Connection closed", "Connection has failed", "… offline queue is disabled".
  if (typeof code === "string" && code.startsWith("ERR_REDIS_CONNECTION")) return true;
  return code === "ERR_REDIS_SERVER_ERROR" && TRANSIENT_SERVER_ERROR.test(err.message);
}

/**
 * What a caller needs of a Redis connection: BoundedRedis (one server), or SentinelRedis
 * (./redis-sentinel.ts: whichever server the Sentinels name master).
 */
export interface RedisConnection {
  /** Whether calls go to Redis now. */
  readonly isUp: boolean;
  /** Where calls go, without the password, for logs. */
  readonly displayUrl: string;
  /** One command, bounded by the timeout; fails at once with RedisUnavailableError while Redis is down. */
  call(command: string, args: string[]): Promise<unknown>;
  /** Tries to (re)connect now rather than at the next probe. */
  probe(): Promise<void>;
  close(): void;
}

export class BoundedRedis implements RedisConnection {
  readonly #client: RedisClient;
  readonly #timeoutMs: number;
  readonly #check: (redis: BoundedRedis) => Promise<unknown>;
  readonly #opts: BoundedRedisOptions;
  readonly #probeTimer: Timer;
  #up = false;
  /** The current outage has been told: by onStateChange (markDown), or by a probe's warning. */
  #downTold = false;
  #closed = false;
  #probing: Promise<void> | undefined;
  #connecting: Promise<void> | undefined;
  #downSince = performance.now();
  /** Calls waiting for their reply, oldest first: only the oldest may time out (send()). */
  readonly #pending = new Set<object>();
  /** Counts the connections dropped by a timeout: a call outlived by its connection did not time out. */
  #dropped = 0;

  /** Throws when `url` is not a Redis URL Bun accepts (redis://, rediss://, valkey://, …). */
  constructor(
    readonly url: string,
    opts: BoundedRedisOptions,
  ) {
    this.#opts = opts;
    this.#timeoutMs = opts.timeoutMs;
    this.#check = opts.check ?? ((redis) => redis.send("PING", []));
    this.#client = new RedisClient(url, {
      enableOfflineQueue: false,
      autoReconnect: false,
      connectionTimeout: connectTimeoutMs(opts.timeoutMs),
    });
    this.#client.onclose = () => {
      if (!this.#closed) this.markDown("connection closed");
    };
    this.#probeTimer = setInterval(() => void this.probe(), opts.probeIntervalMs ?? 250);
    this.#probeTimer.unref();
  }

  /** Whether calls go to Redis now. */
  get isUp(): boolean {
    return this.#up;
  }

  /** The URL without its password, for logs and status pages. */
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

  /** One command, bounded by the timeout; fails at once with RedisUnavailableError while Redis is down. */
  call(command: string, args: string[]): Promise<unknown> {
    if (!this.#up)
      return Promise.reject(
        new RedisUnavailableError(this.#closed ? "redis client closed" : `redis at ${this.displayUrl} is unavailable`),
      );
    return this.send(command, args);
  }

  /**
   * One command, bounded by the timeout, whether or not Redis is up (for `check`, and for callers
   * that gate on `isUp` themselves). A timeout marks Redis down and drops the connection.
   */
  send(command: string, args: string[]): Promise<unknown> {
    if (this.#closed) return Promise.reject(new RedisUnavailableError("redis client closed"));
    const start = performance.now();
    const timeoutMs = this.#timeoutMs;
    const onCall = this.#opts.onCall;
    const dropped = this.#dropped;
    const pending = this.#pending;
    const call = {};
    pending.add(call);
    return new Promise((resolve, reject) => {
      let timedOut = false;
      let graceGiven = false;
      const expire = () => {
        const now = performance.now();
        // An earlier call's timeout dropped the connection this call was queued on: it fails with
        // that one, it did not wait out a timeout of its own (the connection's own rejection,
        // should it come later, finds the call settled).
        if (dropped !== this.#dropped) {
          timedOut = true;
          pending.delete(call);
          onCall?.(now - start, "error");
          reject(new RedisUnavailableError("the connection was dropped: a call queued before this one timed out"));
          return;
        }
        // Replies come in order: while an older call waits, this one's reply cannot have come
        // either, and the older one's timeout decides for both. (When this process was busy,
        // every call's timer comes due at once; the head is the one that times out.)
        if (pending.values().next().value !== call) {
          timer = setTimeout(expire, Math.max(1, timeoutMs / 4));
          return;
        }
        // A timer that fires late means this process was busy (GC, a burst of requests), and the
        // reply may be sitting unread in the socket: timers run before I/O in each loop turn. So
        // a late timer gives the reply one more short turn before Redis is called unreachable.
        const late = now - start - timeoutMs;
        if (!graceGiven && late > timeoutMs / 4) {
          graceGiven = true;
          timer = setTimeout(expire, Math.max(1, timeoutMs / 4));
          return;
        }
        timedOut = true;
        pending.delete(call);
        onCall?.(performance.now() - start, "timeout");
        reject(new RedisTimeoutError(`no answer from redis within ${timeoutMs} ms`));
        this.markDown(`no answer within ${timeoutMs} ms`);
        // A connection that stopped answering holds every call queued behind this one: drop it.
        this.#dropped++;
        this.#client.close();
      };
      let timer = setTimeout(expire, timeoutMs);
      this.#client.send(command, args).then(
        (reply) => {
          clearTimeout(timer);
          pending.delete(call);
          if (timedOut) return;
          onCall?.(performance.now() - start, "ok");
          resolve(reply);
        },
        (err) => {
          clearTimeout(timer);
          pending.delete(call);
          if (timedOut) return;
          onCall?.(performance.now() - start, "error");
          reject(err);
        },
      );
    });
  }

  /** Connects if needed and runs `check`; marks Redis up when that works. One probe at a time. */
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
        await withTimeout(this.#connecting, connectTimeoutMs(this.#timeoutMs));
      }
      await this.#check(this);
      this.#markUp();
    } catch (err) {
      const name = this.#opts.name ?? "redis";
      const reason = describe(err);
      if (this.#downTold) this.#opts.log?.debug({ err: reason }, `${name}: redis probe failed`);
      else {
        // Without this a Redis unreachable from the start (a wrong host, port or password in the
        // URL: Bun's client reports a refused AUTH as "Connection closed") was said only at debug.
        this.#downTold = true;
        this.#opts.log?.warn(
          { err: reason, redis: this.displayUrl },
          `${name}: redis at ${this.displayUrl} is unavailable (${reason}); retrying — check the URL's host, port and password`,
        );
      }
    }
  }

  /** Stops sending calls to Redis until the probe succeeds (also for a caller that saw a bad reply). */
  markDown(reason: string): void {
    if (!this.#up || this.#closed) return;
    this.#up = false;
    this.#downTold = true;
    this.#downSince = performance.now();
    this.#opts.onStateChange?.({ up: false, reason });
    // Try again almost at once (after the connection is dropped): a stall of a few milliseconds
    // should not keep callers away from Redis for a whole probe interval.
    setTimeout(() => void this.probe(), 10).unref();
  }

  #markUp(): void {
    if (this.#up || this.#closed) return;
    this.#up = true;
    this.#downTold = false;
    this.#opts.onStateChange?.({ up: true, downMs: performance.now() - this.#downSince });
  }

  close(): void {
    this.#closed = true;
    this.#up = false;
    clearInterval(this.#probeTimer);
    this.#client.close();
  }
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

/** `url` with its password replaced by `***`, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "(unparsable REDIS_URL)";
  }
}
