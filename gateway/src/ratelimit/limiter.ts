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
import type { Identity } from "../auth/guard.ts";

/** What a route's guard verified for a request (RouteAuth): the identity, and the headers the route takes a credential in. */
export interface VerifiedAuth {
  identity: Identity;
  credentialHeaders: readonly string[];
}

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
  /** Redis answers again and the fallback's admissions are being written back (mode may already say redis). */
  writingBack: boolean;
}

/** Buckets per write-back call: a long outage with many clients is written back in several. */
const WRITEBACK_BATCH = 500;
/**
 * Write-back rounds beyond those the ledger's size called for at the start: the fallback keeps
 * deciding (and recording) during each round, so "until the ledger is empty" may never come.
 */
const EXTRA_WRITEBACK_ROUNDS = 2;

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
  /** Inside #writeBack: Redis answers again, and the last batches' answers may still be on the way. */
  #writingBack = false;

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
        callLogKey: `${this.#settings.keyPrefix}calls:${crypto.randomUUID()}`,
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
      writingBack: this.#writingBack,
    };
  }

  /** Settings from a reloaded config; the Redis timeout keeps its start-up value. */
  reconfigure(settings: RateLimitSettings): void {
    this.#settings = settings;
  }

  /**
   * Decides one request to a limited route. `auth`: what the route's guard verified, and the
   * headers the route takes a credential in. A policy keyed on one of those keys by the credential
   * the guard read (the Bearer token however its scheme was spelled, the API key), and a
   * credential header the guard did not verify for this request counts as absent (keyed by the
   * client address): a made-up value beside the checked credential is not a fresh budget.
   */
  check(
    route: string,
    limits: RouteRateLimit,
    clientIp: string,
    headers: Headers,
    auth?: VerifiedAuth,
  ): RateLimitDecision | Promise<RateLimitDecision> {
    const checks = this.#checks(route, limits, clientIp, headers, auth);
    if (!this.#redis) return this.#decide(route, limits, this.#memory.take(checks), "memory");
    if (!this.#redis.isUp) return this.#fallback(route, limits, checks);
    return this.#redis.take(checks).then((outcome) => {
      if (!outcome || "unanswered" in outcome) return this.#fallback(route, limits, checks, outcome?.unanswered);
      // Time until full is the same for the shared bucket and for its 1/N local share
      // (burst ÷ N requests earned at rate ÷ N), so it carries over as it is.
      if (this.#settings.fallback === "local")
        for (let i = 0; i < checks.length; i++) this.#memory.remember(checks[i]!.key, outcome.results[i]!.resetMs);
      return this.#decide(route, limits, outcome, "redis");
    });
  }

  /** `unanswered`: the number of this request's Redis call, which Redis may have applied all the same. */
  #fallback(route: string, limits: RouteRateLimit, shared: GcraCheck[], unanswered?: number): RateLimitDecision {
    switch (this.#settings.fallback) {
      case "open":
        this.stats.recordDecision(route, "allowed", "fallback");
        return new RateLimitDecision(route, limits, "allowed", null);
      case "closed":
        this.stats.recordDecision(route, "denied", "fallback");
        return new RateLimitDecision(route, limits, "unavailable", null);
      case "local": {
        const share = this.#replicas();
        const ledger = this.#ledger;
        ledger.record(shared, share);
        const outcome = this.#memory.take(shared.map((c) => shareOf(c, share)));
        if (outcome.allowed) {
          // Counted by Redis or by the ledger, not both: an unanswered call waits for the fence.
          if (unanswered === undefined) ledger.charge(shared);
          else ledger.unanswered(unanswered, () => ledger.charge(shared));
        }
        return this.#decide(route, limits, outcome, "fallback");
      }
    }
  }

  /**
   * Writes back every bucket the fallback decided, before Redis decides again (RedisGcra's
   * `beforeUp`):
   * 1. the calls whose answers were lost are settled (RedisGcra.fence): each is counted by Redis,
   *    which applied it, or by the ledger, never both;
   * 2. batches while requests are still decided by the fallback (which records as it goes): as
   *    many as the ledger held at the start, and a few more for what arrives meanwhile — not
   *    "until empty", which steady traffic puts off for ever;
   * 3. the rest, sent at once, and requests sent to Redis right behind them (useBeforeUp), so
   *    that none is decided by the fallback after the last batch is taken. Should one of these
   *    fail, Redis stays down and the next probe starts over.
   */
  async #writeBack(redis: RedisGcra): Promise<void> {
    this.#writingBack = true;
    try {
      await this.#writeBackAll(redis);
    } finally {
      this.#writingBack = false;
    }
  }

  async #writeBackAll(redis: RedisGcra): Promise<void> {
    const ledger = this.#ledger;
    ledger.settle(await redis.fence());
    let buckets = 0;
    let written = 0;
    const count = (figures: number[]) => {
      buckets += figures.length;
      written += figures.filter((ms) => ms > 0).length;
    };
    for (let rounds = Math.ceil(ledger.size / WRITEBACK_BATCH) + EXTRA_WRITEBACK_ROUNDS; rounds > 0; rounds--) {
      if (ledger.size <= WRITEBACK_BATCH) break;
      count(await this.#writeBatch(redis, false));
    }
    const last: Promise<number[]>[] = [];
    while (ledger.size > 0) last.push(this.#writeBatch(redis, true));
    redis.useBeforeUp(true);
    const results = await Promise.allSettled(last);
    const failed = results.find((r) => r.status === "rejected");
    if (failed) {
      redis.useBeforeUp(false);
      throw failed.reason;
    }
    for (const r of results) if (r.status === "fulfilled") count(r.value);
    // A request sent to Redis meanwhile failed (and stopped useBeforeUp): its fence comes first.
    if (!redis.isUp) throw new Error("a request failed while the write-back finished");
    ledger.endWriteBack();
    if (buckets > 0 || ledger.dropped > 0) {
      this.#log.info(
        { buckets, written, not_recorded: ledger.dropped },
        "rate limiter: wrote back what the fallback admitted during the outage",
      );
      ledger.dropped = 0;
    }
  }

  /**
   * Takes one batch out of the ledger and sends it (before any await, so that the final batches
   * go out together); resolves with what Redis says of each bucket now. A batch whose answer is
   * lost goes back into the ledger only if the fence says Redis did not apply it.
   */
  async #writeBatch(redis: RedisGcra, ordered: boolean): Promise<number[]> {
    const { writebacks, restore } = this.#ledger.take(WRITEBACK_BATCH);
    if (writebacks.length === 0) return [];
    const { seq, fullInMs } = redis.writeBack(writebacks, ordered);
    try {
      const figures = await fullInMs;
      this.#ledger.writtenBack(writebacks, figures);
      return figures;
    } catch (err) {
      this.#ledger.unanswered(seq, restore);
      throw err;
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
  #checks(
    route: string,
    limits: RouteRateLimit,
    clientIp: string,
    headers: Headers,
    auth: VerifiedAuth | undefined,
  ): GcraCheck[] {
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
          const header = p.key.header;
          const value = auth?.credentialHeaders.includes(header)
            ? auth.identity.header === header
              ? auth.identity.credential
              : null
            : headers.get(header);
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
