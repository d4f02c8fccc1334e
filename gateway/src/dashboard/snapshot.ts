/**
 * One gateway's state as the dashboard shows it, served on /dashboard/snapshot.json and merged
 * with the other replicas' by tier.ts: who it is, its rate limiter, the config in force and its
 * reloads, every upstream endpoint as this gateway sees it, and each route's last seconds.
 */
import type { ServiceIdentity } from "../../../lib/env.ts";
import type { Canary } from "../canary/controller.ts";
import type { Lifecycle } from "../../../lib/lifecycle.ts";
import type { ReloadStatus } from "../config/reload.ts";
import type { LimiterStatus, RateLimiter } from "../ratelimit/limiter.ts";
import type { RouteRateLimit } from "../ratelimit/policy.ts";
import type { Gateway } from "../server.ts";
import type { Endpoint } from "../upstream/endpoint.ts";
import { round3 } from "./latency-buckets.ts";
import type { RouteSeries, TrafficRecorder } from "./traffic.ts";

/** Bumped when the snapshot's shape changes, so a mixed-version tier says so instead of guessing. */
export const SNAPSHOT_SCHEMA = 2;

/** One endpoint as this gateway sees it; times are epoch ms (null: never). */
export interface EndpointView {
  address: string;
  available: boolean;
  /** When it left the balancer's set, on the same clock as lastRequestAt (null while available). */
  outSince: number | null;
  /** "off": the upstream's active health checks are disabled (no verdict will come). */
  health: Endpoint["health"] | "off";
  breaker: Endpoint["breakerState"];
  breakerProbeAt: number | null;
  ejected: boolean;
  ejectedUntil: number | null;
  ejections: number;
  lastEjectedAt: number | null;
  lastReadmittedAt: number | null;
  inflight: number;
  requests: number;
  failures: number;
  ewmaMs: number;
  lastRequestAt: number | null;
  /** The version the replica reports (x-service-version), once known. */
  version: string | null;
}

/** A canary in progress on one gateway, in brief (the full state is GET /canary on its admin port). */
export interface CanarySummary {
  state: "running" | "paused" | "promoted" | "aborted";
  version: string;
  weight: number;
  step: number | null;
  steps: number[];
  /** The last step's verdict and reason, or the abort's. */
  last: string | null;
}

export interface GatewayInfo extends ServiceIdentity {
  startedAt: number;
  uptimeS: number;
  ready: boolean;
  pid: number;
}

export interface RouteView {
  name: string;
  path: string;
  match: "prefix" | "exact";
  methods: readonly string[];
  upstream: string;
  /** The route's limit in words (`10/1s per ip, burst 20`), or null when it has none. */
  rateLimit: string | null;
}

export interface GatewaySnapshot {
  schema: typeof SNAPSHOT_SCHEMA;
  /** Epoch ms the snapshot was taken. */
  at: number;
  gateway: GatewayInfo;
  limiter: LimiterStatus | null;
  config: ReloadStatus | null;
  upstreams: {
    name: string;
    protocol: "http" | "grpc";
    endpoints: EndpointView[];
    canary: CanarySummary | null;
  }[];
  routes: (RouteView & { series: RouteSeries })[];
}

export interface SnapshotSources {
  gateway: Gateway;
  identity: ServiceIdentity;
  lifecycle: Lifecycle;
  traffic: TrafficRecorder;
  rateLimiter?: RateLimiter;
  reloadStatus?: () => ReloadStatus;
}

export function endpointView(e: Endpoint, healthChecked = true): EndpointView {
  return {
    address: e.address,
    available: e.available,
    outSince: e.available ? null : epochMs(e.outSince),
    health: healthChecked ? e.health : "off",
    breaker: e.breakerState,
    breakerProbeAt: e.breakerState === "open" ? e.breaker.probeAt : null,
    ejected: e.ejected,
    ejectedUntil: e.ejected ? e.ejectedUntil : null,
    ejections: e.ejections,
    lastEjectedAt: e.lastEjectedAt,
    lastReadmittedAt: e.lastReadmittedAt,
    inflight: e.inflight,
    requests: e.requests,
    failures: e.failures,
    ewmaMs: round3(e.ewmaMs),
    lastRequestAt: e.lastRequestAt > 0 ? epochMs(e.lastRequestAt) : null,
    version: e.version ?? null,
  };
}

/** performance.now() → epoch ms: one mapping for every such time in a view, so they compare with each other. */
function epochMs(performanceNow: number): number {
  return Math.round(performance.timeOrigin + performanceNow);
}

export function canarySummary(canary: Canary | undefined): CanarySummary | null {
  if (!canary || canary.state === "idle" || canary.version === undefined) return null;
  const last = canary.history.at(-1);
  return {
    state: canary.state,
    version: canary.version,
    weight: canary.weight,
    step: canary.step >= 0 ? canary.step + 1 : null,
    steps: canary.policy.steps,
    last: last ? `step ${last.step} (${last.weight}%) ${last.verdict}: ${last.reason}` : null,
  };
}

/** This gateway now, with each route's last `seconds` completed seconds. */
export function takeSnapshot(sources: SnapshotSources, seconds: number): GatewaySnapshot {
  const { gateway, identity, lifecycle, traffic } = sources;
  const now = Date.now();
  const routes = gateway.config.routes;
  // A route a reload removed leaves the dashboard with its history.
  traffic.retain(new Set(routes.map((r) => r.name)));
  return {
    schema: SNAPSHOT_SCHEMA,
    at: now,
    gateway: {
      ...identity,
      startedAt: lifecycle.startedAt,
      uptimeS: Math.round((now - lifecycle.startedAt) / 1000),
      ready: lifecycle.isReady(),
      pid: process.pid,
    },
    limiter: sources.rateLimiter?.status() ?? null,
    config: sources.reloadStatus?.() ?? null,
    upstreams: [...gateway.upstreams.values()].map((u) => ({
      name: u.name,
      protocol: u.protocol,
      endpoints: u.endpoints.map((e) => endpointView(e, u.settings.healthCheck.enabled)),
      canary: canarySummary(u.canary),
    })),
    routes: routes.map((r) => ({
      name: r.name,
      path: r.path,
      match: r.match,
      methods: r.methods,
      upstream: r.upstream,
      rateLimit: r.rateLimit ? describeLimit(r.rateLimit) : null,
      series: traffic.series(r.name, seconds),
    })),
  };
}

function describeLimit(limit: RouteRateLimit): string {
  return limit.policies
    .map((p) => {
      const period = p.periodMs % 1000 === 0 ? `${p.periodMs / 1000}s` : `${p.periodMs}ms`;
      const key = p.key.type === "header" ? `${p.key.header} header` : p.key.type;
      return `${p.rate}/${period} per ${key}, burst ${p.burst}`;
    })
    .join("; ");
}
