/**
 * The admin surface, on its own port (ADMIN_PORT) so that nothing here is reachable through the
 * public listener: health, version, the loaded config and the live upstream state.
 */
import { Elysia } from "elysia";
import type { Registry } from "prom-client";
import type { ServiceIdentity } from "../../lib/env.ts";
import type { Lifecycle } from "../../lib/lifecycle.ts";
import { metricsResponse } from "../../lib/telemetry/metrics.ts";
import type { Gateway } from "./server.ts";

/** `metrics`: the registry served on /metrics (gateway/src/metrics.ts); 404 there without one. */
export function createAdminApp(gateway: Gateway, identity: ServiceIdentity, lifecycle: Lifecycle, metrics?: Registry) {
  return new Elysia()
    .get("/healthz", () => ({ status: "ok" }))
    .get("/readyz", ({ set }) => {
      if (lifecycle.isReady()) return { status: "ready" };
      set.status = 503;
      return { status: "not ready" };
    })
    .get("/version", () => ({ ...identity, uptime_s: Math.round((Date.now() - lifecycle.startedAt) / 1000) }))
    // Prometheus scrapes here, never on the public listener.
    .get("/metrics", ({ set }) => {
      if (metrics) return metricsResponse(metrics);
      set.status = 404;
      return { status: "metrics are not enabled on this gateway" };
    })
    .get("/config", () => {
      const { file, routes, upstreams, limits, trustedProxies } = gateway.config;
      return {
        file,
        limits,
        trustedProxies,
        upstreams: [...upstreams.values()].map(({ name, protocol, endpoints, proto, timeoutMs }) => ({ name, protocol, endpoints, proto, timeoutMs })),
        routes: routes.map(({ grpcMethod: _resolved, ...route }) => route),
      };
    })
    // Live resilience state per endpoint; times are epoch ms (null: never).
    .get("/upstreams", () =>
      [...gateway.upstreams.values()].map((u) => ({
        name: u.name,
        protocol: u.protocol,
        settings: u.settings,
        retries: { ...u.retries },
        endpoints: u.endpoints.map((e) => ({
          address: e.address,
          available: e.available,
          health: e.health,
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
          ewmaMs: Math.round(e.ewmaMs * 1000) / 1000,
          lastRequestAt: e.lastRequestAt > 0 ? Math.round(performance.timeOrigin + e.lastRequestAt) : null,
        })),
      })),
    );
}
