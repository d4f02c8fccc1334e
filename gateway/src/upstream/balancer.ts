/**
 * Choosing the endpoint for one request. Power of two choices (P2C): draw two endpoints at
 * random and keep the cheaper by `Endpoint.cost` (latency EWMA × in-flight). O(1) per pick and no
 * herding: unlike a global least-loaded choice, P2C never sends every request of a burst to the
 * same momentarily idle replica. Round robin is kept for comparison and benchmarks.
 *
 * A retry passes the endpoints already tried, so it lands somewhere else.
 */
import type { Endpoint } from "./endpoint.ts";

export type Algorithm = "p2c" | "round-robin";

/** One endpoint must cost under half of the other to be preferred: closer costs are noise (a cold connection, a GC pause). */
const CLEARLY_CHEAPER = 0.5;

function usable(e: Endpoint, skipA: Endpoint | undefined, skipB: Endpoint | undefined): boolean {
  return e.available && e !== skipA && e !== skipB;
}

export function pickP2C(
  endpoints: readonly Endpoint[],
  now: number,
  skipA?: Endpoint,
  skipB?: Endpoint,
): Endpoint | undefined {
  const n = endpoints.length;
  if (n === 0) return undefined;
  if (n === 1) {
    const only = endpoints[0]!;
    return usable(only, skipA, skipB) ? only : undefined;
  }
  const i = (Math.random() * n) | 0;
  let j = (Math.random() * (n - 1)) | 0;
  if (j >= i) j++;
  const a = endpoints[i]!;
  const b = endpoints[j]!;
  const aOk = usable(a, skipA, skipB);
  const bOk = usable(b, skipA, skipB);
  // `a` is a random draw: keeping it unless `b` is clearly cheaper spreads traffic evenly over
  // equally good endpoints even one request at a time, instead of chasing EWMA noise.
  if (aOk && bOk) return b.cost(now) < a.cost(now) * CLEARLY_CHEAPER ? b : a;
  if (aOk) return a;
  if (bOk) return b;
  return cheapest(endpoints, i, now, skipA, skipB);
}

/** Both draws were unusable: scan the rest (only when part of the set is out). */
function cheapest(
  endpoints: readonly Endpoint[],
  start: number,
  now: number,
  skipA?: Endpoint,
  skipB?: Endpoint,
): Endpoint | undefined {
  let best: Endpoint | undefined;
  let bestCost = Infinity;
  for (let k = 0; k < endpoints.length; k++) {
    const e = endpoints[(start + k) % endpoints.length]!;
    if (!usable(e, skipA, skipB)) continue;
    const cost = e.cost(now);
    if (cost < bestCost) [best, bestCost] = [e, cost];
  }
  return best;
}

export class RoundRobin {
  #next = 0;

  pick(endpoints: readonly Endpoint[], skipA?: Endpoint, skipB?: Endpoint): Endpoint | undefined {
    const n = endpoints.length;
    for (let k = 0; k < n; k++) {
      const e = endpoints[this.#next++ % n]!;
      if (usable(e, skipA, skipB)) return e;
    }
    return undefined;
  }
}
