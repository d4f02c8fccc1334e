/**
 * OpenTelemetry tracing for every service, configured from the standard environment variables:
 *
 *   OTEL_EXPORTER_OTLP_ENDPOINT   base URL of an OTLP/HTTP receiver (Jaeger, a collector); spans go
 *                                 to <endpoint>/v1/traces. Unset: nothing is exported.
 *   OTEL_EXPORTER_OTLP_TRACES_ENDPOINT  the traces URL itself, used as given; wins over the above.
 *   OTEL_EXPORTER_OTLP_PROTOCOL   http/protobuf (default, as the OTLP exporter specification has
 *                                 it) or http/json; OTEL_EXPORTER_OTLP_TRACES_PROTOCOL wins over it.
 *                                 Protobuf is ~2.5× smaller on the wire for the same CPU
 *                                 (bench/README.md, 2026-12-07 fifth stop).
 *   OTEL_EXPORTER_OTLP_HEADERS    `key=value,…` (values percent-encoded) sent with every export, e.g.
 *                                 a collector's API key; _TRACES_HEADERS adds to it and wins per key.
 *   OTEL_EXPORTER_OTLP_COMPRESSION  none (default) or gzip; _TRACES_COMPRESSION wins over it.
 *   OTEL_EXPORTER_OTLP_TIMEOUT    ms one export may take (default 5000); _TRACES_TIMEOUT wins.
 *   OTEL_EXPORTER_OTLP_CERTIFICATE  PEM file of the CA(s) an https collector's certificate must
 *                                 chain to (default: the system's); _CLIENT_CERTIFICATE and
 *                                 _CLIENT_KEY a certificate and key to present (mutual TLS). Each has
 *                                 a _TRACES_ variant that wins. Checked again every
 *                                 TLS_RELOAD_INTERVAL_MS (default 5000): renewed files are taken
 *                                 into use without a restart (renewing-sender.ts); a renewal that
 *                                 cannot be used yet is logged and the files in use stay.
 *   OTEL_TRACES_SAMPLER           always_on | always_off | traceidratio | parentbased_always_on
 *                                 (default) | parentbased_always_off | parentbased_traceidratio
 *   OTEL_TRACES_SAMPLER_ARG       the ratio for the *traceidratio samplers, 0..1 (default 1)
 *   OTEL_BSP_SCHEDULE_DELAY       ms between batch exports (default 5000); with http/protobuf the
 *                                 batches are made by span-batches.ts, which serializes spans as
 *                                 they end, to the same OTEL_BSP_* contract
 *   OTEL_BSP_MAX_QUEUE_SIZE       spans held for export before new ones are dropped (default 4096)
 *   OTEL_BSP_MAX_EXPORT_BATCH_SIZE  spans per export at most (default 512; ≤ the queue size)
 *   OTEL_BSP_EXPORT_TIMEOUT       ms the batch processor waits for one export (default 30000)
 *   OTEL_RESOURCE_ATTRIBUTES      `key=value,…` (values percent-encoded) added to every span's
 *                                 resource, e.g. `deployment.environment.name=prod`: the secondary
 *                                 resource, as the specification has it — the service's own
 *                                 service.name, service.version, service.instance.id and
 *                                 service.namespace win. (OTEL_SERVICE_NAME is not read: the
 *                                 service's name is its own, in traces as in logs and metrics.)
 *
 * A bad value stops the start-up with a message that names the variable; so does a bad
 * OTEL_RESOURCE_ATTRIBUTES, which the specification would have discarded with a warning. A header's
 * or resource attribute's value, or a URL's credentials or query, are never repeated in the message
 * (they may be secrets). The exporter library also reads OTEL_EXPORTER_OTLP_* from
 * `process.env` itself, under what is passed to it here: in a service the same values.
 * Without an endpoint the SDK still runs with a sampler that records nothing (unless the caller's
 * traceparent asks for it): every request still gets trace and span ids — in its log lines and in
 * the `traceparent` it passes on — at the cost of generating two random ids.
 *
 * Context lives in AsyncLocalStorage (Bun implements it natively), and is carried between services
 * by the W3C `traceparent`/`tracestate` headers (HTTP) or metadata keys (gRPC), see spans.ts.
 */
import { context, diag, DiagLogLevel, trace, type Tracer } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import type { CompressionAlgorithm } from "@opentelemetry/otlp-exporter-base";
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
import { HTTP_TOKEN } from "../http-token.ts";
import { PemWatcher, readClientTls, readTlsMaterial, TlsFileError } from "../tls.ts";
import type { Logger } from "../log.ts";
import { type ExportSender, RenewingSender } from "./renewing-sender.ts";

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

export const OTLP_COMPRESSIONS = ["none", "gzip"] as const;
export type OtlpCompression = (typeof OTLP_COMPRESSIONS)[number];

export interface OtlpTls {
  ca?: string;
  cert?: string;
  key?: string;
  /** Of the files' contents: a renewal of any of them is a new version. */
  version: string;
}

export interface TracingConfig {
  /** OTLP/HTTP traces URL (…/v1/traces), or undefined to export nothing. */
  tracesUrl: string | undefined;
  protocol: OtlpProtocol;
  /** Sent with every export (OTEL_EXPORTER_OTLP_(TRACES_)HEADERS); never logged. */
  headers: Record<string, string>;
  compression: OtlpCompression;
  /** How long one export request may take. */
  exportTimeoutMs: number;
  /** PEM contents for an https collector: the CA to trust, and a client certificate and key. */
  tls: OtlpTls | undefined;
  /** Reads and checks those files again (throws TlsFileError): renewals are taken into use without a restart. */
  readTls: (() => OtlpTls) | undefined;
  /** TLS_RELOAD_INTERVAL_MS: how often `readTls` is polled. */
  tlsReloadIntervalMs: number;
  sampler: SamplerName;
  ratio: number;
  scheduleDelayMs: number;
  maxQueueSize: number;
  maxExportBatchSize: number;
  /** How long the batch processor waits for one export before giving it up. */
  batchExportTimeoutMs: number;
  /** OTEL_RESOURCE_ATTRIBUTES: under the service's own attributes. */
  resourceAttributes: Record<string, string>;
}

export function tracingConfigFromEnv(env: Env = process.env): TracingConfig {
  const tracesEndpoint = envString("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "", env).trim();
  const endpoint = envString("OTEL_EXPORTER_OTLP_ENDPOINT", "", env).trim();
  if (tracesEndpoint !== "") checkOtlpEndpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", tracesEndpoint);
  if (endpoint !== "") checkOtlpEndpoint("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint);
  const rawRatio = envString("OTEL_TRACES_SAMPLER_ARG", "1", env);
  const ratio = Number(rawRatio);
  if (!Number.isFinite(ratio) || ratio < 0 || ratio > 1 || rawRatio.trim() === "") {
    throw new EnvError(`OTEL_TRACES_SAMPLER_ARG=${JSON.stringify(rawRatio)} is not a ratio between 0 and 1`);
  }
  const maxQueueSize = envInt("OTEL_BSP_MAX_QUEUE_SIZE", 4096, { min: 1, max: 1_000_000 }, env);
  const maxExportBatchSize = envInt("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512, { min: 1, max: 1_000_000 }, env);
  if (maxExportBatchSize > maxQueueSize)
    throw new EnvError(
      `OTEL_BSP_MAX_EXPORT_BATCH_SIZE=${maxExportBatchSize} is larger than OTEL_BSP_MAX_QUEUE_SIZE=${maxQueueSize}: a batch is taken from the queue`,
    );
  const tracesUrl =
    tracesEndpoint !== "" ? tracesEndpoint : endpoint === "" ? undefined : `${endpoint.replace(/\/+$/, "")}/v1/traces`;
  return {
    tracesUrl,
    protocol: envEnum(
      "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
      OTLP_PROTOCOLS,
      envEnum("OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOLS, "http/protobuf", env),
      env,
    ),
    headers: {
      ...exportHeaders("OTEL_EXPORTER_OTLP_HEADERS", env),
      ...exportHeaders("OTEL_EXPORTER_OTLP_TRACES_HEADERS", env),
    },
    compression: envEnum(
      "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
      OTLP_COMPRESSIONS,
      envEnum("OTEL_EXPORTER_OTLP_COMPRESSION", OTLP_COMPRESSIONS, "none", env),
      env,
    ),
    exportTimeoutMs: envInt(
      "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
      envInt("OTEL_EXPORTER_OTLP_TIMEOUT", 5000, EXPORT_TIMEOUT_BOUNDS, env),
      EXPORT_TIMEOUT_BOUNDS,
      env,
    ),
    ...exportTls(env, tracesUrl),
    tlsReloadIntervalMs: envInt("TLS_RELOAD_INTERVAL_MS", 5000, { min: 100 }, env),
    sampler: envEnum("OTEL_TRACES_SAMPLER", SAMPLERS, "parentbased_always_on", env),
    ratio,
    scheduleDelayMs: envInt("OTEL_BSP_SCHEDULE_DELAY", 5000, { min: 1, max: 600_000 }, env),
    maxQueueSize,
    maxExportBatchSize,
    batchExportTimeoutMs: envInt("OTEL_BSP_EXPORT_TIMEOUT", 30_000, EXPORT_TIMEOUT_BOUNDS, env),
    resourceAttributes: keyValueList("OTEL_RESOURCE_ATTRIBUTES", env),
  };
}

const EXPORT_TIMEOUT_BOUNDS = { min: 1, max: 600_000 };

/**
 * A `key=value,key=value` list as the OpenTelemetry environment specification writes headers and
 * resource attributes: entries split at commas, each at its `=`, keys and values trimmed and
 * percent-decoded (`%2C` is a comma in a value), empty entries skipped. A malformed entry is an
 * error naming the variable and the entry's position, not its text: the value may be a secret.
 */
function keyValueList(name: string, env: Env): Record<string, string> {
  const raw = envString(name, "", env);
  const pairs: Record<string, string> = {};
  raw.split(",").forEach((entry, index) => {
    if (entry.trim() === "") return;
    const at = `${name}: entry ${index + 1}`;
    const eq = entry.indexOf("=");
    if (eq < 0) throw new EnvError(`${at} is not key=value (a comma or = inside a value is written %2C or %3D)`);
    let key: string;
    let value: string;
    try {
      key = decodeURIComponent(entry.slice(0, eq).trim());
      value = decodeURIComponent(entry.slice(eq + 1).trim());
    } catch {
      throw new EnvError(`${at} has a malformed percent-encoding`);
    }
    if (key === "") throw new EnvError(`${at} has an empty key`);
    pairs[key] = value;
  });
  return pairs;
}

/** Whichever of a variable's two spellings is set, the traces one first: its name and value. */
function signalVariable(env: Env, general: string): { name: string; value: string } | undefined {
  for (const name of [general.replace("OTEL_EXPORTER_OTLP_", "OTEL_EXPORTER_OTLP_TRACES_"), general]) {
    const value = env[name]?.trim();
    if (value) return { name, value };
  }
  return undefined;
}

/**
 * OTEL_EXPORTER_OTLP_(TRACES_)CERTIFICATE, _CLIENT_CERTIFICATE and _CLIENT_KEY, read and checked
 * as the services' own files are (lib/tls.ts: complete PEM blocks, a key that is the
 * certificate's, a certificate valid now), and how to read them again. They apply to an https
 * collector only: with an http URL they would do nothing, which is refused rather than ignored.
 */
function exportTls(
  env: Env,
  tracesUrl: string | undefined,
): { tls: OtlpTls | undefined; readTls: (() => OtlpTls) | undefined } {
  const ca = signalVariable(env, "OTEL_EXPORTER_OTLP_CERTIFICATE");
  const cert = signalVariable(env, "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE");
  const key = signalVariable(env, "OTEL_EXPORTER_OTLP_CLIENT_KEY");
  const set = [ca, cert, key].filter((v) => v !== undefined);
  if (set.length === 0) return { tls: undefined, readTls: undefined };
  if ((cert === undefined) !== (key === undefined))
    throw new EnvError(
      `${(cert ?? key)!.name} is set without ${cert ? "OTEL_EXPORTER_OTLP_CLIENT_KEY" : "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE"}: a client certificate goes with its key`,
    );
  if (tracesUrl !== undefined && new URL(tracesUrl).protocol !== "https:")
    throw new EnvError(
      `${set.map((v) => v.name).join(", ")}: certificates apply to an https collector, and the traces URL is ${tracesUrl}`,
    );
  // lib/tls.ts reads and versions them as it does a service's own: with the CA, or a pair alone.
  const readTls = (): OtlpTls => {
    if (ca) {
      const material = readClientTls({ ca: ca.value, cert: cert?.value, key: key?.value });
      return { ca: material.ca, cert: material.cert, key: material.key, version: material.version };
    }
    const pair = readTlsMaterial({ cert: cert!.value, key: key!.value });
    return { cert: pair.cert, key: pair.key, version: pair.version };
  };
  try {
    return { tls: readTls(), readTls };
  } catch (err) {
    if (err instanceof TlsFileError) throw new EnvError(`${set.map((v) => v.name).join(", ")}: ${err.message}`);
    throw err;
  }
}

/**
 * OTEL_EXPORTER_OTLP_(TRACES_)HEADERS: names HTTP tokens; values not empty, printable ASCII (a
 * character Node's HTTP client refuses would fail every export, not the start-up). A refused
 * entry is named by its position: a token written `Authorization: Bearer …` puts the secret in
 * the "name".
 */
function exportHeaders(name: string, env: Env): Record<string, string> {
  const headers = keyValueList(name, env);
  Object.entries(headers).forEach(([key, value], index) => {
    const at = `${name}: header ${index + 1}`;
    if (!HTTP_TOKEN.test(key)) throw new EnvError(`${at}'s name is not an HTTP token`);
    if (value === "") throw new EnvError(`${at} (${key}) has an empty value`);
    if (!/^[\t\x20-\x7e]+$/.test(value))
      throw new EnvError(`${at} (${key}) has a character outside printable ASCII in its value`);
  });
  return headers;
}

/**
 * A URL the exporter can post to: http(s), a host, a valid port, no credentials, no query or
 * fragment, nothing the URL parser had to repair. OTEL_EXPORTER_OTLP_ENDPOINT is a base URL that
 * `/v1/traces` is appended to; OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as it is. Credentials go
 * in OTEL_EXPORTER_OTLP_HEADERS, which is never logged; the URL is (the start-up line).
 */
function checkOtlpEndpoint(name: string, endpoint: string): void {
  const example =
    name === "OTEL_EXPORTER_OTLP_ENDPOINT"
      ? "a base URL such as http://jaeger:4318"
      : "a URL such as http://jaeger:4318/v1/traces";
  // Quoted without what may be a secret: a user:password@ part, a query, a fragment.
  const shown = JSON.stringify(
    endpoint.replace(/^([a-z][a-z0-9+.-]*:\/\/)?[^/?#]*@/i, "$1…@").replace(/[?#].*$/s, "…"),
  );
  const bad = (why: string) => new EnvError(`${name}=${shown} ${why}; it takes ${example}`);
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
  if (url.username !== "" || url.password !== "")
    throw new EnvError(
      `${name} carries credentials in its URL, where they would be logged; send them in OTEL_EXPORTER_OTLP_HEADERS`,
    );
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
  /** The configuration, already read from the environment (a process that checks it with its other settings); `env` is then not read. */
  config?: TracingConfig;
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
  const config = opts.config ?? tracingConfigFromEnv(opts.env);
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

  const batching = {
    scheduledDelayMillis: config.scheduleDelayMs,
    maxQueueSize: config.maxQueueSize,
    maxExportBatchSize: config.maxExportBatchSize,
    exportTimeoutMillis: config.batchExportTimeoutMs,
  };
  const exporterOptions = (tls: OtlpTls | undefined) => ({
    url: config.tracesUrl,
    headers: config.headers,
    compression: config.compression as CompressionAlgorithm,
    timeoutMillis: config.exportTimeoutMs,
    ...(tls
      ? {
          httpAgentOptions: {
            keepAlive: true,
            ...(tls.ca ? { ca: tls.ca } : {}),
            ...(tls.cert && tls.key ? { cert: tls.cert, key: tls.key } : {}),
          },
        }
      : {}),
  });
  // With an https collector's files, the exporter is made anew when they are renewed.
  let watcher: PemWatcher<OtlpTls> | undefined;
  const sender = <T>(make: (tls: OtlpTls | undefined) => ExportSender<T>): ExportSender<T> => {
    const { tls, readTls } = config;
    if (!tls || !readTls) return make(tls);
    const renewing = new RenewingSender<T, OtlpTls>(make, tls);
    watcher = new PemWatcher(
      readTls,
      {
        intervalMs: config.tlsReloadIntervalMs,
        onChange: (next) => {
          renewing.renew(next);
          opts.log?.info({ component: "opentelemetry" }, "span exporter: renewed tls files taken into use");
        },
        onError: (err) =>
          opts.log?.warn(
            { component: "opentelemetry", err: err.message },
            "span exporter: the tls files changed but cannot be used yet; the current ones stay",
          ),
      },
      tls,
    ).start();
    return renewing;
  };
  // Loaded only when used: the exporter libraries are the largest part of the SDK to import
  // (~50 ms at start-up). OTLP/protobuf serializes spans as they end (span-batches.ts); a given
  // exporter (tests) and http/json take the SDK's batch processor.
  let spanProcessor: SpanProcessor | undefined;
  if (opts.exporter) spanProcessor = new BatchSpanProcessor({ exporter: opts.exporter, ...batching });
  else if (config.tracesUrl && config.protocol === "http/json") {
    const { OTLPTraceExporter } = await import("@opentelemetry/exporter-trace-otlp-http");
    const exporter = sender((tls) => new OTLPTraceExporter(exporterOptions(tls)));
    spanProcessor = new BatchSpanProcessor({ exporter, ...batching });
  } else if (config.tracesUrl) {
    const { otlpProtobufDelegate, SerializingBatchSpanProcessor } = await import("./span-batches.ts");
    const delegate = sender((tls) => otlpProtobufDelegate(exporterOptions(tls)));
    spanProcessor = new SerializingBatchSpanProcessor(delegate, batching);
  }
  const exporting = spanProcessor !== undefined;
  const provider = new TracerProvider({
    resource: resourceFromAttributes({
      ...config.resourceAttributes,
      [ATTR_SERVICE_NAME]: identity.service,
      [ATTR_SERVICE_VERSION]: identity.version,
      "service.instance.id": identity.instance,
      "service.namespace": "portico",
    }),
    // With nowhere to send spans, record none of our own, but keep the ids flowing.
    sampler: exporting
      ? samplerFor(config.sampler, config.ratio)
      : new ParentBasedSampler({ root: new AlwaysOffSampler() }),
    spanProcessors: spanProcessor ? [spanProcessor] : [],
  });
  // The first provider of the process becomes the global one; later ones (tests) stay private.
  if (!providerRegistered) providerRegistered = trace.setGlobalTracerProvider(provider);

  return {
    tracer: provider.getTracer("portico", identity.version),
    isExporting: exporting,
    config,
    flush: () => provider.forceFlush({ timeoutMillis: 5000 }),
    // An unreachable collector must not fail a clean shutdown (exit 1) nor spend its budget: the
    // last spans get SHUTDOWN_EXPORT_MS, and a failure is a warning.
    shutdown: async () => {
      watcher?.stop();
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
