/**
 * Prometheus metrics every service shares: one prom-client Registry per process, every series
 * labelled with `service`, a `portico_build_info` gauge, process figures that are true under Bun
 * (process-metrics.ts), and RED metrics (rate, errors, duration) for requests served.
 *
 * prom-client's `collectDefaultMetrics` is deliberately not used: under Bun its GC and
 * active-handle metrics stay empty and `process_heap_bytes` reports JSC's reserved space
 * (docs/design.md, "Known traps").
 */
import { Gauge, Registry } from "prom-client";
import type { ServiceIdentity } from "../env.ts";
import { registerProcessMetrics, type ProcessMetricsOptions } from "./process-metrics.ts";
import { counterView, histogramView, LATENCY_BUCKETS, type Series, SeriesSet } from "./series.ts";

export { stopProcessMetrics } from "./process-metrics.ts";

export interface MetricsRegistryOptions extends ProcessMetricsOptions {
  /** Leave out the process metrics (tests that build many registries in one process). */
  processMetrics?: boolean;
}

/** A Registry for one service: `service` on every series, build info and process metrics registered. */
export function createMetricsRegistry(identity: ServiceIdentity, opts: MetricsRegistryOptions = {}): Registry {
  const registry = new Registry();
  // Added when the text is written, not when a value is observed: free on the request path.
  registry.setDefaultLabels({ service: identity.service });
  const buildInfo = new Gauge({
    name: "portico_build_info",
    help: "Always 1; its labels say which version of which service this instance runs (rollouts show both versions side by side).",
    labelNames: ["service", "version", "instance"],
    registers: [registry],
  });
  buildInfo.set({ service: identity.service, version: identity.version, instance: identity.instance }, 1);
  if (opts.processMetrics !== false) registerProcessMetrics(registry, opts);
  return registry;
}

/** The Prometheus text exposition of `registry`, as a `/metrics` answer. */
export async function metricsResponse(registry: Registry): Promise<Response> {
  return new Response(await registry.metrics(), { headers: { "content-type": registry.contentType } });
}

// ---- label values, without allocating per request -------------------------------------------

const STATUS_LABELS: string[] = Array.from({ length: 600 }, (_, i) => String(i));

/** "200" for 200: the same string object every time. */
export function statusCodeLabel(status: number): string {
  return STATUS_LABELS[status] ?? "other";
}

/**
 * The method as a label: the standard methods as they are, anything else `_OTHER` (OpenTelemetry's
 * convention), so a client inventing methods cannot create new series.
 */
export function httpMethodLabel(method: string): string {
  switch (method) {
    case "GET":
    case "HEAD":
    case "POST":
    case "PUT":
    case "DELETE":
    case "PATCH":
    case "OPTIONS":
    case "CONNECT":
    case "TRACE":
      return method;
    default:
      return "_OTHER";
  }
}

// ---- RED metrics ---------------------------------------------------------------------------

/** A gauge read from `read()` when Prometheus scrapes: the request path only moves a plain number. */
function inFlightGauge(registry: Registry, name: string, help: string, read: () => number): void {
  const gauge: Gauge = new Gauge({ name, help, registers: [registry], collect: () => gauge.set(read()) });
}

/**
 * Requests served over HTTP: `http_server_requests_total`, `http_server_request_duration_seconds`
 * (both by route, method, status_code) and `http_server_requests_in_flight`. One Series per label
 * set feeds both the counter and the histogram.
 */
export class HttpServerMetrics {
  readonly requests = new SeriesSet(["route", "method", "status_code"], LATENCY_BUCKETS);
  inFlight = 0;
  /**
   * Scrapes of this process's own /metrics being answered: not in the in-flight gauge, which the
   * scrape reads while it is itself in flight (an idle process would never read 0), but waited
   * for at shutdown with the rest.
   */
  scrapesInFlight = 0;

  constructor(registry: Registry) {
    counterView(
      registry,
      "http_server_requests_total",
      "HTTP requests answered, by route (the route template or name; none when no route matched), method and status code.",
      this.requests,
    );
    histogramView(
      registry,
      "http_server_request_duration_seconds",
      "Time from receiving an HTTP request to its response being ready, in seconds.",
      this.requests,
    );
    inFlightGauge(
      registry,
      "http_server_requests_in_flight",
      "HTTP requests being handled right now.",
      () => this.inFlight,
    );
  }

  /** The series for this label set; callers on a hot path may keep it. */
  series(route: string, method: string, status: number): Series {
    return this.requests.get(route, httpMethodLabel(method), statusCodeLabel(status));
  }

  observe(route: string, method: string, status: number, seconds: number): void {
    this.series(route, method, status).observe(seconds);
  }
}

/**
 * RPCs served over gRPC: `grpc_server_handled_total`, `grpc_server_handling_seconds` (both by
 * grpc_method and grpc_code) and `grpc_server_requests_in_flight`.
 */
export class GrpcServerMetrics {
  readonly calls = new SeriesSet(["grpc_method", "grpc_code"], LATENCY_BUCKETS);
  inFlight = 0;

  constructor(registry: Registry) {
    counterView(
      registry,
      "grpc_server_handled_total",
      "RPCs completed, by full method name (package.Service/Method) and status code name.",
      this.calls,
    );
    histogramView(
      registry,
      "grpc_server_handling_seconds",
      "Time from receiving an RPC to sending its status, in seconds.",
      this.calls,
    );
    inFlightGauge(registry, "grpc_server_requests_in_flight", "RPCs being handled right now.", () => this.inFlight);
  }

  /** `grpcMethod` without the leading slash; `grpcCode` the status name (`OK`, `INVALID_ARGUMENT`). */
  observe(grpcMethod: string, grpcCode: string, seconds: number): void {
    this.calls.get(grpcMethod, grpcCode).observe(seconds);
  }
}
