/**
 * webapp's entry point: read the config, open the store, serve, and drain on SIGTERM.
 *
 * Without TLS, PORT serves everything in plain HTTP. With TLS (TLS_CERT_FILE, TLS_KEY_FILE), PORT
 * serves HTTPS only, renewing its certificate in place (tls-listener.ts), and METRICS_PORT serves
 * the probes and /metrics in plain HTTP (status-listener.ts).
 */
import { faultFromEnv } from "../../lib/fault.ts";
import { EnvError, serviceIdentity, startupEnv } from "../../lib/env.ts";
import { collectWhenIdle } from "../../lib/idle-gc.ts";
import { Lifecycle } from "../../lib/lifecycle.ts";
import { createLogger } from "../../lib/log.ts";
import { redactUrl } from "../../lib/redis.ts";
import type { Registry } from "prom-client";
import { createMetricsRegistry, HttpServerMetrics } from "../../lib/telemetry/metrics.ts";
import { startTracing } from "../../lib/telemetry/tracing.ts";
import { type ServiceTlsSettings, TlsFileError } from "../../lib/tls.ts";
import { createApp } from "./app.ts";
import { loadConfig, type WebappConfig } from "./config.ts";
import { startStatusListener } from "./status-listener.ts";
import { TlsListener } from "./tls-listener.ts";
import { openStore } from "./store/index.ts";

const identity = startupEnv("webapp", () => serviceIdentity("webapp"));
const log = startupEnv("webapp", () => createLogger(identity));

try {
  const config = loadConfig();
  const tracing = await startTracing(identity, { log });
  const registry = createMetricsRegistry(identity);
  const store = openStore(
    { kind: config.store, sqlitePath: config.dbPath, redis: config.redis, maxProjects: config.maxProjects },
    log,
  );
  const lifecycle = new Lifecycle({
    drainDelayMs: config.drainDelayMs,
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    log,
  });
  const http = new HttpServerMetrics(registry);
  const app = createApp({
    store,
    identity,
    log,
    lifecycle,
    maxBodyBytes: config.maxBodyBytes,
    maxJsonDepth: config.maxJsonDepth,
    logProbes: config.logProbes,
    fault: faultFromEnv(),
    metrics: { registry, http },
    tracer: tracing.tracer,
  });

  const listening = config.tls
    ? listenTls(config, config.tls, app, lifecycle, registry)
    : listenPlain(config, app, lifecycle);
  lifecycle.onStop("access-log", () => afterLastResponse(http));
  lifecycle.onStop("store", () => store.close());
  // Last, so the spans of the requests drained above are exported too.
  lifecycle.onStop("tracing", () => tracing.shutdown());
  lifecycle.handleSignals();
  collectWhenIdle(config.gcWhenIdle, log);
  lifecycle.markReady();
  log.info(
    {
      ...listening,
      traces: tracing.config.tracesUrl ?? null,
      store: config.store,
      ...(config.redis
        ? {
            redis: config.redis.sentinel ? "(the master the Sentinels name)" : redactUrl(config.redis.url),
            redis_sentinels: config.redis.sentinel?.addresses.join(",") ?? null,
            redis_wait_replicas: config.redis.waitReplicas,
          }
        : { db_path: config.dbPath }),
      max_projects: config.maxProjects,
      max_body_bytes: config.maxBodyBytes,
      max_json_depth: config.maxJsonDepth,
    },
    "webapp listening",
  );
} catch (err) {
  if (err instanceof EnvError || err instanceof TlsFileError) log.fatal(err.message);
  else log.fatal({ err }, "webapp failed to start");
  process.exit(1);
}

type App = ReturnType<typeof createApp>;

/**
 * Elysia writes a request's access line, metrics and span end a turn after its response
 * (onAfterResponse, on setImmediate): once the listeners have stopped, the drained requests'
 * are waited for (up to `timeoutMs`), or the exit would lose them.
 */
async function afterLastResponse(http: HttpServerMetrics, timeoutMs = 2_000): Promise<void> {
  const until = performance.now() + timeoutMs;
  while (http.inFlight + http.scrapesInFlight > 0 && performance.now() < until) await Bun.sleep(5);
}

/** PORT in plain HTTP: every route, as without TLS. */
function listenPlain(config: WebappConfig, app: App, lifecycle: Lifecycle) {
  app.listen({
    hostname: config.host,
    port: config.port,
    // Elysia turns reusePort on by default; a second webapp on a taken port must fail, not share it.
    reusePort: false,
  });
  // Listeners stop first (in-flight requests finish), then the store they were using.
  lifecycle.onStop("http", async () => {
    await app.stop();
  });
  return { url: app.server?.url.href, metrics: `${app.server?.url.href}metrics` };
}

/**
 * PORT in HTTPS only (the app's handler on whichever listener presents the current certificate),
 * and METRICS_PORT in plain HTTP for the probes and /metrics. Both serve `app.fetch` (Elysia's own
 * router, the one the in-process tests drive through app.handle) on listeners of their own:
 * `app.listen` holds one server and cannot hand its port over to another.
 */
function listenTls(
  config: WebappConfig,
  settings: ServiceTlsSettings,
  app: App,
  lifecycle: Lifecycle,
  registry: Registry,
) {
  const https = new TlsListener({ host: config.host, port: config.port, settings, fetch: app.fetch, log, registry });
  // Listeners stop first (in-flight requests finish), then the store they were using; the status
  // port last of them, so probes see the drain's 503 until the end.
  lifecycle.onStop("http", () => https.stop());
  const status = startStatusListener({ host: config.host, port: config.metricsPort, fetch: app.fetch, identity });
  lifecycle.onStop("status-http", async () => {
    await status.stop(false);
  });
  return { url: https.server.url.href, metrics: `${status.url.href}metrics`, tls: https.summary() };
}
