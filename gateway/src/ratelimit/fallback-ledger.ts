/**
 * What the `local` fallback admitted while Redis was unreachable, per bucket, so that it can be
 * written back to Redis before Redis decides again (reconcile.lua). Without it, the requests each
 * gateway admitted from its share during the outage are unknown to Redis, which then hands out a
 * whole fresh budget: up to twice the limit over an outage and its recovery.
 *
 * The local buckets are GCRA buckets with rate ÷ N and burst ÷ N (N live gateways), seeded from
 * what Redis last said of each client (MemoryGcra.remember). For each bucket the ledger keeps the
 * local TAT at the first local decision (the seed) and the share N; at recovery:
 *   debt     = local TAT − now                 (local time still owed: seed + admissions)
 *   seed     = seed TAT − now                  (the part Redis already knew, in shared time)
 *   advance  = (debt − seed) ÷ N               (the local admissions, in shared time)
 * since one local request costs N × interval locally and interval in the shared bucket. Summed
 * over the gateways the advances bound what a shared bucket would owe (an idle gateway's share
 * earns nothing for the others, so the bound errs on the strict side), and the script caps the
 * result at an empty bucket.
 */
import type { GcraCheck, MemoryGcra } from "./gcra.ts";

interface Entry {
  /** Local TAT (µs) before the first local decision; undefined: the bucket was full. */
  seedTat: number | undefined;
  /** The shared policy's interval (µs) and burst. */
  intervalUs: number;
  burst: number;
  /** The divisor in force when the bucket was first decided locally. */
  share: number;
}

/** One bucket's write-back: the arguments of reconcile.lua. */
export interface Writeback {
  key: string;
  seedUs: number;
  advanceUs: number;
  intervalUs: number;
  burst: number;
}

/** Buckets remembered at most: a flood of distinct clients during an outage must not grow memory without bound. */
export const MAX_LEDGER_KEYS = 100_000;

export class FallbackLedger {
  #entries = new Map<string, Entry>();
  /** Buckets not recorded because the ledger was full (reported in the log). */
  dropped = 0;

  constructor(private readonly memory: MemoryGcra) {}

  get size(): number {
    return this.#entries.size;
  }

  /** Before the fallback decides `shared` (the full policies) with its 1/`share` buckets. */
  record(shared: readonly GcraCheck[], share: number): void {
    for (const c of shared) {
      if (this.#entries.has(c.key)) continue;
      if (this.#entries.size >= MAX_LEDGER_KEYS && !this.#prune()) {
        this.dropped++;
        continue;
      }
      this.#entries.set(c.key, { seedTat: this.memory.peek(c.key), intervalUs: c.intervalUs, burst: c.burst, share });
    }
  }

  /**
   * Takes up to `max` buckets out of the ledger with what to write back for each; `restore` puts
   * them back (a write-back that failed). Buckets that owe nothing are dropped.
   */
  take(max: number): { writebacks: Writeback[]; restore: () => void } {
    const now = this.memory.nowUs();
    const taken: [string, Entry][] = [];
    const writebacks: Writeback[] = [];
    for (const [key, e] of this.#entries) {
      if (taken.length >= max) break;
      taken.push([key, e]);
      const debt = Math.max(0, (this.memory.peek(key) ?? now) - now);
      const seedUs = Math.max(0, (e.seedTat ?? now) - now);
      const advanceUs = Math.max(0, debt - seedUs) / e.share;
      if (seedUs > 0 || advanceUs > 0)
        writebacks.push({
          key,
          seedUs: Math.round(seedUs),
          advanceUs: Math.round(advanceUs),
          intervalUs: e.intervalUs,
          burst: e.burst,
        });
    }
    for (const [key] of taken) this.#entries.delete(key);
    return {
      writebacks,
      // The older entry wins: its seed predates (and its debt covers) anything recorded since.
      restore: () => {
        for (const [key, e] of taken) this.#entries.set(key, e);
      },
    };
  }

  clear(): void {
    this.#entries.clear();
  }

  /** Drops the buckets that owe nothing any more; whether that made room. */
  #prune(): boolean {
    const now = this.memory.nowUs();
    for (const [key, e] of this.#entries)
      if ((e.seedTat ?? now) <= now && (this.memory.peek(key) ?? now) <= now) this.#entries.delete(key);
    return this.#entries.size < MAX_LEDGER_KEYS;
  }
}
