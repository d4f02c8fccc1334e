/**
 * What the limiter counts, in plain numbers, for the metrics exporter to read (or to follow
 * through the callbacks): decisions per route, and the latency of every Redis call. Nothing here
 * depends on a metrics library.
 */

export type DecisionOutcome = "allowed" | "denied";
/** Who decided: Redis (shared budget), this process's memory (no Redis configured), or the fallback. */
export type DecisionSource = "redis" | "memory" | "fallback";
export type RedisCallResult = "ok" | "error" | "timeout";

export interface RouteDecisionCounts {
  allowed: number;
  denied: number;
  /** Decisions taken by the fallback while Redis was unreachable (also counted above). */
  fallback: number;
}

/** Upper bounds (ms) of the Redis latency buckets, Prometheus-style (cumulative on export). */
export const REDIS_LATENCY_BUCKETS_MS = [0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250] as const;

export class RateLimitStats {
  readonly decisions = new Map<string, RouteDecisionCounts>();
  readonly redis = {
    calls: 0,
    errors: 0,
    timeouts: 0,
    totalMs: 0,
    maxMs: 0,
    /** Non-cumulative counts per bucket of REDIS_LATENCY_BUCKETS_MS, plus one for slower calls. */
    buckets: new Array<number>(REDIS_LATENCY_BUCKETS_MS.length + 1).fill(0),
  };
  /** Times the limiter left Redis for the fallback. */
  fallbackEntries = 0;

  /** Called on every decision, after the counters are updated. */
  onDecision: ((route: string, outcome: DecisionOutcome, source: DecisionSource) => void) | undefined;
  /** Called after every Redis call (the rate-limit script and health probes alike). */
  onRedisCall: ((ms: number, result: RedisCallResult) => void) | undefined;

  recordDecision(route: string, outcome: DecisionOutcome, source: DecisionSource): void {
    let counts = this.decisions.get(route);
    if (!counts) this.decisions.set(route, (counts = { allowed: 0, denied: 0, fallback: 0 }));
    counts[outcome]++;
    if (source === "fallback") counts.fallback++;
    this.onDecision?.(route, outcome, source);
  }

  recordRedisCall(ms: number, result: RedisCallResult): void {
    const r = this.redis;
    r.calls++;
    if (result === "error") r.errors++;
    else if (result === "timeout") r.timeouts++;
    r.totalMs += ms;
    if (ms > r.maxMs) r.maxMs = ms;
    let i = 0;
    while (i < REDIS_LATENCY_BUCKETS_MS.length && ms > REDIS_LATENCY_BUCKETS_MS[i]!) i++;
    r.buckets[i]!++;
    this.onRedisCall?.(ms, result);
  }
}
