/**
 * The rate limiter the request path asks: which bucket each policy of a route uses for this
 * request (client IP, API-key header, or one global bucket), and who decides:
 *
 *   REDIS_URL set, Redis answering   → Redis: one budget shared by every gateway
 *   REDIS_URL set, Redis unreachable → the configured fallback, until Redis answers again:
 *       local  (default) this gateway admits limit ÷ live replicas, from memory, and writes
 *              back what it admitted before Redis decides again (fallback-ledger.ts)
 *       open   every request is admitted (only RateLimit-Policy is sent)
 *       closed every request to a limited route gets 503 + Retry-After: 1
 *   no REDIS_URL                     → memory: each gateway process has its own budget
 *
 * @example
 *   const limiter = new RateLimiter({ redisUrl: settings.redisUrl, settings: config.rateLimit, log, peers });
 *   const decision = await limiter.check(route.name, route.rateLimit, ctx.clientIp, req.headers);
 *   if (!decision.allowed) return decision.response(ctx.id);
 */
import pino from "pino";
import type { Logger } from "../../../lib/log.ts";
import { RateLimitDecision } from "./decision.ts";
import { type GcraCheck, type GcraOutcome, MemoryGcra } from "./gcra.ts";
import { PeerCounter } from "./peers.ts";
import { DEFAULT_RATE_LIMIT_SETTINGS, type RateLimitSettings, type RouteRateLimit } from "./policy.ts";
import { RedisGcra, redactUrl } from "./redis-gcra.ts";
import { FallbackLedger } from "./fallback-ledger.ts";
import { type DecisionSource, RateLimitStats } from "./stats.ts";

export type LimiterMode = "memory" | "redis" | "fallback";

export interface RateLimiterOptions {
  settings?: RateLimitSettings;
  /** Without it the limiter runs in memory (one budget per gateway process). */
  redisUrl?: string;
  log?: Logger;
  stats?: RateLimitStats;
  /** Live gateway replicas for the `local` fallback (main.ts counts GATEWAY_PEERS / GATEWAY_PEERS_DNS); this gateway alone by default. */
  peers?: PeerCounter;
  /** How often a down Redis is retried (ms). */
  probeIntervalMs?: number;
}

export interface LimiterStatus {
  mode: LimiterMode;
  fallback: RateLimitSettings["fallback"];
  redis: string | null;
  /** The divisor the `local` fallback uses now. */
  replicas: number;
}

/** Buckets per write-back call: a long outage with many clients is written back in several. */
const WRITEBACK_BATCH = 500;

/** Characters of the base64 SHA-256 of an API key kept in its bucket name (132 bits). */
const API_KEY_HASH_CHARS = 22;

export class RateLimiter {
  readonly stats: RateLimitStats;
  #settings: RateLimitSettings;
  readonly #log: Logger;
  readonly #redis: RedisGcra | undefined;
  /**
   * Every bucket without Redis. With Redis: the `local` fallback's buckets, which follow what
   * Redis last said of each client this gateway served, so an outage (or a brief stall) starts
   * from the shared figures: a client that had used up its budget does not get a fresh one.
   */
  readonly #memory = new MemoryGcra();
  /** What the `local` fallback admitted per bucket, written back when Redis returns. */
  readonly #ledger = new FallbackLedger(this.#memory);
  readonly #peers: PeerCounter;

  constructor(opts: RateLimiterOptions = {}) {
    this.#settings = opts.settings ?? DEFAULT_RATE_LIMIT_SETTINGS;
    this.#log = opts.log ?? pino({ level: "silent" });
    this.stats = opts.stats ?? new RateLimitStats();
    // Only the `local` fallback divides by the replicas; without Redis there is no fallback.
    this.#peers = opts.peers ?? new PeerCounter({ log: this.#log });
    if (opts.redisUrl) this.#redis = this.#connect(opts.redisUrl, opts.probeIntervalMs);
  }

  #connect(url: string, probeIntervalMs: number | undefined): RedisGcra {
    try {
      return new RedisGcra(url, {
        timeoutMs: this.#settings.redisTimeoutMs,
        probeKey: `${this.#settings.keyPrefix}probe`,
        log: this.#log,
        stats: this.stats,
        ...(probeIntervalMs ? { probeIntervalMs } : {}),
        onChange: (up) => {
          if (!up) void this.#peers.refresh();
        },
        beforeUp: (redis) => this.#writeBack(redis),
      });
    } catch (err) {
      throw new Error(`REDIS_URL=${redactUrl(url)}: ${(err as Error).message}`);
    }
  }

  /**
   * Connects to Redis (when configured) and counts the peers, waiting at most `waitMs`, so that
   * the first requests already share the budget; past that the fallback decides until Redis answers.
   */
  async start(waitMs = 1000): Promise<void> {
    await Promise.all([this.#redis?.start(waitMs), Promise.race([this.#peers.refresh(), Bun.sleep(waitMs)])]);
    if (this.#redis) {
      this.#log.info(
        { redis: this.#redis.displayUrl, mode: this.mode(), fallback: this.#settings.fallback },
        "rate limiter: shared budget in redis",
      );
    } else {
      this.#log.info("rate limiter: in memory (no REDIS_URL); each gateway process keeps its own budget");
    }
  }

  /** Who decides now: Redis, memory (no Redis configured), or the fallback (Redis unreachable). */
  mode(): LimiterMode {
    if (!this.#redis) return "memory";
    return this.#redis.isUp ? "redis" : "fallback";
  }

  status(): LimiterStatus {
    return {
      mode: this.mode(),
      fallback: this.#settings.fallback,
      redis: this.#redis?.displayUrl ?? null,
      replicas: this.#replicas(),
    };
  }

  /** Settings from a reloaded config; the Redis timeout keeps its start-up value. */
  reconfigure(settings: RateLimitSettings): void {
    this.#settings = settings;
  }

  /** Decides one request to a limited route. */
  check(
    route: string,
    limits: RouteRateLimit,
    clientIp: string,
    headers: Headers,
  ): RateLimitDecision | Promise<RateLimitDecision> {
    if (!this.#redis)
      return this.#decide(route, limits, this.#memory.take(this.#checks(route, limits, clientIp, headers)), "memory");
    if (!this.#redis.isUp) return this.#fallback(route, limits, clientIp, headers);
    const checks = this.#checks(route, limits, clientIp, headers);
    return this.#redis.take(checks).then((outcome) => {
      if (!outcome) return this.#fallback(route, limits, clientIp, headers);
      // Time until full is the same for the shared bucket and for its 1/N local share
      // (burst ÷ N requests earned at rate ÷ N), so it carries over as it is.
      if (this.#settings.fallback === "local")
        for (let i = 0; i < checks.length; i++) this.#memory.remember(checks[i]!.key, outcome.results[i]!.resetMs);
      return this.#decide(route, limits, outcome, "redis");
    });
  }

  #fallback(route: string, limits: RouteRateLimit, clientIp: string, headers: Headers): RateLimitDecision {
    switch (this.#settings.fallback) {
      case "open":
        this.stats.recordDecision(route, "allowed", "fallback");
        return new RateLimitDecision(route, limits, "allowed", null);
      case "closed":
        this.stats.recordDecision(route, "denied", "fallback");
        return new RateLimitDecision(route, limits, "unavailable", null);
      case "local": {
        const share = this.#replicas();
        const shared = this.#checks(route, limits, clientIp, headers);
        if (this.#redis) this.#ledger.record(shared, share);
        return this.#decide(route, limits, this.#memory.take(shared.map((c) => shareOf(c, share))), "fallback");
      }
    }
  }

  /**
   * Writes back every bucket the fallback decided, before Redis decides again (RedisGcra's
   * `beforeUp`). The last batch is taken and written with nothing else in between, and Redis is
   * marked up right after it resolves, so no fallback decision falls between the two.
   */
  async #writeBack(redis: RedisGcra): Promise<void> {
    let buckets = 0;
    let written = 0;
    while (this.#ledger.size > 0) {
      const { writebacks, restore } = this.#ledger.take(WRITEBACK_BATCH);
      try {
        written += await redis.writeBack(writebacks);
        buckets += writebacks.length;
      } catch (err) {
        restore();
        throw err;
      }
    }
    if (buckets > 0 || this.#ledger.dropped > 0) {
      this.#log.info(
        { buckets, written, not_recorded: this.#ledger.dropped },
        "rate limiter: wrote back what the fallback admitted during the outage",
      );
      this.#ledger.dropped = 0;
    }
  }

  #decide(route: string, limits: RouteRateLimit, outcome: GcraOutcome, source: DecisionSource): RateLimitDecision {
    this.stats.recordDecision(route, outcome.allowed ? "allowed" : "denied", source);
    return new RateLimitDecision(route, limits, outcome.allowed ? "allowed" : "denied", outcome.results);
  }

  #replicas(): number {
    const fixed = this.#settings.replicas;
    return fixed === "auto" ? this.#peers.count : fixed;
  }

  /** One bucket per policy, with the policy's full rate and burst. */
  #checks(route: string, limits: RouteRateLimit, clientIp: string, headers: Headers): GcraCheck[] {
    const prefix = this.#settings.keyPrefix;
    const checks: GcraCheck[] = new Array(limits.policies.length);
    for (let i = 0; i < limits.policies.length; i++) {
      const p = limits.policies[i]!;
      let client: string;
      switch (p.key.type) {
        case "global":
          client = "*";
          break;
        case "ip":
          client = `ip:${clientIp}`;
          break;
        case "header": {
          // Keyed by a hash: API keys are credentials and do not belong in Redis key names.
          // A request without the header is keyed by its IP, so leaving it out escapes nothing.
          const value = headers.get(p.key.header);
          client = value ? `h:${Bun.SHA256.hash(value, "base64").slice(0, API_KEY_HASH_CHARS)}` : `ip:${clientIp}`;
          break;
        }
      }
      checks[i] = {
        key: `${prefix}${route}:${p.name}:${client}`,
        intervalUs: p.intervalUs,
        burst: p.burst,
      };
    }
    return checks;
  }

  close(): void {
    this.#redis?.close();
    this.#memory.close();
    this.#peers.close();
  }
}

/** A policy's 1/`share` part: rate ÷ share and burst ÷ share (at least 1). */
function shareOf(check: GcraCheck, share: number): GcraCheck {
  if (share === 1) return check;
  return { key: check.key, intervalUs: check.intervalUs * share, burst: Math.max(1, Math.floor(check.burst / share)) };
}

let sharedMemoryLimiter: RateLimiter | undefined;

/** An in-memory limiter for a Gateway built without one (tests, tools): limits still apply. */
export function defaultRateLimiter(): RateLimiter {
  sharedMemoryLimiter ??= new RateLimiter();
  return sharedMemoryLimiter;
}
