/**
 * GCRA — the same algorithm as gcra.lua, in this process's memory: the limiter of a gateway
 * without Redis, and of the `local` fallback while Redis is unreachable. The two must agree:
 * test/ratelimit-gcra.test.ts runs the same cases against both.
 */

/** One policy's part of a request: which bucket, and how it refills. */
export interface GcraCheck {
  key: string;
  /** µs between two earned requests. */
  intervalUs: number;
  burst: number;
}

/** What one policy says about a request (times in ms, rounded up). */
export interface GcraResult {
  remaining: number;
  resetMs: number;
  /** 0 when this policy admitted the request. */
  retryAfterMs: number;
}

export interface GcraOutcome {
  allowed: boolean;
  results: GcraResult[];
}

/** Floating-point division of whole multiples can land a hair under an integer. */
const EPSILON = 1e-9;

export class MemoryGcra {
  /** key → theoretical arrival time (µs on the monotonic clock). */
  readonly #tats = new Map<string, number>();
  readonly #sweeper: Timer;

  constructor(
    /** The clock in µs; a test may pass its own. */
    private readonly now: () => number = () => performance.now() * 1000,
    sweepIntervalMs = 10_000,
  ) {
    // Buckets whose TAT has passed are full again and carry no information: drop them so that
    // a stream of distinct clients (or forged API keys) cannot grow the map without bound.
    this.#sweeper = setInterval(() => this.sweep(), sweepIntervalMs);
    this.#sweeper.unref();
  }

  get size(): number {
    return this.#tats.size;
  }

  /** Checks every policy of one request and records it only if all of them admit it. */
  take(checks: readonly GcraCheck[]): GcraOutcome {
    const now = this.now();
    let allowed = true;
    const results: GcraResult[] = [];
    for (const { key, intervalUs, burst } of checks) {
      const tat = Math.max(this.#tats.get(key) ?? now, now);
      // now - (tat + interval - interval * burst), written so that an idle bucket (tat = now)
      // gives exactly interval * (burst - 1) whatever the rounding of large times.
      const ahead = now - tat + intervalUs * (burst - 1);
      if (ahead < 0) {
        allowed = false;
        results.push({ remaining: 0, resetMs: Math.ceil((tat - now) / 1000), retryAfterMs: Math.ceil(-ahead / 1000) });
      } else {
        results.push({
          remaining: Math.floor(ahead / intervalUs + EPSILON),
          resetMs: Math.ceil((tat + intervalUs - now) / 1000),
          retryAfterMs: 0,
        });
      }
    }
    for (let i = 0; i < checks.length; i++) {
      const { key, intervalUs } = checks[i]!;
      const result = results[i]!;
      if (result.retryAfterMs > 0) continue;
      const tat = Math.max(this.#tats.get(key) ?? now, now);
      if (allowed) {
        this.#tats.set(key, tat + intervalUs);
      } else {
        // Not recorded: the request is still available to this policy.
        result.remaining += 1;
        result.resetMs = Math.ceil((tat - now) / 1000);
      }
    }
    return { allowed, results };
  }

  /**
   * Sets a bucket to what another store said of it: full again in `fullInMs` (0: full now). The
   * `local` fallback thus starts from the shared figures this gateway last saw, not from full buckets.
   */
  remember(key: string, fullInMs: number): void {
    if (fullInMs > 0) this.#tats.set(key, this.now() + fullInMs * 1000);
    else this.#tats.delete(key);
  }

  /** A bucket's theoretical arrival time (µs on this store's clock), if it is not full. */
  peek(key: string): number | undefined {
    return this.#tats.get(key);
  }

  /** This store's clock, in µs. */
  nowUs(): number {
    return this.now();
  }

  sweep(): void {
    const now = this.now();
    for (const [key, tat] of this.#tats) if (tat <= now) this.#tats.delete(key);
  }

  close(): void {
    clearInterval(this.#sweeper);
  }
}
