/**
 * webapp's entry point: read the config, open the store, serve, and drain on SIGTERM.
 */
import { EnvError, serviceIdentity } from "../../lib/env.ts";
import { Lifecycle } from "../../lib/lifecycle.ts";
import { createLogger } from "../../lib/log.ts";
import { redactUrl } from "../../lib/redis.ts";
import { createMetricsRegistry, HttpServerMetrics } from "../../lib/telemetry/metrics.ts";
import { startTracing } from "../../lib/telemetry/tracing.ts";
import { createApp } from "./app.ts";
import { loadConfig } from "./config.ts";
import { openStore } from "./store/index.ts";

const identity = serviceIdentity("webapp");
const log = createLogger(identity);

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
  const app = createApp({
    store,
    identity,
    log,
    lifecycle,
    maxBodyBytes: config.maxBodyBytes,
    maxJsonDepth: config.maxJsonDepth,
    logProbes: config.logProbes,
    metrics: { registry, http: new HttpServerMetrics(registry) },
    tracer: tracing.tracer,
  });

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
  lifecycle.onStop("store", () => store.close());
  // Last, so the spans of the requests drained above are exported too.
  lifecycle.onStop("tracing", () => tracing.shutdown());
  lifecycle.handleSignals();
  lifecycle.markReady();
  log.info(
    {
      url: app.server?.url.href,
      metrics: `${app.server?.url.href}metrics`,
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
  if (err instanceof EnvError) log.fatal(err.message);
  else log.fatal({ err }, "webapp failed to start");
  process.exit(1);
}
