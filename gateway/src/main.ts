/**
 * The gateway process: reads its settings (settings.ts, the only reader of the environment) and
 * routes.yaml, wires the parts — telemetry, rate limiter, peer directory, dashboard, reloader —
 * starts the public listeners (plain, and HTTPS when routes.yaml has a `tls` block; each shared by
 * every local gateway process through SO_REUSEPORT) and the admin listener, and drains on SIGTERM.
 *
 * `gateway --check <routes.yaml>` validates a routes file and exits instead (check.ts).
 */
import { startupEnv } from "../../lib/env.ts";
import { collectWhenIdle } from "../../lib/idle-gc.ts";
import { Lifecycle } from "../../lib/lifecycle.ts";
import { bufferedLogger, createLogger } from "../../lib/log.ts";
import { createMetricsRegistry } from "../../lib/telemetry/metrics.ts";
import { startTracing, tracingConfigFromEnv } from "../../lib/telemetry/tracing.ts";
import type { TlsListener } from "../../lib/tls-listener.ts";
import { logCanaryEvent } from "./canary/event-log.ts";
import { AdminAuth } from "./admin/auth.ts";
import { checkRoutesFile, EX_CONFIG, parseArgs, usage } from "./check.ts";
import { ConfigError } from "./config/load.ts";
import { ConfigReloader, type LoadedConfig, loadConfigFile } from "./config/reload.ts";
import { type EdgeMaterial, startEdgeTls } from "./edge/tls-listener.ts";
import { TrafficRecorder } from "./dashboard/traffic.ts";
import { applyHeaderLimit } from "./limits.ts";
import { PeerDirectory } from "./peers.ts";
import { RateLimiter } from "./ratelimit/limiter.ts";
import { PeerCounter } from "./ratelimit/peers.ts";
import { Gateway } from "./server.ts";
import { checkHttpsPort, type GatewaySettings, loadSettings } from "./settings.ts";
import { GatewayTelemetry } from "./telemetry/index.ts";
import { GatewayMetrics } from "./telemetry/metrics.ts";
import { dnsServerResolver, systemResolver } from "./upstream/discovery.ts";

const command = parseArgs(process.argv.slice(2));
if (command.kind === "usage") process.exit(usage());
// The environment goes in as data, for the file's ${VAR} references: checking a file needs no settings.
if (command.kind === "check") process.exit(checkRoutesFile(command.file, process.env));

const settings: GatewaySettings = startupEnv("gateway", loadSettings);
// The OTEL_* variables are checked with the others, before anything starts.
const tracingConfig = startupEnv("gateway", () => tracingConfigFromEnv(settings.env));
const { identity } = settings;
const log = createLogger(identity, { level: settings.logLevel, flushIntervalMs: settings.logFlushMs });

let loaded: LoadedConfig;
try {
  loaded = loadConfigFile(settings.routesFile, settings.env);
} catch (err) {
  if (err instanceof ConfigError) {
    // Printed plainly as well as logged: this is what a user editing routes.yaml reads.
    console.error(err.message);
    log.fatal({ file: err.file, problems: err.problems }, "invalid config; not starting");
    process.exit(EX_CONFIG);
  }
  throw err;
}
const { config } = loaded;
// With a tls block the HTTPS listener starts too: on PORT itself (HTTPS_PORT's default 8443 chosen
// as PORT, say) both listeners would share the port and half the connections of each would fail.
if (config.tls) startupEnv("gateway", () => checkHttpsPort(settings));

// SIGHUP's default action ends the process: until the reloader takes it over, at the end of
// start-up, it is only noted (the file is being read anyway).
const hupDuringStart = () => log.info("SIGHUP during start-up: ignored, routes.yaml is read as the gateway starts");
process.on("SIGHUP", hupDuringStart);

const lifecycle = new Lifecycle({
  drainDelayMs: settings.drainDelayMs,
  shutdownTimeoutMs: settings.shutdownTimeoutMs,
  log,
});
// The other replicas, for the rate limiter's `local` fallback and the dashboard's merged view.
const peers = new PeerDirectory({ ...settings.peers, adminPort: settings.adminPort });
// One budget for every gateway through Redis; without REDIS_URL each process keeps its own.
// start() waits at most 1 s for Redis, so the first requests already share the budget.
const rateLimiter = new RateLimiter({
  redisUrl: settings.redisUrl,
  settings: config.rateLimit,
  log,
  // Only the `local` fallback divides by the live replicas; without Redis there is no fallback.
  ...(settings.redisUrl
    ? { peers: new PeerCounter({ directory: peers, intervalMs: settings.peers.intervalMs, log }) }
    : {}),
});
await rateLimiter.start();
// Spans to OTEL_EXPORTER_OTLP_ENDPOINT (ids only without one); metrics on the admin port.
const tracing = await startTracing(identity, { log, config: tracingConfig });
// The dashboard's per-route figures: the request path records into them through the telemetry.
const traffic = new TrafficRecorder();
const metrics = new GatewayMetrics(createMetricsRegistry(identity), rateLimiter);
const gateway = new Gateway(config, {
  identity,
  log,
  lifecycle,
  rateLimiter,
  telemetry: new GatewayTelemetry({
    tracer: tracing.tracer,
    metrics,
    recorder: traffic,
    recording: tracing.isExporting,
  }),
  resolver: settings.dnsServer ? dnsServerResolver(settings.dnsServer) : systemResolver,
  logProbes: settings.logProbes,
  accessLog: bufferedLogger(log),
  httpsPort: settings.httpsPort,
  onCanaryEvent: (upstream, event) => logCanaryEvent(log, upstream, event),
});
metrics.watch(gateway);
// routes.yaml is reloaded when it changes and on SIGHUP; a bad edit is rejected and the last good config keeps serving.
const reloader = new ConfigReloader({
  file: settings.routesFile,
  initial: loaded,
  log,
  env: settings.env,
  apply: async (next) => {
    // The HTTPS listener starts with the process: a tls block added by a reload would have nothing
    // to serve it, and its redirectHttp would send every client to a port nobody listens on.
    if (next.tls && !https)
      throw new Error(
        "the tls block is new, and the HTTPS listener starts only with the process: restart the gateway to serve HTTPS",
      );
    // Nor does it stop without one: the reload would drop HSTS and the redirect while the listener
    // went on serving the old certificates.
    if (!next.tls && https)
      throw new Error(
        "the tls block is gone (or off), and the HTTPS listener stops only with the process: restart the gateway to stop serving HTTPS",
      );
    await gateway.reload(next);
    // Other certificates named in the tls block: the HTTPS listener hands over to them now.
    await https?.recheck();
  },
});
// Once bound, the shared public port gets traffic at once (SO_REUSEPORT has no readiness gate):
// resolve the upstreams' names first (each lookup is bounded), or the first requests answer 503.
await Promise.all([...gateway.upstreams.values()].map((u) => u.ready));

// Request line + headers past limits.maxHeaderBytes get 431 from Bun's parser (process-wide setting).
applyHeaderLimit(config.limits.maxHeaderBytes);
const serverError = (err: Error): Response => {
  log.error({ err }, "server error");
  return new Response(null, { status: 500 });
};
// The HTTPS listener's: its answers carry HSTS like every other HTTPS answer of the gateway.
const serverErrorSecure = (err: Error): Response => {
  const response = serverError(err);
  const hsts = gateway.config.tls?.hsts;
  if (hsts) response.headers.set("strict-transport-security", hsts);
  return response;
};
// Bun's own limit is only a backstop (it answers a bare 413); the per-route limit, checked in
// the request path, answers problem+json. So Bun's is set well above every route's.
const maxRequestBodySize = Math.max(gateway.maxBodyBytes * 4, 8 * 1024 * 1024);
/**
 * Starts a listener, or ends the process with one line on stderr (`said`, and why) and a fatal log
 * line: Bun's own error names no variable.
 */
function listenOrExit<T>(start: () => T, what: string, said: string, fields: Record<string, unknown>): T {
  try {
    return start();
  } catch (err) {
    log.fatal({ err, ...fields }, `cannot start ${what}; not starting`);
    console.error(`gateway: ${said}: ${(err as Error).message}`);
    process.exit(1);
  }
}
// A HOST that is no address of this machine (or does not resolve), or a PORT held by a process
// that does not share it (SO_REUSEPORT), ends the start-up here.
const server = listenOrExit(
  () =>
    Bun.serve({
      hostname: settings.host,
      port: settings.port,
      // Closes idle keep-alive connections and bodies that do not arrive in time (slow clients);
      // routes slower than this extend their own request's deadline (limits.ts).
      idleTimeout: config.limits.idleTimeoutSec,
      // Several gateway processes bind the same port; the kernel spreads connections across them.
      reusePort: true,
      maxRequestBodySize,
      fetch: gateway.fetch,
      error: serverError,
    }),
  "the listener",
  `cannot listen on ${settings.host}:${settings.port} (HOST, PORT)`,
  { host: settings.host, port: settings.port },
);
// HTTPS_PORT, when routes.yaml has a tls block: the same routes, certificates renewed in place.
// The files were checked at load; a failure here is the port (in use) or a file gone since.
const https: TlsListener<EdgeMaterial> | undefined = config.tls
  ? listenOrExit(
      () =>
        startEdgeTls({
          host: settings.host,
          port: settings.httpsPort,
          current: () => gateway.config.tls,
          fetch: gateway.fetchSecure,
          error: serverErrorSecure,
          idleTimeout: config.limits.idleTimeoutSec,
          maxRequestBodySize,
          log,
          registry: metrics.registry,
        }),
      "the HTTPS listener",
      `cannot start the HTTPS listener on port ${settings.httpsPort}`,
      { https_port: settings.httpsPort },
    )
  : undefined;
// The admin plane (Elysia: the API, the dashboard, /metrics) is loaded once the public listener
// serves, so its module loading is not on the way to the first proxied request.
const [{ createAdminApp }, { Dashboard }] = await Promise.all([
  import("./admin/app.ts"),
  import("./dashboard/index.ts"),
]);
const dashboard = new Dashboard({
  gateway,
  identity,
  lifecycle,
  rateLimiter,
  reloader,
  peers,
  traffic,
  ...(settings.adminToken ? { peerToken: settings.adminToken } : {}),
});
// With ADMIN_TOKEN every admin route but /metrics and the probes needs it; without, settings.ts
// has kept the listener on loopback unless ADMIN_INSECURE says otherwise (docs/security.md).
const admin = createAdminApp(gateway, identity, lifecycle, metrics.registry, {
  dashboard,
  reloader,
  ...(settings.adminToken ? { auth: new AdminAuth(settings.adminToken) } : {}),
  redaction: { env: settings.env, hide: settings.adminToken ? [settings.adminToken] : [] },
});
listenOrExit(
  () =>
    admin.listen({
      hostname: settings.adminHost,
      port: settings.adminPort,
      // Elysia turns reusePort on by default: a second gateway on a taken ADMIN_PORT would then
      // share it, the kernel handing each admin connection (metrics scrapes, the dashboard's peer
      // fetches, a token-less process answering for one with a token) to either. It must fail.
      reusePort: false,
    }),
  "the admin listener",
  `cannot start the admin listener on port ${settings.adminPort}`,
  { admin_port: settings.adminPort },
);
// Without a token the admin plane is safe only on loopback (make dev): say so once, as a warning
// only when ADMIN_INSECURE opened it wider.
if (!settings.adminToken && settings.adminInsecure)
  log.warn(
    { admin_host: settings.adminHost },
    "the admin listener has no authentication and ADMIN_INSECURE lets it bind beyond loopback: whoever reaches it reads the config and the dashboard; set ADMIN_TOKEN",
  );
else if (!settings.adminToken)
  log.info(
    { admin_host: settings.adminHost },
    "the admin listener has no authentication (ADMIN_TOKEN is not set), so it listens on loopback only",
  );

lifecycle.onStop("config reloader", () => reloader.stop());
// Both public listeners close together: one after the other, the second kept accepting new
// connections for as long as the first one's requests took to finish.
lifecycle.onStop("public listeners", async () => {
  await Promise.all([server.stop(false), https?.stop()]);
});
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
process.off("SIGHUP", hupDuringStart);
collectWhenIdle(settings.gcWhenIdle, log);
lifecycle.markReady();
log.info(
  {
    port: server.port,
    ...(https ? { https_port: https.port, tls: https.summary() } : {}),
    admin_port: settings.adminPort,
    admin_auth: settings.adminToken ? "bearer token" : "none",
    metrics: `${admin.server?.url.href ?? ""}metrics`,
    dashboard: `${admin.server?.url.href ?? ""}dashboard`,
    traces: tracing.config.tracesUrl ?? null,
    routes: config.routes.length,
    upstreams: [...config.upstreams.keys()],
    config: settings.routesFile,
  },
  "gateway ready",
);
