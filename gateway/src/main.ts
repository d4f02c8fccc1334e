/**
 * The gateway process: reads config and env, starts the public listener (shared by every local
 * gateway process through SO_REUSEPORT) and the admin listener, and drains on SIGTERM.
 */
import { envInt, envPort, envString, serviceIdentity } from "../../lib/env.ts";
import { Lifecycle } from "../../lib/lifecycle.ts";
import { createLogger } from "../../lib/log.ts";
import { createMetricsRegistry } from "../../lib/telemetry/metrics.ts";
import { startTracing } from "../../lib/telemetry/tracing.ts";
import { createAdminApp } from "./admin/app.ts";
import { Dashboard } from "./admin/dashboard.ts";
import { PeerDirectory } from "./admin/peers.ts";
import { ConfigError } from "./config/load.ts";
import { ConfigReloader, loadConfigFile } from "./config/reload.ts";
import { RateLimiter } from "./ratelimit/limiter.ts";
import { applyHeaderLimit } from "./limits.ts";
import { GatewayMetrics } from "./metrics.ts";
import { Gateway } from "./server.ts";
import { gatewayTelemetry } from "./telemetry.ts";

const identity = serviceIdentity("gateway");
const log = createLogger(identity);
const host = envString("HOST", "0.0.0.0");
const port = envPort("PORT", 8080);
const adminPort = envPort("ADMIN_PORT", 9901);
const routesFile = envString("ROUTES_FILE", "gateway/routes.yaml");

let loaded;
try {
  loaded = loadConfigFile(routesFile);
} catch (err) {
  if (err instanceof ConfigError) {
    // Printed plainly as well as logged: this is what a user editing routes.yaml reads.
    console.error(err.message);
    log.fatal({ file: err.file, problems: err.problems }, "invalid config; not starting");
    process.exit(78); // EX_CONFIG
  }
  throw err;
}
const { config } = loaded;

const lifecycle = new Lifecycle({
  drainDelayMs: envInt("DRAIN_DELAY_MS", 0, { min: 0 }),
  shutdownTimeoutMs: envInt("SHUTDOWN_TIMEOUT_MS", 20_000, { min: 100 }),
  log,
});
// One budget for every gateway through Redis; without REDIS_URL each process keeps its own.
// start() waits at most 1 s for Redis, so the first requests already share the budget.
const rateLimiter = new RateLimiter({
  redisUrl: envString("REDIS_URL", "") || undefined,
  settings: config.rateLimit,
  log,
});
await rateLimiter.start();
const gateway = new Gateway(config, { identity, log, lifecycle, rateLimiter });
// Spans to OTEL_EXPORTER_OTLP_ENDPOINT (ids only without one); metrics on the admin port.
const tracing = await startTracing(identity, { log });
const metrics = new GatewayMetrics(createMetricsRegistry(identity), gateway, rateLimiter);
// routes.yaml is reloaded when it changes and on SIGHUP; a bad edit is rejected and the last good config keeps serving.
const reloader = new ConfigReloader({ file: routesFile, initial: loaded, log, apply: (next) => gateway.reload(next) });
// The live dashboard on the admin port merges every replica listed by GATEWAY_PEERS / GATEWAY_PEERS_DNS.
const dashboard = new Dashboard({
  gateway,
  identity,
  lifecycle,
  rateLimiter,
  reloader,
  peers: PeerDirectory.fromEnv(adminPort),
});
gatewayTelemetry.configure({ tracer: tracing.tracer, metrics, traffic: dashboard.traffic });
// Once bound, the shared public port gets traffic at once (SO_REUSEPORT has no readiness gate):
// resolve the upstreams' names first (each lookup is bounded), or the first requests answer 503.
await Promise.all([...gateway.upstreams.values()].map((u) => u.ready));

// Request line + headers past limits.maxHeaderBytes get 431 from Bun's parser (process-wide setting).
applyHeaderLimit(config.limits.maxHeaderBytes);
const server = Bun.serve({
  hostname: host,
  port,
  // Closes idle keep-alive connections and bodies that do not arrive in time (slow clients);
  // routes slower than this extend their own request's deadline (limits.ts).
  idleTimeout: config.limits.idleTimeoutSec,
  // Several gateway processes bind the same port; the kernel spreads connections across them.
  reusePort: true,
  // Bun's own limit is only a backstop (it answers a bare 413); the per-route limit, checked in
  // the request path, answers problem+json. So Bun's is set well above every route's.
  maxRequestBodySize: Math.max(gateway.maxBodyBytes * 4, 8 * 1024 * 1024),
  fetch: gateway.fetch,
  error(err) {
    log.error({ err }, "server error");
    return new Response(null, { status: 500 });
  },
});
const admin = createAdminApp(gateway, identity, lifecycle, metrics.registry, { dashboard, reloader }).listen({
  hostname: host,
  port: adminPort,
});

lifecycle.onStop("config reloader", () => reloader.stop());
lifecycle.onStop("public listener", () => server.stop(false));
// Open dashboard pages hold an event stream each; the admin listener's stop waits for them.
lifecycle.onStop("dashboard event streams", () => dashboard.close());
lifecycle.onStop("admin listener", async () => {
  await admin.stop();
});
lifecycle.onStop("upstream connections", () => gateway.close());
lifecycle.onStop("rate limiter", () => rateLimiter.close());
// Last, so the spans of the requests drained above are exported too.
lifecycle.onStop("tracing", () => tracing.shutdown());
lifecycle.handleSignals();
reloader.start();
lifecycle.markReady();
log.info(
  {
    port: server.port,
    admin_port: adminPort,
    metrics: `${admin.server?.url.href ?? ""}metrics`,
    dashboard: `${admin.server?.url.href ?? ""}dashboard`,
    traces: tracing.config.tracesUrl ?? null,
    routes: config.routes.length,
    upstreams: [...config.upstreams.keys()],
    config: routesFile,
  },
  "gateway ready",
);
