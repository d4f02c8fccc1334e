/**
 * The admin API, on its own port (ADMIN_PORT) so that nothing here is reachable through the
 * public listener: health, version, the loaded config and its reloads, the live upstream state,
 * metrics, the canaries (canary.ts); and it mounts the live dashboard of the whole tier (../dashboard/) when given one.
 *
 * With an AdminAuth (ADMIN_TOKEN set), every route but /metrics, /healthz and /readyz needs the
 * token (auth.ts); without one, main.ts binds the listener to loopback. Either way no web page
 * of another origin gets in (lib/request-guard.ts): a foreign Origin is 403, a state-changing request
 * without `Content-Type: application/json` 415, and without a token a Host that is not loopback,
 * an address or ADMIN_HOST (DNS rebinding) 403. The config source is shown with its secrets
 * redacted either way (config-source.ts).
 */
import { Elysia } from "elysia";
import type { Registry } from "prom-client";
import type { ServiceIdentity } from "../../../lib/env.ts";
import type { Lifecycle } from "../../../lib/lifecycle.ts";
import { problemResponse } from "../../../lib/problem.ts";
import { metricsResponse } from "../../../lib/telemetry/metrics.ts";
import type { ConfigReloader } from "../config/reload.ts";
import type { Gateway } from "../server.ts";
import type { Dashboard } from "../dashboard/index.ts";
import { endpointView } from "../dashboard/snapshot.ts";
import { type AdminAuth, LOGIN_PATH } from "./auth.ts";
import { canaryRoutes } from "./canary.ts";
import { redactConfigSource } from "./config-source.ts";
import { contentTypeProblem, originProblem } from "../../../lib/request-guard.ts";

export interface AdminExtras {
  /** Serves /dashboard/*; without it those paths answer 404. */
  dashboard?: Dashboard;
  /** Its status is part of /config, and the text in force is /config/source. */
  reloader?: ConfigReloader;
  /** Requires the admin token on every route but the open ones; without it, no authentication. */
  auth?: AdminAuth;
  /** What the config source's redaction reads: the environment (secrets the file names) and values never to show. */
  redaction?: { env: Readonly<Record<string, string | undefined>>; hide: readonly string[] };
}

/** `metrics`: the registry served on /metrics (../telemetry/metrics.ts); 404 there without one. */
export function createAdminApp(
  gateway: Gateway,
  identity: ServiceIdentity,
  lifecycle: Lifecycle,
  metrics?: Registry,
  extras: AdminExtras = {},
) {
  const { dashboard, reloader, auth, redaction = { env: {}, hide: [] } } = extras;
  // The routes.yaml text in force, as written (`${VAR}` references unexpanded), secrets redacted.
  const configSource = () =>
    reloader
      ? new Response(redactConfigSource(reloader.source, redaction.env, redaction.hide), {
          headers: {
            "content-type": "text/yaml; charset=utf-8",
            "x-config-digest": reloader.status.digest,
            "cache-control": "no-store",
          },
        })
      : problemResponse({
          title: "Not Found",
          status: 404,
          detail: "this gateway does not keep its config source (no reloader)",
        });
  const app = new Elysia()
    // Before routing, so an unknown path tells nothing either: first whether a browser page of
    // another origin (or a rebound name) sent it, then the token, then the body's type.
    .onRequest(
      async ({ request, server }) =>
        originProblem(request, { authenticated: auth !== undefined, listenerHost: server?.hostname }) ??
        (await auth?.gate(request)) ??
        contentTypeProblem(request, auth ? LOGIN_PATH : undefined),
    )
    // No route for the path, or none for its method: problem+json like every other error here.
    // Elysia routes only what the guard above let through, so without the token a request learns
    // the same 401 on every path but the open ones, never which paths or methods exist.
    .onError(({ code, request }): Response | undefined =>
      code === "NOT_FOUND" ? routeProblem(request, app.routes) : undefined,
    )
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
        // When the config in force was loaded, and the last edit that was rejected (times: epoch ms).
        reload: reloader?.status ?? null,
        limits,
        trustedProxies,
        upstreams: [...upstreams.values()].map(({ name, protocol, endpoints, proto, timeoutMs }) => ({
          name,
          protocol,
          endpoints,
          proto,
          timeoutMs,
        })),
        routes: routes.map(({ grpcMethod: _resolved, ...route }) => route),
      };
    })
    .get("/config/source", configSource)
    // The dashboard page's copy: its session cookie is scoped to /dashboard (auth.ts).
    .get("/dashboard/config-source", configSource)
    // Live resilience state per endpoint; times are epoch ms (null: never).
    .get("/upstreams", () =>
      [...gateway.upstreams.values()].map((u) => ({
        name: u.name,
        protocol: u.protocol,
        settings: u.settings,
        retries: { ...u.retries },
        endpoints: u.endpoints.map((e) => endpointView(e)),
      })),
    )
    .use(canaryRoutes(gateway));
  return dashboard ? app.use(dashboard.routes()) : app;
}

/**
 * 404 for a path no route has; 405 for one whose routes take other methods, with those in Allow.
 * They come from the app's own route list, the canaries' and the dashboard's included, matched
 * as Elysia matches paths: `:name` one segment, `*` the rest, a trailing slash ignored; HEAD
 * wherever GET is, which Elysia answers with the GET route.
 */
function routeProblem(request: Request, routes: readonly { method: string; path: string }[]): Response {
  const { pathname } = new URL(request.url);
  const methods = new Set(routes.filter((route) => pathMatches(route.path, pathname)).map((route) => route.method));
  if (methods.has("GET")) methods.add("HEAD");
  methods.delete("WS");
  // A method the path does take (or ALL) got here because its route itself said not found.
  if (methods.size === 0 || methods.has(request.method) || methods.has("ALL"))
    return problemResponse({ title: "Not Found", status: 404, detail: `no admin route at ${pathname}` });
  const allow = [...methods].sort().join(", ");
  return problemResponse(
    { title: "Method Not Allowed", status: 405, detail: `${pathname} does not take ${request.method}, only ${allow}` },
    { allow },
  );
}

function pathMatches(pattern: string, path: string): boolean {
  const want = segments(pattern);
  const got = segments(path);
  for (const [i, part] of want.entries()) {
    if (part === "*") return true;
    const given = got[i];
    if (given === undefined || (part.startsWith(":") ? given === "" : given !== part)) return false;
  }
  return want.length === got.length;
}

const segments = (path: string) => (path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path).split("/");
