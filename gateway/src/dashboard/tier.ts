/**
 * The whole gateway tier for the dashboard: once a second, while someone watches, every replica's
 * snapshot (snapshot.ts) is fetched with a short timeout and merged — route figures added up
 * second by second (percentiles from the merged latency histograms), endpoints listed with the
 * state each gateway sees, gateways that do not answer marked unreachable.
 *
 * Each replica the peer directory lists (../peers.ts) is one row, at whichever of its addresses
 * it answers: a spare address a rolling replace may move it to is idle, not failing, while the
 * replica answers at another one; a replica none of whose addresses answers is a row marked
 * unreachable, whether it stopped before or after the page was opened.
 *
 * Each replica is asked only for the seconds since it last answered, and its history is kept
 * here; the last few seconds are asked again every round, so a second that was still filling up
 * on one replica is corrected on the next. A replica that answers again after missing rounds
 * sends the seconds it missed. Only the seconds some answer changed are merged again (the rest is
 * kept from earlier rounds: the merge runs on the event loop that proxies requests), and the state
 * says from which second on its figures changed, so an open page is sent those seconds anew.
 */
import { addSparse, LATENCY_BUCKETS, quantileMs, round3 } from "./latency-buckets.ts";
import type { PeerDirectory } from "../peers.ts";
import {
  type CanarySummary,
  type EndpointView,
  type GatewayInfo,
  type GatewaySnapshot,
  type RouteView,
  SNAPSHOT_SCHEMA,
} from "./snapshot.ts";
import { WINDOW_SECONDS } from "./traffic.ts";

/** Seconds asked again every round (see the file comment). */
const OVERLAP_SECONDS = 3;
/** A replica found by an address that has not answered for this long makes way for another address of its slot. */
const FORGET_AFTER_MS = 60_000;
/** A replica's history drops the seconds that left the window once they are this many. */
const PRUNE_EVERY_SECONDS = 10;
/** The routes' and gateways' summary figures cover the last this many completed seconds. */
const SUMMARY_SECONDS = 10;

export interface TierGateway {
  /** Admin URL; null for this gateway when no peers are configured. */
  url: string | null;
  self: boolean;
  reachable: boolean;
  error: string | null;
  /** Epoch ms of the last answer. */
  lastSeenAt: number | null;
  /** From the last answer (so an unreachable replica is still named). */
  info: GatewayInfo | null;
  limiter: GatewaySnapshot["limiter"];
  config: GatewaySnapshot["config"];
  /** Requests per second it served over the summary window. */
  rps: number;
}

export type EndpointSummary = "healthy" | "unknown" | "half-open" | "open" | "ejected" | "unhealthy";

export interface TierEndpoint {
  address: string;
  /** The worst state any gateway sees. */
  summary: EndpointSummary;
  /** Each reachable gateway's view. */
  views: (EndpointView & { gateway: string })[];
}

export interface TierUpstream {
  name: string;
  protocol: "http" | "grpc";
  endpoints: TierEndpoint[];
  /** Each gateway's canary of this upstream, where one is in progress. */
  canaries: (CanarySummary & { gateway: string })[];
}

export interface TierRoute extends RouteView {
  /** Epoch second of the first element of each series. */
  from: number;
  requests: number[];
  errors: number[];
  denied: number[];
  /** ms; null for a second without requests. */
  p50: (number | null)[];
  p99: (number | null)[];
  summary: { rps: number; errorRatio: number | null; deniedPerS: number; p50: number | null; p99: number | null };
}

/** A route's merged series as of the last round, kept for the next (its seconds `from`, `from + 1`, …). */
type MergedSeries = Pick<TierRoute, "from" | "requests" | "errors" | "denied" | "p50" | "p99">;

export interface TierState {
  at: number;
  /**
   * Epoch second from which on the route figures differ from the previous round's state (at
   * least the series' start): an answer filled or corrected them — a replica's still-filling
   * seconds, or the seconds it missed while unreachable.
   */
  changedFrom: number;
  /** The gateway that merged this (the one serving the page). */
  servedBy: string;
  /** Seconds in each route series (the completed seconds a replica keeps). */
  windowSeconds: number;
  /** Why the peer list is incomplete (a failed DNS lookup), if it is. */
  peersError: string | null;
  /**
   * Idle addresses: the other addresses of a replica that answers (or answered last) at one of
   * its own — the spare ports `make dev` lists for rolling replaces. Named, not rows, not failing.
   */
  silentPeers: { url: string; error: string | null }[];
  gateways: TierGateway[];
  upstreams: TierUpstream[];
  routes: TierRoute[];
}

export interface TierViewOptions {
  directory: PeerDirectory;
  /** This gateway's own snapshot, used as the whole tier when no peers are configured. */
  local: (seconds: number) => GatewaySnapshot;
  selfInstance: string;
  /** ADMIN_TOKEN, sent to the peers as a bearer token: their snapshot route requires it (../admin/auth.ts). */
  token?: string;
  timeoutMs?: number;
  intervalMs?: number;
}

interface SecondFigures {
  requests: number;
  errors: number;
  denied: number;
  latency: readonly number[];
}

interface Replica {
  url: string | null;
  reachable: boolean;
  error: string | null;
  lastSeenAt: number | null;
  snapshot: GatewaySnapshot | null;
  /** route → epoch second → figures */
  history: Map<string, Map<number, SecondFigures>>;
  /** Seconds before this epoch second have been dropped from `history`. */
  prunedBefore: number;
}

const SEVERITY: readonly EndpointSummary[] = ["healthy", "unknown", "half-open", "open", "ejected", "unhealthy"];

export class TierView {
  readonly #replicas = new Map<string, Replica>();
  /** Each subscriber, with what to call when the view closes. */
  readonly #listeners = new Map<(state: TierState) => void, () => void>();
  #peersError: string | null = null;
  #looping = false;
  #latest: TierState | undefined;
  readonly #scratch = new Float64Array(LATENCY_BUCKETS);
  /** route → its merged series, kept between rounds. */
  readonly #merged = new Map<string, MergedSeries>();
  /** The oldest second an answer wrote since the last merge (-Infinity: merge everything again). */
  #changedFrom = Number.NEGATIVE_INFINITY;

  constructor(private readonly opts: TierViewOptions) {}

  /** The last merged state (undefined before the first round). */
  get latest(): TierState | undefined {
    return this.#latest;
  }

  /**
   * Calls `listener` with every round's state, at once if there is a fresh one; rounds run only
   * while someone listens. `onClose` runs if the view is closed first (the gateway stops).
   * Returns the unsubscribe function.
   */
  subscribe(listener: (state: TierState) => void, onClose: () => void = () => {}): () => void {
    this.#listeners.set(listener, onClose);
    // Only a fresh state: rounds stop while nobody watches, and an old one would leave a gap.
    if (this.#latest && Date.now() - this.#latest.at < 2 * (this.opts.intervalMs ?? 1000)) listener(this.#latest);
    if (!this.#looping) {
      this.#looping = true;
      void this.#loop();
    }
    return () => void this.#listeners.delete(listener);
  }

  /**
   * Ends every subscription: an open event stream would otherwise keep the admin listener from
   * stopping until the shutdown timeout.
   */
  close(): void {
    const closing = [...this.#listeners.values()];
    this.#listeners.clear();
    for (const onClose of closing) onClose();
  }

  /** One round: fetch every replica's snapshot, merge. */
  async refresh(): Promise<TierState> {
    const { directory } = this.opts;
    if (!directory.isConfigured) {
      const self = this.#replica(null);
      this.#absorb(self, this.opts.local(this.#secondsToAsk(self)));
    } else {
      const { urls, error } = await directory.list();
      this.#peersError = error;
      // Replicas found by DNS leave with their pod; the ones listed by URL stay, marked unreachable.
      for (const url of this.#replicas.keys())
        if (!urls.includes(url)) {
          this.#replicas.delete(url);
          this.#changedFrom = Number.NEGATIVE_INFINITY; // its history leaves every second it served
        }
      await Promise.all(urls.map((url) => this.#fetch(this.#replica(url))));
    }
    this.#latest = this.#merge(Date.now());
    return this.#latest;
  }

  async #loop(): Promise<void> {
    const intervalMs = this.opts.intervalMs ?? 1000;
    while (this.#listeners.size > 0) {
      const startedAt = Date.now();
      try {
        const state = await this.refresh();
        for (const listener of this.#listeners.keys()) listener(state);
      } catch {
        // A round that failed as a whole (a bug, not a peer) is skipped; the next one tries again.
      }
      await Bun.sleep(Math.max(0, intervalMs - (Date.now() - startedAt)));
    }
    this.#looping = false;
  }

  #replica(url: string | null): Replica {
    const key = url ?? "";
    let replica = this.#replicas.get(key);
    if (!replica)
      this.#replicas.set(
        key,
        (replica = {
          url,
          reachable: false,
          error: null,
          lastSeenAt: null,
          snapshot: null,
          history: new Map(),
          prunedBefore: 0,
        }),
      );
    return replica;
  }

  #secondsToAsk(replica: Replica): number {
    if (replica.lastSeenAt === null) return WINDOW_SECONDS;
    return Math.min(WINDOW_SECONDS, Math.ceil((Date.now() - replica.lastSeenAt) / 1000) + OVERLAP_SECONDS);
  }

  async #fetch(replica: Replica): Promise<void> {
    const timeoutMs = this.opts.timeoutMs ?? 700;
    try {
      const res = await fetch(`${replica.url}/dashboard/snapshot.json?seconds=${this.#secondsToAsk(replica)}`, {
        signal: AbortSignal.timeout(timeoutMs),
        ...(this.opts.token ? { headers: { authorization: `Bearer ${this.opts.token}` } } : {}),
      });
      if (res.status === 401)
        throw new Error(
          this.opts.token
            ? "refused this gateway's ADMIN_TOKEN (401): the replicas must share one token"
            : "requires an admin token (401): set the same ADMIN_TOKEN on every replica",
        );
      if (!res.ok) throw new Error(`answered ${res.status}`);
      const body: unknown = await res.json();
      if (!isSnapshot(body))
        throw new Error(`answered, but not with a dashboard snapshot (schema ${SNAPSHOT_SCHEMA}): another version?`);
      this.#absorb(replica, body);
    } catch (err) {
      replica.reachable = false;
      const e = err as Error & { code?: string };
      replica.error =
        e.name === "TimeoutError"
          ? `no answer within ${timeoutMs} ms`
          : e.code === "ECONNREFUSED"
            ? "connection refused"
            : e.message;
    }
  }

  #absorb(replica: Replica, snapshot: GatewaySnapshot): void {
    replica.reachable = true;
    replica.error = null;
    replica.lastSeenAt = Date.now();
    replica.snapshot = snapshot;
    const oldest = Math.floor(Date.now() / 1000) - WINDOW_SECONDS;
    for (const route of snapshot.routes) {
      let seconds = replica.history.get(route.name);
      if (!seconds) replica.history.set(route.name, (seconds = new Map()));
      const s = route.series;
      if (s.requests.length > 0 && s.from < this.#changedFrom) this.#changedFrom = s.from;
      for (let k = 0; k < s.requests.length; k++) {
        seconds.set(s.from + k, {
          requests: num(s.requests[k]),
          errors: num(s.errors[k]),
          denied: num(s.denied[k]),
          latency: Array.isArray(s.latency[k]) ? s.latency[k]! : [],
        });
      }
    }
    // Seconds that left the window, every few seconds (a walk over every kept second each round
    // would be most of a round's cost with many routes).
    if (oldest - replica.prunedBefore >= PRUNE_EVERY_SECONDS) {
      for (const seconds of replica.history.values()) for (const t of seconds.keys()) if (t < oldest) seconds.delete(t);
      replica.prunedBefore = oldest;
    }
  }

  #merge(now: number): TierState {
    const replicas = [...this.#replicas.values()];
    const live = replicas.filter((r) => r.reachable && r.snapshot);
    const to = Math.floor(now / 1000);
    // The completed seconds a replica's ring holds (the current second takes the last slot).
    const from = to - (WINDOW_SECONDS - 1);
    const summaryFrom = to - SUMMARY_SECONDS;

    const rows = this.#rows(now);
    const shown = replicas.filter((r) => rows.has(r));
    const silentPeers = replicas.filter((r) => !rows.has(r)).map((r) => ({ url: r.url ?? "", error: r.error }));
    const gateways: TierGateway[] = shown.map((r) => {
      let served = 0;
      for (const seconds of r.history.values())
        for (let t = summaryFrom; t < to; t++) served += seconds.get(t)?.requests ?? 0;
      return {
        url: r.url,
        self: r.snapshot?.gateway.instance === this.opts.selfInstance,
        reachable: r.reachable,
        error: r.error,
        lastSeenAt: r.lastSeenAt,
        info: r.snapshot?.gateway ?? null,
        limiter: r.snapshot?.limiter ?? null,
        config: r.snapshot?.config ?? null,
        rps: round3(served / SUMMARY_SECONDS),
      };
    });

    // Routes as the replicas define them (the first to define one wins; a reload in progress may differ).
    const routeViews = new Map<string, RouteView>();
    for (const r of live)
      for (const route of r.snapshot!.routes) if (!routeViews.has(route.name)) routeViews.set(route.name, route);
    const changedFrom = Math.max(from, Math.min(this.#changedFrom, to));
    this.#changedFrom = Number.POSITIVE_INFINITY;
    for (const name of this.#merged.keys()) if (!routeViews.has(name)) this.#merged.delete(name);
    const routes = [...routeViews.values()].map((view) =>
      this.#mergeRoute(view, replicas, from, to, summaryFrom, changedFrom),
    );

    return {
      at: now,
      changedFrom,
      servedBy: this.opts.selfInstance,
      windowSeconds: to - from,
      peersError: this.#peersError,
      silentPeers,
      gateways,
      upstreams: mergeUpstreams(live),
      routes,
    };
  }

  /**
   * The replicas shown as gateway rows: per listed replica, the addresses it answers at or
   * answered at lately — else the one it answered at last, or its first, as unreachable; every
   * replica found by DNS (listed while its pod is ready); this gateway alone without peers.
   */
  #rows(now: number): Set<Replica> {
    const recent = (r: Replica) => r.reachable || (r.lastSeenAt !== null && now - r.lastSeenAt < FORGET_AFTER_MS);
    const rows = new Set<Replica>();
    const listed = new Set<string>();
    for (const slot of this.opts.directory.slots) {
      const members = slot.flatMap((url) => {
        listed.add(url);
        const replica = this.#replicas.get(url);
        return replica ? [replica] : [];
      });
      const live = members.filter(recent);
      if (live.length > 0) for (const r of live) rows.add(r);
      else {
        const last = members.reduce<Replica | undefined>(
          (best, r) => (r.lastSeenAt !== null && (best?.lastSeenAt ?? -1) < r.lastSeenAt ? r : best),
          undefined,
        );
        const row = last ?? members[0];
        if (row) rows.add(row);
      }
    }
    for (const r of this.#replicas.values()) if (r.url === null || !listed.has(r.url)) rows.add(r);
    return rows;
  }

  #mergeRoute(
    view: RouteView,
    replicas: Replica[],
    from: number,
    to: number,
    summaryFrom: number,
    changedFrom: number,
  ): TierRoute {
    const histories = replicas
      .map((r) => r.history.get(view.name))
      .filter((h): h is Map<number, SecondFigures> => h !== undefined);
    const latency = this.#scratch;
    // Last round's series moved to start at `from`; the seconds past its end, and those from
    // `changedFrom` on, are merged anew.
    let merged = this.#merged.get(view.name);
    if (!merged)
      this.#merged.set(view.name, (merged = { from, requests: [], errors: [], denied: [], p50: [], p99: [] }));
    const series = [merged.requests, merged.errors, merged.denied, merged.p50, merged.p99] as const;
    const shift = from - merged.from;
    if (shift < 0 || shift >= merged.requests.length) for (const values of series) values.length = 0;
    else if (shift > 0) for (const values of series) values.splice(0, shift);
    merged.from = from;
    const kept = Math.min(merged.requests.length, Math.max(0, changedFrom - from), to - from);
    for (const values of series) values.length = kept;
    for (let t = from + kept; t < to; t++) {
      const { requests, errors, denied } = sumSeconds(histories, t, t + 1, latency);
      merged.requests.push(requests);
      merged.errors.push(errors);
      merged.denied.push(denied);
      merged.p50.push(quantileMs(latency, 0.5));
      merged.p99.push(quantileMs(latency, 0.99));
    }
    // The summary window's latency, merged over all its seconds.
    const { requests, errors, denied } = sumSeconds(histories, summaryFrom, to, latency);
    return {
      name: view.name,
      path: view.path,
      match: view.match,
      methods: view.methods,
      upstream: view.upstream,
      rateLimit: view.rateLimit,
      from,
      // Copies: the kept series changes in place next round, and a state may be read after it.
      requests: merged.requests.slice(),
      errors: merged.errors.slice(),
      denied: merged.denied.slice(),
      p50: merged.p50.slice(),
      p99: merged.p99.slice(),
      summary: {
        rps: round3(requests / SUMMARY_SECONDS),
        errorRatio: requests > 0 ? round3(errors / requests) : null,
        deniedPerS: round3(denied / SUMMARY_SECONDS),
        p50: quantileMs(latency, 0.5),
        p99: quantileMs(latency, 0.99),
      },
    };
  }
}

/**
 * The figures of every replica's history added up over the seconds [from, to); their merged
 * latency histogram is left in `latency`.
 */
function sumSeconds(
  histories: Map<number, SecondFigures>[],
  from: number,
  to: number,
  latency: Float64Array,
): { requests: number; errors: number; denied: number } {
  let requests = 0;
  let errors = 0;
  let denied = 0;
  latency.fill(0);
  for (const h of histories) {
    for (let t = from; t < to; t++) {
      const s = h.get(t);
      if (!s) continue;
      requests += s.requests;
      errors += s.errors;
      denied += s.denied;
      addSparse(latency, s.latency);
    }
  }
  return { requests, errors, denied };
}

function mergeUpstreams(live: Replica[]): TierUpstream[] {
  const upstreams = new Map<
    string,
    {
      name: string;
      protocol: "http" | "grpc";
      endpoints: Map<string, TierEndpoint>;
      canaries: (CanarySummary & { gateway: string })[];
    }
  >();
  for (const r of live) {
    const snapshot = r.snapshot!;
    for (const u of snapshot.upstreams) {
      let merged = upstreams.get(u.name);
      if (!merged)
        upstreams.set(u.name, (merged = { name: u.name, protocol: u.protocol, endpoints: new Map(), canaries: [] }));
      // A peer on an older version sends no canary field.
      if (u.canary) merged.canaries.push({ ...u.canary, gateway: snapshot.gateway.instance });
      for (const e of u.endpoints) {
        let endpoint = merged.endpoints.get(e.address);
        if (!endpoint)
          merged.endpoints.set(e.address, (endpoint = { address: e.address, summary: "healthy", views: [] }));
        endpoint.views.push({ ...e, gateway: snapshot.gateway.instance });
        const state = stateOf(e);
        if (SEVERITY.indexOf(state) > SEVERITY.indexOf(endpoint.summary)) endpoint.summary = state;
      }
    }
  }
  return [...upstreams.values()]
    .sort((a, b) => a.name.localeCompare(b.name))
    .map((u) => ({
      name: u.name,
      protocol: u.protocol,
      endpoints: [...u.endpoints.values()].sort((a, b) =>
        a.address.localeCompare(b.address, undefined, { numeric: true }),
      ),
      canaries: u.canaries.sort((a, b) => a.gateway.localeCompare(b.gateway)),
    }));
}

/** One gateway's view of an endpoint in a word: the reason it takes no traffic, if it takes none. */
function stateOf(e: EndpointView): EndpointSummary {
  if (e.health === "unhealthy") return "unhealthy";
  if (e.ejected) return "ejected";
  if (e.breaker === "open") return "open";
  if (e.breaker === "half-open") return "half-open";
  return e.health === "unknown" ? "unknown" : "healthy";
}

function num(value: unknown): number {
  return typeof value === "number" && Number.isFinite(value) && value > 0 ? value : 0;
}

/** Enough of a snapshot's shape to merge it without tripping (a peer of another version may differ). */
function isSnapshot(body: unknown): body is GatewaySnapshot {
  if (typeof body !== "object" || body === null) return false;
  const s = body as Partial<GatewaySnapshot>;
  return (
    s.schema === SNAPSHOT_SCHEMA &&
    typeof s.gateway?.instance === "string" &&
    Array.isArray(s.upstreams) &&
    s.upstreams.every((u) => typeof u?.name === "string" && Array.isArray(u.endpoints)) &&
    Array.isArray(s.routes) &&
    s.routes.every(
      (r) =>
        typeof r?.name === "string" &&
        Number.isInteger(r.series?.from) &&
        ["requests", "errors", "denied", "latency"].every((k) => Array.isArray(r.series[k as keyof typeof r.series])),
    )
  );
}
