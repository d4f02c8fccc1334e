/**
 * The admin surface, on its own port (ADMIN_PORT) so that nothing here is reachable through the
 * public listener: health, version, the loaded config and the live upstream state.
 */
import { Elysia } from "elysia";
import type { ServiceIdentity } from "../../lib/env.ts";
import type { Lifecycle } from "../../lib/lifecycle.ts";
import type { Gateway } from "./server.ts";

export function createAdminApp(gateway: Gateway, identity: ServiceIdentity, lifecycle: Lifecycle) {
  return new Elysia()
    .get("/healthz", () => ({ status: "ok" }))
    .get("/readyz", ({ set }) => {
      if (lifecycle.isReady()) return { status: "ready" };
      set.status = 503;
      return { status: "not ready" };
    })
    .get("/version", () => ({ ...identity, uptime_s: Math.round((Date.now() - lifecycle.startedAt) / 1000) }))
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
    .get("/upstreams", () =>
      [...gateway.upstreams.values()].map((u) => ({
        name: u.name,
        protocol: u.protocol,
        endpoints: u.endpoints.map((e) => ({ address: e.address, inflight: e.inflight, requests: e.requests })),
      })),
    );
}
