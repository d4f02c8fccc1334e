/**
 * How many gateway replicas are live, for the `local` fallback: while Redis is unreachable each
 * gateway admits limit ÷ this number. Two sources, from the environment:
 *
 * - GATEWAY_PEERS: admin URLs of every gateway, this one included (`make dev` passes them). Each
 *   is probed on /readyz; the live ones are counted.
 * - GATEWAY_PEERS_DNS: a DNS name whose A/AAAA records are the replicas, e.g. the headless
 *   Service `gateway-headless` in Kubernetes, which lists only ready pods; the records are counted.
 *
 * Without either, or before the first count, the count is 1 (this gateway alone): a stricter
 * local limit is never the answer to not knowing.
 */
import { lookup } from "node:dns/promises";
import { envInt, envString } from "../../../lib/env.ts";
import type { Logger } from "../../../lib/log.ts";

export interface PeerCounterOptions {
  urls: string[];
  dnsName?: string;
  intervalMs?: number;
  timeoutMs?: number;
  log: Logger;
}

/** Where the gateway replicas are listed: GATEWAY_PEERS (admin URLs) and GATEWAY_PEERS_DNS (also read by the dashboard, admin/peers.ts). */
export function peerSourcesFromEnv(env: Record<string, string | undefined> = process.env): {
  urls: string[];
  dnsName: string | undefined;
} {
  const urls = envString("GATEWAY_PEERS", "", env)
    .split(",")
    .map((u) => u.trim().replace(/\/+$/, ""))
    .filter(Boolean);
  const dnsName = envString("GATEWAY_PEERS_DNS", "", env).trim() || undefined;
  return { urls, dnsName };
}

export class PeerCounter {
  #count = 1;
  readonly #timer: Timer | undefined;
  #refreshing: Promise<number> | undefined;

  constructor(private readonly opts: PeerCounterOptions) {
    if (this.hasSource) {
      this.#timer = setInterval(() => void this.refresh(), opts.intervalMs ?? 5000);
      this.#timer.unref();
    }
  }

  /** GATEWAY_PEERS, GATEWAY_PEERS_DNS, and GATEWAY_PEERS_INTERVAL_MS (how often to count; 5000). */
  static fromEnv(log: Logger, env: Record<string, string | undefined> = process.env): PeerCounter {
    const { urls, dnsName } = peerSourcesFromEnv(env);
    return new PeerCounter({
      urls,
      dnsName,
      log,
      intervalMs: envInt("GATEWAY_PEERS_INTERVAL_MS", 5000, { min: 100 }, env),
    });
  }

  get hasSource(): boolean {
    return this.opts.urls.length > 0 || this.opts.dnsName !== undefined;
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
    const timeoutMs = this.opts.timeoutMs ?? 1000;
    let live = 0;
    if (this.opts.urls.length > 0) {
      const answers = await Promise.all(
        this.opts.urls.map((url) =>
          fetch(`${url}/readyz`, { signal: AbortSignal.timeout(timeoutMs) }).then(
            (res) => res.status === 200,
            () => false,
          ),
        ),
      );
      live += answers.filter(Boolean).length;
    }
    if (this.opts.dnsName) {
      try {
        live += (await lookup(this.opts.dnsName, { all: true })).length;
      } catch (err) {
        this.opts.log.debug(
          { err: (err as Error).message, name: this.opts.dnsName },
          "rate limiter: cannot resolve the gateway peers",
        );
      }
    }
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
