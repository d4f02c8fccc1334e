/**
 * Latencies of one canary step, for its p99: a histogram with buckets 5 % apart from 0.05 ms to
 * ~1 h (log scale, ~370 counters), so a percentile is within 5 % of the true value whatever the
 * number of samples, in constant memory and O(1) per sample. (A step holds thousands of answers;
 * keeping them all to sort would cost memory and time on the request path.)
 */
const MIN_MS = 0.05;
const GROWTH = Math.log(1.05);
const BUCKETS = Math.ceil(Math.log(3_600_000 / MIN_MS) / GROWTH) + 1;

export class LatencyWindow {
  readonly #counts = new Uint32Array(BUCKETS);
  #total = 0;

  add(ms: number): void {
    const index = ms <= MIN_MS ? 0 : Math.min(BUCKETS - 1, Math.ceil(Math.log(ms / MIN_MS) / GROWTH));
    this.#counts[index]!++;
    this.#total++;
  }

  get count(): number {
    return this.#total;
  }

  /** The latency below which `q` (0–1) of the samples fall: the upper edge of its bucket; 0 when empty. */
  percentile(q: number): number {
    if (this.#total === 0) return 0;
    const rank = Math.ceil(q * this.#total);
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.#counts[i]!;
      if (seen >= rank) return MIN_MS * Math.exp(i * GROWTH);
    }
    return MIN_MS * Math.exp((BUCKETS - 1) * GROWTH);
  }
}
