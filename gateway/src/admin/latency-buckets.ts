/**
 * Latency histograms for the dashboard: fixed log-scale buckets, four per doubling (each bound
 * 19% above the last), from 50 µs to ~44 s. Fixed bounds make histograms from different seconds
 * and different gateways add up bucket by bucket, so p50/p99 of the whole tier are computed from
 * the merged counts — percentiles themselves cannot be averaged.
 */

export const LATENCY_BUCKETS = 80;
const MIN_MS = 0.05;
const STEPS_PER_DOUBLING = 4;

/** The bucket of a latency: bucket i holds (upper(i-1), upper(i)]; bucket 0 everything ≤ 50 µs. */
export function latencyBucket(ms: number): number {
  if (!(ms > MIN_MS)) return 0;
  const i = Math.ceil(Math.log2(ms / MIN_MS) * STEPS_PER_DOUBLING);
  return i < LATENCY_BUCKETS ? i : LATENCY_BUCKETS - 1;
}

export function bucketUpperMs(i: number): number {
  return MIN_MS * 2 ** (i / STEPS_PER_DOUBLING);
}

/** The q-quantile (0..1) of a histogram in ms, interpolated inside its bucket; null when empty. */
export function quantileMs(counts: ArrayLike<number>, q: number): number | null {
  let total = 0;
  for (let i = 0; i < counts.length; i++) total += counts[i]!;
  if (total === 0) return null;
  const rank = q * total;
  let seen = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i]!;
    if (c === 0) continue;
    if (seen + c >= rank) {
      const lower = i === 0 ? 0 : bucketUpperMs(i - 1);
      const upper = bucketUpperMs(i);
      return round3(lower + ((upper - lower) * (rank - seen)) / c);
    }
    seen += c;
  }
  return round3(bucketUpperMs(counts.length - 1));
}

/** A histogram as [bucket, count, bucket, count, …] of its non-empty buckets (what goes over the wire). */
export function sparse(counts: ArrayLike<number>, offset = 0, length = counts.length - offset): number[] {
  const out: number[] = [];
  for (let i = 0; i < length; i++) {
    const c = counts[offset + i]!;
    if (c > 0) out.push(i, c);
  }
  return out;
}

/** Adds a sparse histogram into dense counts. Bucket numbers out of range are ignored (bad peer data). */
export function addSparse(into: Float64Array, pairs: readonly number[]): void {
  for (let k = 0; k + 1 < pairs.length; k += 2) {
    const i = pairs[k]!;
    const c = pairs[k + 1]!;
    if (Number.isInteger(i) && i >= 0 && i < into.length && c > 0) into[i]! += c;
  }
}

export function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}
