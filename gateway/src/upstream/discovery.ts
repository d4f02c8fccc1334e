/**
 * Where an upstream's endpoints come from. Each `host:port` entry in routes.yaml is either an IP
 * literal (static: used as written) or a host name, resolved to all of its addresses and
 * re-resolved every `refreshMs` and soon after a connection failure — in Kubernetes the name of
 * a headless Service, whose A records are the ready pods, so a scale-up gets traffic within
 * seconds and removed pods leave the set.
 *
 * The resolver is injectable. By default it is the system's (getaddrinfo via `dns.lookup`: it
 * honours /etc/hosts and the search domains of resolv.conf, which short Service names need);
 * with `DNS_SERVER=host:port` (settings.ts) main.ts gives it one that queries that server
 * directly (node:dns Resolver), which is how the tests and `make dev` serve changing A records.
 *
 * A name without addresses (NXDOMAIN, no records: a headless Service with no ready pod, a spare
 * slot of `make dev`) is a state, not a failure: it is reported when it begins (`onNoAddresses`),
 * not on every refresh. A DNS failure (timeout, SERVFAIL, refused) is reported every time
 * (`onError`), and the name keeps its last known addresses meanwhile.
 */
import { lookup } from "node:dns/promises";
import { Resolver } from "node:dns/promises";
import { isIP } from "node:net";

export interface HostResolver {
  /**
   * All addresses of `host`; rejects with code ENOTFOUND/ENODATA when the name has none. `signal`
   * abandons this query (it took too long, or discovery stopped), and only this one.
   */
  resolve(host: string, signal?: AbortSignal): Promise<string[]>;
}

/** getaddrinfo: /etc/hosts, resolv.conf search domains. IPv4 addresses are preferred when there are both. */
export const systemResolver: HostResolver = {
  async resolve(host) {
    const found = await lookup(host, { all: true });
    const v4 = found.filter((a) => a.family === 4);
    return (v4.length > 0 ? v4 : found).map((a) => a.address);
  },
};

/**
 * Queries one DNS server (host:port) for A records, bypassing the system resolver; AAAA when a
 * name has no A record. A Resolver per query: Bun's keeps a "no data" answer for the instance's
 * whole life, whatever its TTL (a name once empty would never be asked again), and cancel()
 * abandons every query on the instance, other upstreams' included.
 */
export function dnsServerResolver(server: string): HostResolver {
  return {
    async resolve(host, signal) {
      const resolver = new Resolver({ timeout: 1_000, tries: 2 });
      resolver.setServers([server]);
      const abandon = () => resolver.cancel();
      signal?.addEventListener("abort", abandon, { once: true });
      try {
        try {
          return await resolver.resolve4(host);
        } catch (err) {
          if (!isNoAddresses(err)) throw err;
          const v6 = await resolver.resolve6(host).catch(() => []);
          if (v6.length > 0) return v6;
          throw err;
        }
      } finally {
        signal?.removeEventListener("abort", abandon);
      }
    },
  };
}

export interface Entry {
  host: string;
  port: string;
  /** An IP literal: never resolved. */
  isStatic: boolean;
}

/** `10.0.0.1:80`, `[::1]:80`, `webapp-headless:8080` (validated as host:port at config load). */
export function parseEntry(entry: string): Entry {
  const colon = entry.lastIndexOf(":");
  const rawHost = entry.slice(0, colon);
  const host = rawHost.startsWith("[") ? rawHost.slice(1, -1) : rawHost;
  return { host, port: entry.slice(colon + 1), isStatic: isIP(host) !== 0 };
}

export function formatAddress(ip: string, port: string): string {
  return isIP(ip) === 6 ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** A resolution result that means "this name has no addresses now", as opposed to "DNS failed". */
function isNoAddresses(err: unknown): boolean {
  const code = (err as { code?: string }).code;
  return code === "ENOTFOUND" || code === "ENODATA" || code === "NXDOMAIN";
}

export interface DiscoveryOptions {
  refreshMs: number;
  resolver: HostResolver;
  /** The full address set, whenever it changes (and once after the first resolution). */
  onChange: (addresses: string[]) => void;
  /** A resolution failed (the name keeps its last known addresses). */
  onError?: (host: string, err: unknown) => void;
  /** A name has no addresses now, where it had some (`hadAddresses`) or had not been resolved yet. */
  onNoAddresses?: (host: string, err: unknown, hadAddresses: boolean) => void;
  /**
   * Last known addresses per host name to start from (the discovery this one replaces, on a
   * reload): published at once, and kept as any known addresses are when a resolution fails.
   */
  known?: ReadonlyMap<string, readonly string[]>;
}

/** Re-resolution never happens more often than this, however many failures ask for it. */
const MIN_REFRESH_GAP_MS = 1_000;

export class Discovery {
  readonly #entries: Entry[];
  readonly #named: Entry[];
  /** Last known addresses per host name, kept when a resolution fails for a reason other than "no such name". */
  readonly #known = new Map<string, string[]>();
  #timer: ReturnType<typeof setInterval> | undefined;
  #soon: ReturnType<typeof setTimeout> | undefined;
  #resolving: Promise<void> | undefined;
  #lastRefreshAt = 0;
  #lastSet = "";
  #stopped = false;
  /** Queries in flight, abandoned by stop(). */
  readonly #inFlight = new Set<AbortController>();
  /** Settles once every name has been resolved once (at once if there are none). */
  readonly ready: Promise<void>;

  constructor(
    entries: readonly string[],
    private readonly options: DiscoveryOptions,
  ) {
    this.#entries = entries.map(parseEntry);
    this.#named = this.#entries.filter((e) => !e.isStatic);
    for (const { host } of this.#named) {
      const known = options.known?.get(host);
      if (known) this.#known.set(host, [...known]);
    }
    this.#publish();
    this.ready = this.#named.length === 0 ? Promise.resolve() : this.refresh();
    if (this.#named.length > 0) {
      this.#timer = setInterval(() => void this.refresh(), options.refreshMs);
      this.#timer.unref?.();
    }
  }

  /** Last known addresses per host name (what a replacement starts from: `known`). */
  get known(): ReadonlyMap<string, readonly string[]> {
    return this.#known;
  }

  /** Whether any entry is a name (so the set can change at run time). */
  get isDynamic(): boolean {
    return this.#named.length > 0;
  }

  get refreshMs(): number {
    return this.options.refreshMs;
  }

  /** Resolves every name now (joins a resolution already running). */
  refresh(): Promise<void> {
    if (this.#stopped || this.#named.length === 0) return Promise.resolve();
    this.#resolving ??= this.#resolveAll().finally(() => (this.#resolving = undefined));
    return this.#resolving;
  }

  /** Asks for a resolution soon (after a connection failure), at most once per MIN_REFRESH_GAP_MS. */
  refreshSoon(): void {
    if (this.#stopped || this.#named.length === 0 || this.#soon) return;
    const wait = Math.max(0, this.#lastRefreshAt + MIN_REFRESH_GAP_MS - performance.now());
    this.#soon = setTimeout(() => {
      this.#soon = undefined;
      void this.refresh();
    }, wait);
    this.#soon.unref?.();
  }

  stop(): void {
    this.#stopped = true;
    clearInterval(this.#timer);
    clearTimeout(this.#soon);
    for (const query of this.#inFlight) query.abort();
  }

  async #resolveAll(): Promise<void> {
    this.#lastRefreshAt = performance.now();
    const hosts = [...new Set(this.#named.map((e) => e.host))];
    await Promise.all(hosts.map((host) => this.#resolveOne(host)));
    if (!this.#stopped) this.#publish();
  }

  async #resolveOne(host: string): Promise<void> {
    // A resolver that never answers must not stall discovery: bound every query.
    const query = new AbortController();
    this.#inFlight.add(query);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        query.abort();
        reject(
          Object.assign(new Error(`resolving ${host} took over ${this.#queryTimeoutMs} ms`), { code: "ETIMEOUT" }),
        );
      }, this.#queryTimeoutMs);
    });
    try {
      const addresses = await Promise.race([this.options.resolver.resolve(host, query.signal), timeout]);
      this.#known.set(host, [...addresses].sort());
    } catch (err) {
      if (!isNoAddresses(err)) this.options.onError?.(host, err);
      else {
        const before = this.#known.get(host);
        this.#known.set(host, []);
        if (before === undefined || before.length > 0) this.options.onNoAddresses?.(host, err, before !== undefined);
      }
    } finally {
      clearTimeout(timer);
      this.#inFlight.delete(query);
    }
  }

  get #queryTimeoutMs(): number {
    return Math.min(Math.max(this.options.refreshMs, 500), 5_000);
  }

  #publish(): void {
    const set = new Set<string>();
    for (const entry of this.#entries) {
      if (entry.isStatic) set.add(formatAddress(entry.host, entry.port));
      else for (const ip of this.#known.get(entry.host) ?? []) set.add(formatAddress(ip, entry.port));
    }
    const addresses = [...set];
    const key = addresses.join(",");
    if (key === this.#lastSet) return;
    this.#lastSet = key;
    this.options.onChange(addresses);
  }
}
