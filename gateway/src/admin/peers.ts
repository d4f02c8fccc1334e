/**
 * The gateway replicas whose snapshots the dashboard merges, from the same settings the rate
 * limiter counts them with (ratelimit/peers.ts):
 *
 * - GATEWAY_PEERS: admin URLs of every gateway, this one included (`make dev` passes them). A
 *   replica that does not answer stays on the page, marked unreachable.
 * - GATEWAY_PEERS_DNS: a name whose A/AAAA records are the replicas — the headless Service
 *   `gateway-headless` in Kubernetes — each reached on this gateway's own admin port (every pod
 *   of the Deployment has the same). The records are looked up on every round, so pods come and
 *   go with the Service's ready endpoints.
 *
 * Without either, the dashboard shows this gateway alone.
 */
import { lookup } from "node:dns/promises";
import { isIPv6 } from "node:net";
import { peerSourcesFromEnv } from "../ratelimit/peers.ts";

export interface PeerDirectoryOptions {
  urls: string[];
  dnsName?: string;
  /** Port of the peers' admin listeners when found by DNS. */
  adminPort: number;
  resolve?: (name: string) => Promise<string[]>;
}

export class PeerDirectory {
  constructor(private readonly opts: PeerDirectoryOptions) {}

  static fromEnv(adminPort: number, env: Record<string, string | undefined> = process.env): PeerDirectory {
    return new PeerDirectory({ ...peerSourcesFromEnv(env), adminPort });
  }

  get isConfigured(): boolean {
    return this.opts.urls.length > 0 || this.opts.dnsName !== undefined;
  }

  /** Admin base URLs of the replicas now (no trailing slash), in a stable order, and why DNS found none. */
  async list(): Promise<{ urls: string[]; error: string | null }> {
    const urls = new Set(this.opts.urls);
    let error: string | null = null;
    if (this.opts.dnsName) {
      try {
        const addresses = await (this.opts.resolve ?? resolveAll)(this.opts.dnsName);
        for (const address of addresses)
          urls.add(`http://${isIPv6(address) ? `[${address}]` : address}:${this.opts.adminPort}`);
      } catch (err) {
        error = `cannot resolve ${this.opts.dnsName}: ${(err as Error).message}`;
      }
    }
    return { urls: [...urls].sort(), error };
  }
}

async function resolveAll(name: string): Promise<string[]> {
  return (await lookup(name, { all: true })).map((a) => a.address);
}
