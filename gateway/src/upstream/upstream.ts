/**
 * An upstream: a named set of endpoints speaking one protocol, kept current by discovery, judged
 * by active health checks, outlier ejection and a breaker per endpoint, and balanced per request.
 * One abstraction for HTTP and gRPC; dispatch.ts drives a request through it.
 *
 * State changes are published as events (`onEvent`) for logs, metrics and the admin API; the
 * endpoints' own fields carry the current figures.
 */
import type { UpstreamConfig } from "../config/load.ts";
import { sameHealthCheck } from "../config/reload.ts";
import { type Algorithm, pickP2C, RoundRobin } from "./balancer.ts";
import type { BreakerState } from "./breaker.ts";
import { Discovery, type HostResolver, systemResolver } from "./discovery.ts";
import { Endpoint, type Health } from "./endpoint.ts";
import { HealthChecker } from "./health.ts";
import type { Verdict } from "./outcome.ts";
import { OutlierDetector } from "./outlier.ts";
import { UpstreamTlsClient } from "./tls.ts";
import type { Canary } from "../canary/controller.ts";
import type { Logger } from "../../../lib/log.ts";

interface EventBase {
  upstream: string;
  /** Epoch ms. */
  at: number;
}

export type UpstreamEvent =
  | (EventBase & { type: "ejected"; endpoint: Endpoint; durationMs: number })
  | (EventBase & { type: "readmitted"; endpoint: Endpoint; reason: "ejection-expired" | "health-check" })
  | (EventBase & { type: "breaker"; endpoint: Endpoint; state: BreakerState })
  /** `reason`: why the last check failed, when the endpoint went unhealthy. */
  | (EventBase & { type: "health"; endpoint: Endpoint; health: Health; reason?: string })
  | (EventBase & { type: "endpoints"; added: string[]; removed: string[] })
  /** A host name could not be resolved (timeout, SERVFAIL, refused…); its last known addresses stay. */
  | (EventBase & { type: "resolve-failed"; host: string; error: string })
  /**
   * A host name has no addresses now (NXDOMAIN, no records), where it had some (`hadAddresses`)
   * or on its first resolution: reported once, when that begins.
   */
  | (EventBase & { type: "no-addresses"; host: string; error: string; hadAddresses: boolean });

export interface UpstreamOptions {
  /** Host-name resolver for discovery (default: the system's; main.ts passes DNS_SERVER's). */
  resolver?: HostResolver;
  /** Subscribed before anything starts, so it sees the first discovery and health events. */
  onEvent?: (event: UpstreamEvent) => void;
  /** Where TLS file renewals are logged. */
  log?: Logger;
  /**
   * Last known addresses of the upstream this one replaces (a reload): its names start from them,
   * so a reload while DNS fails keeps serving the addresses it had (discovery.ts `known`).
   */
  knownAddresses?: ReadonlyMap<string, readonly string[]>;
}

/** Latency figure for endpoints when none has answered yet. */
const DEFAULT_EWMA_MS = 1;

/** An endpoint's answers that a canary's latency check leaves out: the first ones, while it is cold. */
const COLD_ANSWERS = 10;

export class Upstream {
  readonly name: string;
  readonly protocol: "http" | "grpc";
  readonly algorithm: Algorithm;
  /** The current set; replaced as a whole (never mutated) when discovery changes it. */
  endpoints: readonly Endpoint[] = [];
  /** Retries sent, and retries refused by a route's retry budget. */
  readonly retries = { attempted: 0, budgetExhausted: 0 };
  /** Settles once host names have been resolved once (at once for a static list). */
  readonly ready: Promise<void>;
  readonly #config: UpstreamConfig;
  readonly #listeners = new Set<(event: UpstreamEvent) => void>();
  readonly #roundRobin = new RoundRobin();
  readonly #outlier: OutlierDetector;
  readonly #health: HealthChecker;
  readonly #discovery: Discovery;
  #closed = false;
  /** TLS to the endpoints, when the upstream has `tls`. */
  readonly tls: UpstreamTlsClient | undefined;
  /** The canary controller of this upstream's name (kept by the gateway across reloads). */
  canary: Canary | undefined;
  /** The endpoints of the canary's version and the others', rebuilt when a version or the set changes. */
  #subsets:
    | { of: readonly Endpoint[]; version: string | undefined; canary: Endpoint[]; stable: Endpoint[] }
    | undefined;

  constructor(config: UpstreamConfig, options: UpstreamOptions = {}) {
    this.name = config.name;
    if (config.tls) this.tls = new UpstreamTlsClient(config.name, config.tls, config.endpoints, options.log);
    this.protocol = config.protocol;
    this.algorithm = config.balancer.algorithm;
    this.#config = config;
    if (options.onEvent) this.#listeners.add(options.onEvent);
    const endpoints = () => this.endpoints;
    this.#outlier = new OutlierDetector(
      config.outlierDetection,
      endpoints,
      (endpoint, durationMs) =>
        this.#emit({ type: "ejected", upstream: this.name, at: Date.now(), endpoint, durationMs }),
      (endpoint) =>
        this.#emit({ type: "readmitted", upstream: this.name, at: Date.now(), endpoint, reason: "ejection-expired" }),
    );
    this.#health = new HealthChecker(config.healthCheck, config.protocol, endpoints, (endpoint, result) => {
      this.learnVersion(endpoint, result.version);
      this.#onHealthCheck(endpoint, result.passed, result.reason);
    });
    this.#discovery = new Discovery(config.endpoints, {
      refreshMs: config.discovery.refreshMs,
      resolver: options.resolver ?? systemResolver,
      onChange: (addresses) => this.#apply(addresses),
      onError: (host, err) =>
        this.#emit({ type: "resolve-failed", upstream: this.name, at: Date.now(), host, error: messageOf(err) }),
      ...(options.knownAddresses ? { known: options.knownAddresses } : {}),
      onNoAddresses: (host, err, hadAddresses) =>
        this.#emit({
          type: "no-addresses",
          upstream: this.name,
          at: Date.now(),
          host,
          error: messageOf(err),
          hadAddresses,
        }),
    });
    this.ready = this.#discovery.ready;
    this.#health.start();
  }

  /** The resilience settings in force (defaults filled in), for the admin API. */
  get settings(): Pick<
    UpstreamConfig,
    "discovery" | "balancer" | "healthCheck" | "outlierDetection" | "circuitBreaker"
  > {
    const { discovery, balancer, healthCheck, outlierDetection, circuitBreaker } = this.#config;
    return { discovery, balancer, healthCheck, outlierDetection, circuitBreaker };
  }

  /**
   * The endpoint for the next request, other than the ones given (already tried); undefined if none
   * is available. `toCanary` (a canary is running): among the canary version's endpoints (true) or
   * the others' (false); when that side has none available, among all, so a canary never turns a
   * request away that another endpoint could serve.
   */
  pick(
    skipA?: Endpoint,
    skipB?: Endpoint,
    toCanary?: boolean,
    /** Every endpoint tried, for a fourth or later try, where the two skips no longer cover them. */
    tried?: ReadonlySet<Endpoint>,
  ): Endpoint | undefined {
    if (toCanary !== undefined) {
      // The chosen side, else the other: an endpoint whose version is not known yet (a replica
      // just discovered, before its first health check answers) gets a request only when no
      // endpoint of either side can take it — never a share of traffic nobody judges.
      const subsets = this.#subsetsNow();
      const chosen =
        this.#pickFrom(toCanary ? subsets.canary : subsets.stable, skipA, skipB, tried) ??
        this.#pickFrom(toCanary ? subsets.stable : subsets.canary, skipA, skipB, tried);
      if (chosen) return chosen;
    }
    return this.#pickFrom(this.endpoints, skipA, skipB, tried);
  }

  #pickFrom(
    all: readonly Endpoint[],
    skipA?: Endpoint,
    skipB?: Endpoint,
    tried?: ReadonlySet<Endpoint>,
  ): Endpoint | undefined {
    const endpoints = tried ? all.filter((e) => !tried.has(e)) : all;
    if (this.algorithm === "round-robin") return this.#roundRobin.pick(endpoints, skipA, skipB);
    return pickP2C(endpoints, performance.now(), skipA, skipB);
  }

  #subsetsNow() {
    const version = this.canary?.version;
    const cached = this.#subsets;
    if (cached && cached.of === this.endpoints && cached.version === version) return cached;
    const canary: Endpoint[] = [];
    const stable: Endpoint[] = [];
    for (const e of this.endpoints) {
      if (e.version === undefined) continue;
      (e.version === version ? canary : stable).push(e);
    }
    this.#subsets = { of: this.endpoints, version, canary, stable };
    return this.#subsets;
  }

  /** The sticky header's value for the canary split, when a canary runs and its policy names one. */
  stickyKey(headers: Headers): string | null {
    const header = this.canary?.active ? this.canary.policy.stickyHeader : undefined;
    return header ? headers.get(header) : null;
  }

  /**
   * What outlives a reload that rebuilds the upstream, taken from `from` (the one this replaces):
   * each endpoint's version, by address, so a canary's split holds instead of sending requests to
   * endpoints of unknown version until this upstream's own health checks answer; an endpoint the
   * old checks found down, which stays out until this upstream's checks pass (`healthyThreshold`),
   * instead of taking traffic as "unknown" until `unhealthyThreshold` of them failed again; and the
   * counts behind Prometheus counters (retries, ejections), which must not go down in a running process.
   */
  takeOver(from: Upstream): void {
    const previous = new Map(from.endpoints.map((e) => [e.address, e]));
    // A verdict stands only for the same check: a reload that changed it (a path, a service, the
    // TLS settings, a timeout that was too short) may be the fix for what the old one reported.
    const sameCheck = this.#config.healthCheck.enabled && sameHealthCheck(from.#config, this.#config);
    for (const endpoint of this.endpoints) {
      const before = previous.get(endpoint.address);
      if (!before) continue;
      if (endpoint.version === undefined) this.learnVersion(endpoint, before.version);
      // Only where this upstream's own checks will say otherwise, and only before they have.
      if (sameCheck && endpoint.health === "unknown" && before.health === "unhealthy") {
        endpoint.health = "unhealthy";
        endpoint.refreshAvailability();
      }
      endpoint.ejections += before.ejections;
    }
    this.retries.attempted += from.retries.attempted;
    this.retries.budgetExhausted += from.retries.budgetExhausted;
    if (this.tls && from.tls) this.tls.reloads += from.tls.reloads;
  }

  /** The version a replica reported; a change regroups the endpoints (canary or stable). */
  learnVersion(endpoint: Endpoint, version: string | undefined): void {
    if (version === undefined || endpoint.version === version) return;
    endpoint.version = version;
    this.#subsets = undefined;
  }

  /** Feeds one try's result to the latency figure and outlier detection (the breaker saw it already). */
  record(endpoint: Endpoint, verdict: Verdict, latencyMs: number, now: number, version?: string): void {
    this.learnVersion(endpoint, version);
    // An endpoint's first answers run cold (its code not yet compiled, its connections new): they
    // count for errors, not for latency (canary/controller.ts).
    this.canary?.record(endpoint.version, verdict !== "ok", latencyMs, endpoint.requests <= COLD_ANSWERS);
    if (verdict === "ok") {
      endpoint.sample(latencyMs, false, now);
      this.#outlier.onSuccess(endpoint);
      return;
    }
    endpoint.failures++;
    endpoint.sample(latencyMs, true, now);
    this.#outlier.onFailure(endpoint, verdict === "connect");
    // A replica that refuses connections may be gone: look the names up again soon.
    if (verdict === "connect") this.#discovery.refreshSoon();
  }

  /** Seconds until some endpoint may take traffic again (for Retry-After when none can now). */
  retryAfterSeconds(): number {
    const now = Date.now();
    let soonest = Infinity;
    for (const e of this.endpoints) soonest = Math.min(soonest, e.availableFrom(now, this.#health.verdictDueAt(e)));
    if (soonest === Infinity) soonest = now + (this.#discovery.isDynamic ? this.#discovery.refreshMs : 1_000);
    return Math.max(1, Math.ceil((soonest - now) / 1_000));
  }

  /** Subscribes to state changes; returns the unsubscribe function. */
  onEvent(listener: (event: UpstreamEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Last known addresses per host name (handed to the upstream that replaces this one). */
  get knownAddresses(): ReadonlyMap<string, readonly string[]> {
    return this.#discovery.known;
  }

  /** Closed: replaced by a reload and retired, or the gateway stopped. */
  get closed(): boolean {
    return this.#closed;
  }

  close(): void {
    this.#closed = true;
    this.tls?.close();
    this.#discovery.stop();
    this.#health.stop();
    this.#outlier.stop();
    for (const endpoint of this.endpoints) endpoint.close();
    this.#listeners.clear();
  }

  #onHealthCheck(endpoint: Endpoint, passed: boolean, reason?: string): void {
    const { healthyThreshold, unhealthyThreshold } = this.#config.healthCheck;
    if (passed) {
      endpoint.checksFailedInRow = 0;
      endpoint.checksPassedInRow++;
      if (endpoint.health === "healthy") return;
      if (endpoint.health === "unhealthy" && endpoint.checksPassedInRow < healthyThreshold) return;
      const recovered = endpoint.health === "unhealthy";
      this.#setHealth(endpoint, "healthy");
      // Back from an outage the checks saw: whatever ejected it or opened its breaker is over.
      if (recovered) this.#readmit(endpoint);
      return;
    }
    endpoint.checksPassedInRow = 0;
    endpoint.checksFailedInRow++;
    this.#discovery.refreshSoon();
    if (endpoint.health !== "unhealthy" && endpoint.checksFailedInRow >= unhealthyThreshold)
      this.#setHealth(endpoint, "unhealthy", reason);
    if (endpoint.health === "unhealthy") endpoint.resetConnection();
  }

  #setHealth(endpoint: Endpoint, health: Health, reason?: string): void {
    endpoint.health = health;
    endpoint.refreshAvailability();
    this.#emit({
      type: "health",
      upstream: this.name,
      at: Date.now(),
      endpoint,
      health,
      ...(reason ? { reason } : {}),
    });
  }

  #readmit(endpoint: Endpoint): void {
    endpoint.consecutiveFailures = 0;
    endpoint.restartLatency(this.#meanEwmaMs(endpoint));
    endpoint.breaker.reset();
    if (endpoint.ejected) {
      this.#outlier.forget(endpoint);
      endpoint.ejected = false;
    }
    endpoint.lastReadmittedAt = Date.now();
    endpoint.refreshAvailability();
    this.#emit({
      type: "readmitted",
      upstream: this.name,
      at: endpoint.lastReadmittedAt,
      endpoint,
      reason: "health-check",
    });
  }

  /** Replaces the endpoint set, keeping the Endpoint (and its state) of every address still in it. */
  #apply(addresses: string[]): void {
    const previous = new Map(this.endpoints.map((e) => [e.address, e]));
    const next: Endpoint[] = [];
    const added: string[] = [];
    for (const address of addresses) {
      let endpoint = previous.get(address);
      if (endpoint) previous.delete(address);
      else {
        endpoint = this.#createEndpoint(address);
        added.push(address);
      }
      next.push(endpoint);
    }
    this.endpoints = next;
    for (const gone of previous.values()) {
      this.#outlier.forget(gone);
      gone.close();
    }
    if (added.length === 0 && previous.size === 0) return;
    this.#emit({ type: "endpoints", upstream: this.name, at: Date.now(), added, removed: [...previous.keys()] });
    // Check newcomers at once rather than at the next round.
    for (const address of added) {
      const endpoint = next.find((e) => e.address === address);
      if (endpoint) this.#health.check(endpoint);
    }
  }

  #createEndpoint(address: string): Endpoint {
    return new Endpoint(
      address,
      this.protocol,
      this.#config.circuitBreaker,
      this.#meanEwmaMs(),
      (endpoint, state) => this.#emit({ type: "breaker", upstream: this.name, at: Date.now(), endpoint, state }),
      this.tls,
    );
  }

  /** Mean latency figure of the available endpoints (other than `except`). */
  #meanEwmaMs(except?: Endpoint): number {
    let sum = 0;
    let n = 0;
    for (const e of this.endpoints) {
      if (e === except || !e.available) continue;
      sum += e.ewmaMs;
      n++;
    }
    return n > 0 ? sum / n : DEFAULT_EWMA_MS;
  }

  #emit(event: UpstreamEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // A faulty subscriber must not break the request that caused the event.
      }
    }
  }
}

function messageOf(err: unknown): string {
  return (err as Error).message ?? String(err);
}
