/**
 * rpcapp: the UserVerify gRPC service. This file only wires config, servers and signals;
 * the services live in server.ts, the HTTP probes in http.ts.
 */
import { faultFromEnv } from "../../lib/fault.ts";
import { EnvError, serviceIdentity, startupEnv } from "../../lib/env.ts";
import { collectWhenIdle } from "../../lib/idle-gc.ts";
import { Lifecycle } from "../../lib/lifecycle.ts";
import { createLogger } from "../../lib/log.ts";
import { createMetricsRegistry, GrpcServerMetrics } from "../../lib/telemetry/metrics.ts";
import { startTracing } from "../../lib/telemetry/tracing.ts";
import { loadConfig } from "./config.ts";
import { startStatusServer } from "./http.ts";
import { batchedStdout } from "./log-output.ts";
import { startRpcServer } from "./server.ts";
import { startRpcTls } from "./tls.ts";
import { TlsFileError } from "../../lib/tls.ts";

const identity = startupEnv("rpcapp", () => serviceIdentity("rpcapp"));
// One write(2) per event-loop turn rather than per line: with an access line per RPC, the
// per-line write was the largest cost of a call (log-output.ts).
const log = startupEnv("rpcapp", () => createLogger(identity, { destination: batchedStdout() }));

try {
  const config = loadConfig();
  const tracing = await startTracing(identity, { log });
  const registry = createMetricsRegistry(identity);
  // Files read and checked before anything listens: a missing or mismatched one stops the start.
  const tls = config.tls && startRpcTls(config.tls, { log, registry });
  const lifecycle = new Lifecycle({
    drainDelayMs: config.drainDelayMs,
    shutdownTimeoutMs: config.shutdownTimeoutMs,
    log,
  });
  const rpc = await startRpcServer({
    host: config.host,
    port: config.port,
    identity,
    log,
    lifecycle,
    maxConnectionAgeMs: config.maxConnectionAgeMs,
    maxConnectionAgeGraceMs: config.maxConnectionAgeGraceMs,
    logProbes: config.logProbes,
    fault: faultFromEnv(),
    ...(tls && { credentials: tls.credentials }),
    telemetry: {
      tracer: tracing.tracer,
      metrics: new GrpcServerMetrics(registry),
      // Without an exporter no span would leave the process: take ids only, without the SDK.
      recording: tracing.isExporting,
    },
  });
  const http = startStatusServer({ host: config.host, port: config.metricsPort, identity, lifecycle, registry });

  // On SIGTERM the lifecycle turns not-ready (gRPC health NOT_SERVING, /readyz 503), keeps
  // serving for DRAIN_DELAY_MS, then runs these in order. gRPC gets what is left of
  // SHUTDOWN_TIMEOUT_MS less a margin, so it is cut short before the lifecycle's own deadline
  // would exit non-zero.
  const grpcGraceMs = Math.max(100, config.shutdownTimeoutMs - config.drainDelayMs - 500);
  lifecycle.onStop("grpc", () => rpc.stop(grpcGraceMs));
  lifecycle.onStop("http", () => http.stop());
  if (tls) lifecycle.onStop("tls", () => tls.stop());
  // Last, so the spans of the calls drained above are exported too.
  lifecycle.onStop("tracing", () => tracing.shutdown());
  lifecycle.handleSignals();
  collectWhenIdle(config.gcWhenIdle, log);
  lifecycle.markReady();
  log.info(
    {
      grpc_port: rpc.port,
      http_port: http.port,
      metrics: `${http.url.href}metrics`,
      traces: tracing.config.tracesUrl ?? null,
      host: config.host,
      // The HTTP port stays plain text (probes and scrapers present no certificate).
      tls: tls ? tls.summary() : null,
    },
    "rpcapp listening",
  );
} catch (err) {
  // A bad setting or certificate file is the operator's to fix: one line naming it, as webapp and
  // the gateway write it, not a stack trace.
  if (err instanceof EnvError || err instanceof TlsFileError) log.fatal(err.message);
  else log.fatal({ err }, "rpcapp failed to start");
  process.exit(1);
}
