/**
 * Latency histograms for the dashboard: fixed log-scale buckets, four per doubling (each bound
 * 19% above the last), from 50 µs to ~66 min — past the longest timeout a route may have (1 h), so
 * no request the gateway waits for lands in an open-ended bucket. Fixed bounds make histograms from different seconds
 * and different gateways add up bucket by bucket, so p50/p99 of the whole tier are computed from
 * the merged counts — percentiles themselves cannot be averaged.
 */

export const LATENCY_BUCKETS = 107;
const MIN_MS = 0.05;
const STEPS_PER_DOUBLING = 4;

const STEP_1 = 2 ** (1 / STEPS_PER_DOUBLING);
const STEP_2 = 2 ** (2 / STEPS_PER_DOUBLING);
const STEP_3 = 2 ** (3 / STEPS_PER_DOUBLING);
/** Latencies from here on go to the last bucket (and keep `v | 0` below within 31 bits). */
const MAX_UNITS = 2 ** (LATENCY_BUCKETS / STEPS_PER_DOUBLING);

/**
 * The bucket of a latency: bucket i holds (upper(i-1), upper(i)]; bucket 0 everything ≤ 50 µs.
 * That is ceil(4·log2(ms / 50 µs)), computed from the integer log2 and three comparisons:
 * it runs once per request, and Math.log2 alone costs ~25 ns here (ceil(4·log2 r) for r in [1, 2)).
 */
export function latencyBucket(ms: number): number {
  const v = ms / MIN_MS;
  if (!(v > 1)) return 0;
  if (v >= MAX_UNITS) return LATENCY_BUCKETS - 1;
  const e = 31 - Math.clz32(v | 0);
  const r = v / 2 ** e;
  const i = STEPS_PER_DOUBLING * e + (r === 1 ? 0 : r <= STEP_1 ? 1 : r <= STEP_2 ? 2 : r <= STEP_3 ? 3 : 4);
  return i < LATENCY_BUCKETS ? i : LATENCY_BUCKETS - 1;
}

function bucketUpperMs(i: number): number {
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
