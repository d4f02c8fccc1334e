/**
 * OpenTelemetry tracing for every service, configured from the standard environment variables:
 *
 *   OTEL_EXPORTER_OTLP_ENDPOINT   base URL of an OTLP/HTTP receiver (Jaeger, a collector); spans go
 *                                 to <endpoint>/v1/traces. Unset: nothing is exported.
 *   OTEL_EXPORTER_OTLP_PROTOCOL   http/protobuf (default, as the OTLP exporter specification has
 *                                 it) or http/json; OTEL_EXPORTER_OTLP_TRACES_PROTOCOL wins over it.
 *                                 Protobuf is ~2.5× smaller on the wire for the same CPU
 *                                 (bench/README.md, 2026-12-07 fifth stop).
 *   OTEL_TRACES_SAMPLER           always_on | always_off | traceidratio | parentbased_always_on
 *                                 (default) | parentbased_always_off | parentbased_traceidratio
 *   OTEL_TRACES_SAMPLER_ARG       the ratio for the *traceidratio samplers, 0..1 (default 1)
 *   OTEL_BSP_SCHEDULE_DELAY       ms between batch exports (default 5000)
 *
 * Without an endpoint the SDK still runs with a sampler that records nothing (unless the caller's
 * traceparent asks for it): every request still gets trace and span ids — in its log lines and in
 * the `traceparent` it passes on — at the cost of generating two random ids.
 *
 * Context lives in AsyncLocalStorage (Bun implements it natively), and is carried between services
 * by the W3C `traceparent`/`tracestate` headers (HTTP) or metadata keys (gRPC), see spans.ts.
 */
import { context, diag, DiagLogLevel, trace, type Tracer } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { resourceFromAttributes } from "@opentelemetry/resources";
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BatchSpanProcessor,
  ParentBasedSampler,
  type Sampler,
  type SpanExporter,
  type SpanProcessor,
  TraceIdRatioBasedSampler,
  TracerProvider,
} from "@opentelemetry/sdk-trace";
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from "@opentelemetry/semantic-conventions";
import { EnvError, envEnum, envInt, envString, type ServiceIdentity } from "../env.ts";
import type { Logger } from "../log.ts";

type Env = Record<string, string | undefined>;

export const SAMPLERS = [
  "always_on",
  "always_off",
  "traceidratio",
  "parentbased_always_on",
  "parentbased_always_off",
  "parentbased_traceidratio",
] as const;
export type SamplerName = (typeof SAMPLERS)[number];

/** The OTLP/HTTP encodings the exporter speaks (OTLP over gRPC is not offered). */
export const OTLP_PROTOCOLS = ["http/protobuf", "http/json"] as const;
export type OtlpProtocol = (typeof OTLP_PROTOCOLS)[number];

export interface TracingConfig {
  /** OTLP/HTTP traces URL (…/v1/traces), or undefined to export nothing. */
  tracesUrl: string | undefined;
  protocol: OtlpProtocol;
  sampler: SamplerName;
  ratio: number;
  scheduleDelayMs: number;
}

export function tracingConfigFromEnv(env: Env = process.env): TracingConfig {
  const endpoint = envString("OTEL_EXPORTER_OTLP_ENDPOINT", "", env).trim();
  if (endpoint !== "") checkOtlpEndpoint(endpoint);
  const rawRatio = envString("OTEL_TRACES_SAMPLER_ARG", "1", env);
  const ratio = Number(rawRatio);
  if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1 || rawRatio.trim() === "") {
    throw new EnvError(`OTEL_TRACES_SAMPLER_ARG=${JSON.stringify(rawRatio)} is not a ratio between 0 and 1`);
  }
  return {
    tracesUrl: endpoint === "" ? undefined : `${endpoint.replace(/\/+$/, "")}/v1/traces`,
    protocol: envEnum(
      "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
      OTLP_PROTOCOLS,
      envEnum("OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOLS, "http/protobuf", env),
      env,
    ),
    sampler: envEnum("OTEL_TRACES_SAMPLER", SAMPLERS, "parentbased_always_on", env),
    ratio,
    scheduleDelayMs: envInt("OTEL_BSP_SCHEDULE_DELAY", 5000, { min: 1, max: 600_000 }, env),
  };
}

/**
 * A base URL the exporter can append `/v1/traces` to: http(s), a host, a valid port, no query or
 * fragment (they would end up before the path), nothing the URL parser had to repair.
 */
function checkOtlpEndpoint(endpoint: string): void {
  const bad = (why: string) =>
    new EnvError(
      `OTEL_EXPORTER_OTLP_ENDPOINT=${JSON.stringify(endpoint)} ${why}; it takes a base URL such as http://jaeger:4318`,
    );
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw bad("is not a URL");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw bad("is not an http(s) URL");
  if (url.hostname === "" || /\s/.test(endpoint)) throw bad("has no usable host");
  if (url.search !== "" || url.hash !== "" || endpoint.includes("?") || endpoint.includes("#"))
    throw bad("has a query or fragment");
  if (url.username !== "" || url.password !== "") throw bad("carries credentials (they would be logged)");
}

/** Past this, shutdown stops waiting for the last spans' export (the collector may be down). */
const SHUTDOWN_EXPORT_MS = 2_000;

export function samplerFor(name: SamplerName, ratio: number): Sampler {
  switch (name) {
    case "always_on":
      return new AlwaysOnSampler();
    case "always_off":
      return new AlwaysOffSampler();
    case "traceidratio":
      return new TraceIdRatioBasedSampler(ratio);
    case "parentbased_always_on":
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case "parentbased_always_off":
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case "parentbased_traceidratio":
      return new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
  }
}

export interface Tracing {
  tracer: Tracer;
  /** Whether spans leave the process (an endpoint is configured). */
  isExporting: boolean;
  config: TracingConfig;
  /** Exports what is buffered now (tests; shutdown does it too). */
  flush(): Promise<void>;
  /** Flushes and stops exporting: register it as the last Lifecycle stop hook. */
  shutdown(): Promise<void>;
}

export interface StartTracingOptions {
  env?: Env;
  /** Export failures are logged here (at most what the SDK reports as errors). */
  log?: Logger;
  /** Replaces the OTLP exporter (unit tests use an in-memory one). */
  exporter?: SpanExporter;
}

let contextManagerInstalled = false;
let providerRegistered = false;

/** AsyncLocalStorage as the process's context manager; once per process, whoever asks first. */
export function installContextManager(): void {
  if (contextManagerInstalled) return;
  contextManagerInstalled = context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
}

/**
 * Sets up tracing for this process and returns its tracer. The provider also becomes the global
 * one (`trace.getTracer`), unless another was registered first (tests starting several).
 */
export async function startTracing(identity: ServiceIdentity, opts: StartTracingOptions = {}): Promise<Tracing> {
  const config = tracingConfigFromEnv(opts.env);
  installContextManager();
  if (opts.log) {
    const log = opts.log;
    diag.setLogger(
      {
        error: (message, ...args) => log.warn({ component: "opentelemetry", detail: args.map(String) }, message),
        warn: () => {},
        info: () => {},
        debug: () => {},
        verbose: () => {},
      },
      { logLevel: DiagLogLevel.ERROR, suppressOverrideMessage: true },
    );
  }

  // Loaded only when used: it is the largest part of the SDK to import (~50 ms at start-up).
  const exporter =
    opts.exporter ??
    (config.tracesUrl
      ? new (config.protocol === "http/json"
          ? await import("@opentelemetry/exporter-trace-otlp-http")
          : await import("@opentelemetry/exporter-trace-otlp-proto")
        ).OTLPTraceExporter({ url: config.tracesUrl, timeoutMillis: 5000 })
      : undefined);
  const spanProcessors: SpanProcessor[] = exporter
    ? [
        new BatchSpanProcessor({
          exporter,
          scheduledDelayMillis: config.scheduleDelayMs,
          maxQueueSize: 4096,
          maxExportBatchSize: 512,
        }),
      ]
    : [];
  const provider = new TracerProvider({
    resource: resourceFromAttributes({
      [ATTR_SERVICE_NAME]: identity.service,
      [ATTR_SERVICE_VERSION]: identity.version,
      "service.instance.id": identity.instance,
      "service.namespace": "portico",
    }),
    // With nowhere to send spans, record none of our own, but keep the ids flowing.
    sampler: exporter
      ? samplerFor(config.sampler, config.ratio)
      : new ParentBasedSampler({ root: new AlwaysOffSampler() }),
    spanProcessors,
  });
  // The first provider of the process becomes the global one; later ones (tests) stay private.
  if (!providerRegistered) providerRegistered = trace.setGlobalTracerProvider(provider);

  return {
    tracer: provider.getTracer("portico", identity.version),
    isExporting: exporter !== undefined,
    config,
    flush: () => provider.forceFlush({ timeoutMillis: 5000 }),
    // An unreachable collector must not fail a clean shutdown (exit 1) nor spend its budget: the
    // last spans get SHUTDOWN_EXPORT_MS, and a failure is a warning.
    shutdown: async () => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const gaveUp = new Promise<"timeout">((resolve) => {
        timer = setTimeout(resolve, SHUTDOWN_EXPORT_MS, "timeout");
      });
      try {
        if ((await Promise.race([provider.shutdown(), gaveUp])) === "timeout")
          opts.log?.warn(
            { traces: config.tracesUrl, waited_ms: SHUTDOWN_EXPORT_MS },
            "the last spans were not exported at shutdown: the collector did not answer in time",
          );
      } catch (err) {
        opts.log?.warn({ err, traces: config.tracesUrl }, "the last spans could not be exported at shutdown");
      } finally {
        clearTimeout(timer);
      }
    },
  };
}
