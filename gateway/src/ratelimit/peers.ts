/**
 * How many gateway replicas are live, for the `local` fallback: while Redis is unreachable each
 * gateway admits limit ÷ this number. The replicas come from the gateway's one peer directory
 * (../peers.ts: GATEWAY_PEERS, whose addresses answering /readyz are counted, and
 * GATEWAY_PEERS_DNS, whose records are), re-counted every GATEWAY_PEERS_INTERVAL_MS.
 *
 * Without a source, or before the first count, the count is 1 (this gateway alone): a stricter
 * local limit is never the answer to not knowing. A count that fails (GATEWAY_PEERS_DNS does not
 * resolve: a DNS outage, often the same incident as the Redis one) keeps the last count instead:
 * falling to 1 would let every gateway admit the whole limit, N times the budget in all.
 */
import type { Logger } from "../../../lib/log.ts";
import type { PeerDirectory } from "../peers.ts";

export interface PeerCounterOptions {
  /** Where the replicas are listed; none: this gateway alone. */
  directory?: PeerDirectory;
  /** How often to count (ms; 5000). */
  intervalMs?: number;
  timeoutMs?: number;
  log: Logger;
}

export class PeerCounter {
  #count = 1;
  readonly #timer: Timer | undefined;
  #refreshing: Promise<number> | undefined;
  #failing = false;

  constructor(private readonly opts: PeerCounterOptions) {
    if (this.hasSource) {
      this.#timer = setInterval(() => void this.refresh(), opts.intervalMs ?? 5000);
      this.#timer.unref();
    }
  }

  get hasSource(): boolean {
    return this.opts.directory?.isConfigured === true;
  }

  /** The last count (at least 1). */
  get count(): number {
    return this.#count;
  }

  /** Counts now; concurrent callers share one round of probes. */
  refresh(): Promise<number> {
    if (!this.hasSource) return Promise.resolve(this.#count);
    this.#refreshing ??= this.#countNow().finally(() => (this.#refreshing = undefined));
    return this.#refreshing;
  }

  async #countNow(): Promise<number> {
    const { live, error } = await this.opts.directory!.countLive(this.opts.timeoutMs ?? 1000);
    if (error) {
      // Logged once per failing stretch, not every interval.
      if (!this.#failing)
        this.opts.log.warn(
          { err: error, peers: this.#count },
          "rate limiter: cannot count the gateway peers; keeping the last count",
        );
      this.#failing = true;
      return this.#count;
    }
    this.#failing = false;
    const count = Math.max(1, live);
    if (count !== this.#count) {
      this.opts.log.info({ peers: count, previous: this.#count }, "rate limiter: live gateway replicas changed");
      this.#count = count;
    }
    return count;
  }

  close(): void {
    clearInterval(this.#timer);
  }
}
