/**
 * What the `local` fallback admitted while Redis was unreachable, per bucket, so that it can be
 * written back to Redis before Redis decides again (reconcile.lua). Without it, the requests each
 * gateway admitted from its share during the outage are unknown to Redis, which then hands out a
 * whole fresh budget: up to twice the limit over an outage and its recovery.
 *
 * The local buckets are GCRA buckets with rate ÷ N and burst ÷ N (N live gateways), seeded from
 * what Redis last said of each client (MemoryGcra.remember). For each bucket the ledger keeps:
 *   seed     the local TAT at the first local decision: what Redis last said, in shared time
 *   advance  what the requests admitted since cost in shared time: one interval each, whatever N
 *            (a request costs N × interval of a 1/N bucket, and interval of the shared one), less
 *            what this gateway's share earned back meanwhile: elapsed ÷ N, once the seed is spent
 * Charged request by request at the N in force, so that a change of N mid-outage (a replica
 * gone, or counted late) neither over- nor under-counts; with one N throughout the advance is
 * (local TAT − seed TAT) ÷ N. Summed over the gateways the advances bound what a shared bucket
 * would owe (an idle gateway's share earns nothing for the others, so the bound errs on the
 * strict side), and the script caps the result at an empty bucket.
 *
 * Each request is counted in exactly one place:
 * - a request whose Redis call went unanswered may have been applied by Redis all the same: its
 *   charge waits for Redis's word (`unanswered`, then `settle` with what the fence says, see
 *   redis-gcra.ts); so does a write-back batch whose answer was lost;
 * - a bucket written back leaves the ledger and its local bucket takes Redis's figure
 *   (`writtenBack`), so a later outage starts from what Redis has, not from the debt that was
 *   written back already; an entry opened again for it during the same write-back has no seed
 *   (Redis has it, and the local bucket's TAT holds the local debt until the answer comes).
 */
import type { GcraCheck, MemoryGcra } from "./gcra.ts";

interface Entry {
  /** Local TAT (µs) before the first local decision; undefined: the bucket was full, or Redis has it. */
  seedTat: number | undefined;
  /** The shared policy's interval (µs) and burst. */
  intervalUs: number;
  burst: number;
  /** Shared time (µs) the admitted requests still cost, as of `atUs`. */
  advanceUs: number;
  atUs: number;
  /** The divisor in force: this gateway's share earns back elapsed ÷ share. */
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
  /** Calls Redis may have applied without answering, and what to do if it did not. */
  readonly #unanswered = new Map<number, () => void>();
  /** Buckets taken to be written back since the outage ended: Redis has their seed (or gets it). */
  readonly #taken = new Set<string>();
  /** Buckets not recorded because the ledger was full (reported in the log). */
  dropped = 0;

  constructor(private readonly memory: MemoryGcra) {}

  /** Buckets that may owe something. */
  get size(): number {
    return this.#entries.size;
  }

  /** Before the fallback decides `shared` (the full policies) with its 1/`share` buckets. */
  record(shared: readonly GcraCheck[], share: number): void {
    const now = this.memory.nowUs();
    for (const c of shared) {
      const entry = this.#entries.get(c.key);
      if (entry) {
        age(entry, now);
        entry.share = share;
        continue;
      }
      if (this.#entries.size >= MAX_LEDGER_KEYS && !this.#prune()) {
        this.dropped++;
        continue;
      }
      this.#entries.set(c.key, {
        seedTat: this.#taken.has(c.key) ? undefined : this.memory.peek(c.key),
        intervalUs: c.intervalUs,
        burst: c.burst,
        advanceUs: 0,
        atUs: now,
        share,
      });
    }
  }

  /** A request the fallback admitted (after `record`): one interval of each bucket, in shared time. */
  charge(shared: readonly GcraCheck[]): void {
    const now = this.memory.nowUs();
    for (const c of shared) {
      const entry = this.#entries.get(c.key);
      if (!entry) continue; // not recorded: the ledger was full
      age(entry, now);
      entry.advanceUs += c.intervalUs;
    }
  }

  /** Call `seq` went unanswered: `ifNotApplied` runs at `settle` if Redis did not apply it. */
  unanswered(seq: number, ifNotApplied: () => void): void {
    this.#unanswered.set(seq, ifNotApplied);
  }

  /** Redis's word on the unanswered calls (RedisGcra.fence): the numbers of those it applied. */
  settle(applied: ReadonlySet<number>): void {
    for (const [seq, ifNotApplied] of this.#unanswered) if (!applied.has(seq)) ifNotApplied();
    this.#unanswered.clear();
  }

  /**
   * Takes up to `max` buckets out of the ledger with what to write back for each; `restore` puts
   * them back (a write-back that was not applied). Buckets that owe nothing are dropped.
   */
  take(max: number): { writebacks: Writeback[]; restore: () => void } {
    const now = this.memory.nowUs();
    const taken: [string, Entry][] = [];
    const writebacks: Writeback[] = [];
    for (const [key, e] of this.#entries) {
      if (taken.length >= max) break;
      taken.push([key, e]);
      age(e, now);
      const seedUs = Math.max(0, (e.seedTat ?? now) - now);
      if (seedUs > 0 || e.advanceUs > 0)
        writebacks.push({
          key,
          seedUs: Math.round(seedUs),
          advanceUs: Math.round(e.advanceUs),
          intervalUs: e.intervalUs,
          burst: e.burst,
        });
    }
    for (const [key] of taken) {
      this.#entries.delete(key);
      this.#taken.add(key);
    }
    return {
      writebacks,
      restore: () => {
        for (const [key, e] of taken) this.#restore(key, e);
      },
    };
  }

  /**
   * `writebacks` were applied; `fullInMs`: what Redis says of each now. The local buckets take
   * those figures, except those decided locally again since (written again later, and set then).
   */
  writtenBack(writebacks: readonly Writeback[], fullInMs: readonly number[]): void {
    writebacks.forEach(({ key }, i) => {
      if (!this.#entries.has(key)) this.memory.remember(key, fullInMs[i]!);
    });
  }

  /** The write-back is over (Redis decides again): the next outage's seeds are Redis's figures. */
  endWriteBack(): void {
    this.#taken.clear();
  }

  /** Puts back an entry taken out; the older seed wins (it predates anything recorded since), the advances add up. */
  #restore(key: string, e: Entry): void {
    const since = this.#entries.get(key);
    if (!since) {
      this.#entries.set(key, e);
      return;
    }
    age(e, since.atUs);
    since.advanceUs += e.advanceUs;
    since.seedTat = e.seedTat;
  }

  /** Drops the buckets that owe nothing any more; whether that made room. */
  #prune(): boolean {
    const now = this.memory.nowUs();
    for (const [key, e] of this.#entries) {
      age(e, now);
      if ((e.seedTat ?? now) <= now && e.advanceUs === 0) this.#entries.delete(key);
    }
    return this.#entries.size < MAX_LEDGER_KEYS;
  }
}

/** Brings an entry's advance to `now`: once its seed is spent, its share earns back elapsed ÷ share. */
function age(e: Entry, now: number): void {
  const from = Math.max(e.atUs, e.seedTat ?? e.atUs);
  if (now > from) e.advanceUs = Math.max(0, e.advanceUs - (now - from) / e.share);
  e.atUs = Math.max(e.atUs, now);
}
