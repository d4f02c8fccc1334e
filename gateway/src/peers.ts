/**
 * The gateway replicas of this tier, from settings.ts, for the two things that need them: the
 * rate limiter's `local` fallback counts the live ones (ratelimit/peers.ts), and the dashboard
 * merges their snapshots (dashboard/tier.ts).
 *
 * - GATEWAY_PEERS: admin URLs of every gateway, this one included (`make dev` passes them). Each
 *   entry is one replica; `|` separates the addresses it may answer at, e.g. the base and spare
 *   admin ports a rolling replace moves it between: at most one of them answers on a steady
 *   stack, and the other is idle, not failing. A replica none of whose addresses answers is down.
 * - GATEWAY_PEERS_DNS: a name whose A/AAAA records are the replicas — the headless Service
 *   `gateway-headless` in Kubernetes, which lists only ready pods — each reached on this
 *   gateway's own admin port (every pod of the Deployment has the same). The records are looked
 *   up on every call, so pods come and go with the Service's ready endpoints.
 *
 * Without either, the tier is this gateway alone.
 */
import { lookup } from "node:dns/promises";
import { isIPv6 } from "node:net";

export interface PeerDirectoryOptions {
  /** One entry per replica, `|` between its alternative addresses (GATEWAY_PEERS's syntax, already split on commas). */
  urls?: readonly string[];
  dnsName?: string;
  /** Port of the peers' admin listeners when found by DNS (this gateway's ADMIN_PORT). */
  adminPort?: number;
  resolve?: (name: string) => Promise<string[]>;
}

export class PeerDirectory {
  /** The replicas listed by URL, each with the addresses it may answer at. */
  readonly slots: readonly (readonly string[])[];
  readonly #dnsName: string | undefined;
  readonly #adminPort: number;
  readonly #resolve: (name: string) => Promise<string[]>;

  constructor(opts: PeerDirectoryOptions = {}) {
    this.slots = (opts.urls ?? [])
      .map((entry) =>
        entry
          .split("|")
          .map((u) => u.trim().replace(/\/+$/, ""))
          .filter(Boolean),
      )
      .filter((slot) => slot.length > 0);
    this.#dnsName = opts.dnsName;
    this.#adminPort = opts.adminPort ?? 9901;
    this.#resolve = opts.resolve ?? resolveAll;
  }

  get isConfigured(): boolean {
    return this.slots.length > 0 || this.#dnsName !== undefined;
  }

  /** Every address a replica may answer at now (no trailing slash), in a stable order, and why DNS found none. */
  async list(): Promise<{ urls: string[]; error: string | null }> {
    const urls = new Set(this.slots.flat());
    const found = await this.#lookup();
    for (const url of found.urls) urls.add(url);
    return { urls: [...urls].sort(), error: found.error };
  }

  /**
   * How many gateway processes serve now: the listed addresses whose /readyz answers 200 (a
   * draining replica answers 503), plus the DNS records not listed already (a headless Service
   * lists only ready pods). Addresses, not slots: while a rolling replace has both a replica and
   * its successor ready on one slot's two addresses, both take traffic (they share the public
   * port), and the `local` fallback's share divides the limit among everyone who admits.
   */
  async countLive(timeoutMs: number): Promise<{ live: number; error: string | null }> {
    const listed = new Set(this.slots.flat());
    const probes = [...listed].map((url) =>
      fetch(`${url}/readyz`, { signal: AbortSignal.timeout(timeoutMs) }).then(
        (res) => res.status === 200,
        () => false,
      ),
    );
    const [answers, found] = await Promise.all([Promise.all(probes), this.#lookup()]);
    const unlisted = new Set(found.urls.filter((url) => !listed.has(url)));
    return { live: answers.filter(Boolean).length + unlisted.size, error: found.error };
  }

  async #lookup(): Promise<{ urls: string[]; error: string | null }> {
    if (!this.#dnsName) return { urls: [], error: null };
    try {
      const addresses = await this.#resolve(this.#dnsName);
      return {
        urls: addresses.map((a) => `http://${isIPv6(a) ? `[${a}]` : a}:${this.#adminPort}`),
        error: null,
      };
    } catch (err) {
      return { urls: [], error: `cannot resolve ${this.#dnsName}: ${(err as Error).message}` };
    }
  }
}

async function resolveAll(name: string): Promise<string[]> {
  return (await lookup(name, { all: true })).map((a) => a.address);
}
