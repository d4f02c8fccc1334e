/**
 * What the gateway observes per request, in one object that main.ts builds and passes to the
 * Gateway (tests build their own, or none):
 *
 *   begin / end       the server span (continuing the client's `traceparent`), in-flight count
 *                     and RED metrics of a request served, and its route's per-second figures
 *                     for whatever `RouteRecorder` is given (the dashboard's) — server.ts;
 *   httpTries /       the `TryHooks` of one request (upstream/dispatch.ts): a client span per
 *   grpcTries         try, its `traceparent` injected into the outgoing headers or metadata, and
 *                     the try counted and timed per endpoint under the verdict dispatch gave it —
 *                     proxy/route.ts, grpc/route.ts.
 *
 * The transports know nothing of this; neither does this of the dashboard, beyond the recorder
 * interface below.
 */
import { type Context, context, type Span, trace, type Tracer } from "@opentelemetry/api";
import {
  endHttpSpan,
  endSpanWithError,
  headersGetter,
  headersSetter,
  recordSetter,
  startClientSpan,
  startServerSpan,
  traceparentOf,
  unrecordedServerContext,
} from "../../../lib/telemetry/spans.ts";
import type { RequestContext } from "../context.ts";
import type { GrpcOutcome } from "../grpc/call.ts";
import { GrpcCode, grpcCodeName } from "../grpc/status.ts";
import type { MetadataHeaders } from "../grpc/wire.ts";
import type { HttpOutcome } from "../proxy/http.ts";
import type { TryHooks } from "../upstream/dispatch.ts";
import type { Endpoint } from "../upstream/endpoint.ts";
import type { Verdict } from "../upstream/outcome.ts";
import type { GatewayMetrics } from "./metrics.ts";

/** Per-route figures of requests answered (the dashboard's TrafficRecorder is one). */
export interface RouteRecorder {
  /** `ms`: time to answer; `now`: performance.now() at the answer. */
  record(route: string, status: number, ms: number, now: number): void;
}

export interface TelemetryOptions {
  /** Spans go here; the global tracer (a no-op one unless tracing was started) by default. */
  tracer?: Tracer;
  /** Prometheus metrics (telemetry/metrics.ts); nothing is counted without them. */
  metrics?: GatewayMetrics;
  recorder?: RouteRecorder;
  /**
   * Whether spans can be recorded at all (tracing exports them: lib/telemetry/tracing.ts
   * `isExporting`). When not, requests take the trace context without the SDK — ids and
   * `traceparent` only — which costs a tenth as much. Default true.
   */
  recording?: boolean;
}

const NO_ATTRIBUTES = Object.freeze({});

/** The public probes: Kubernetes' and the health checks of whatever balances across gateways. */
export function isProbePath(path: string): boolean {
  return path === "/healthz" || path === "/readyz";
}

export class GatewayTelemetry {
  readonly #tracer: Tracer;
  readonly #metrics: GatewayMetrics | undefined;
  readonly #recorder: RouteRecorder | undefined;
  readonly #recording: boolean;

  constructor(opts: TelemetryOptions = {}) {
    this.#tracer = opts.tracer ?? trace.getTracer("portico");
    this.#metrics = opts.metrics;
    this.#recorder = opts.recorder;
    this.#recording = opts.recording ?? true;
  }

  /** A request arrived: its server span and trace context (run the request inside it). */
  begin(headers: Headers, requestId: string, method: string, path: string): Context {
    if (this.#metrics) this.#metrics.http.inFlight++;
    if (!this.#recording) return unrecordedServerContext(headers.get("traceparent"), requestId);
    // Probes get ids for their log lines, no span.
    return startServerSpan(
      this.#tracer,
      method,
      headers,
      headersGetter,
      requestId,
      { "http.request.method": method, "url.path": path },
      !isProbePath(path),
    );
  }

  /** The response is ready: count it, and end its span named after the route it matched. */
  end(scope: Context, ctx: RequestContext, status: number): void {
    const metrics = this.#metrics;
    const now = performance.now();
    if (metrics) {
      metrics.http.inFlight--;
      metrics.http.observe(ctx.route?.name ?? "none", ctx.method, status, (now - ctx.start) / 1000);
    }
    if (ctx.route) this.#recorder?.record(ctx.route.name, status, now - ctx.start, now);
    const span = trace.getSpan(scope)!;
    if (span.isRecording()) {
      span.setAttribute("client.address", ctx.clientIp);
      if (ctx.route) {
        span.updateName(`${ctx.method} ${ctx.route.path}`);
        span.setAttributes({
          "http.route": ctx.route.path,
          "portico.route": ctx.route.name,
          "portico.upstream": ctx.route.upstream,
        });
      }
    }
    endHttpSpan(span, status, "server");
  }

  /** The tries of one HTTP request: each in a client span whose traceparent goes out in `headers`. */
  httpTries(
    upstream: string,
    method: string,
    pathAndQuery: string,
    headers: Headers,
  ): TryHooks<HttpOutcome, Span | undefined> {
    if (!this.#recording) {
      // No client span: the server span is the upstream's parent (the request runs in its context).
      const traceparent = traceparentOf(context.active());
      return {
        beforeTry: () => {
          if (traceparent) headers.set("traceparent", traceparent);
          return undefined;
        },
        onTry: (_span, endpoint, _outcome, verdict, latencyMs) => this.#attempt(upstream, endpoint, verdict, latencyMs),
      };
    }
    return {
      beforeTry: (endpoint) => {
        const span = startClientSpan(this.#tracer, method, headers, headersSetter, NO_ATTRIBUTES);
        if (span.isRecording()) {
          const query = pathAndQuery.indexOf("?");
          // The query is left out: it can carry credentials (api_key=…).
          span.setAttributes({
            "http.request.method": method,
            "url.full": endpoint.origin + (query < 0 ? pathAndQuery : pathAndQuery.slice(0, query)),
            ...peer(endpoint),
          });
        }
        return span;
      },
      onTry: (span, endpoint, outcome, verdict, latencyMs) => {
        this.#attempt(upstream, endpoint, verdict, latencyMs);
        if (!span) return;
        if (outcome.kind === "response") endHttpSpan(span, outcome.response.status, "client");
        else if (outcome.kind === "timeout") endSpanWithError(span, "timeout");
        else if (outcome.kind === "cancelled") endSpanWithError(span, "cancelled", "the client went away");
        else endSpanWithError(span, outcome.kind, outcome.error.message);
      },
    };
  }

  /** The tries of one gRPC call: each in a client span whose traceparent goes out in `metadata`. */
  grpcTries(upstream: string, methodPath: string, metadata: MetadataHeaders): TryHooks<GrpcOutcome, Span | undefined> {
    if (!this.#recording) {
      // As httpTries: no client span, the server span's traceparent goes out in the metadata.
      const traceparent = traceparentOf(context.active());
      return {
        beforeTry: () => {
          if (traceparent) metadata.traceparent = traceparent;
          return undefined;
        },
        onTry: (_span, endpoint, _outcome, verdict, latencyMs) => this.#attempt(upstream, endpoint, verdict, latencyMs),
      };
    }
    const name = methodPath.slice(1);
    return {
      beforeTry: (endpoint) => {
        const span = startClientSpan(this.#tracer, name, metadata, recordSetter, NO_ATTRIBUTES);
        if (span.isRecording()) {
          const slash = name.indexOf("/");
          span.setAttributes({
            "rpc.system": "grpc",
            "rpc.service": name.slice(0, slash),
            "rpc.method": name.slice(slash + 1),
            ...peer(endpoint),
          });
        }
        return span;
      },
      onTry: (span, endpoint, outcome, verdict, latencyMs) => {
        this.#attempt(upstream, endpoint, verdict, latencyMs);
        if (span)
          endGrpcSpan(
            span,
            outcome.kind === "reply" ? GrpcCode.OK : outcome.kind === "cancelled" ? GrpcCode.CANCELLED : outcome.code,
          );
      },
    };
  }

  #attempt(upstream: string, endpoint: Endpoint, verdict: Verdict, latencyMs: number): void {
    this.#metrics?.attempt(upstream, endpoint, verdict, latencyMs / 1000);
  }
}

function peer(endpoint: Endpoint): { "server.address": string; "server.port": number } {
  const colon = endpoint.address.lastIndexOf(":");
  return {
    "server.address": endpoint.address.slice(0, colon),
    "server.port": Number(endpoint.address.slice(colon + 1)),
  };
}

function endGrpcSpan(span: Span, code: GrpcCode): void {
  if (span.isRecording()) {
    span.setAttribute("rpc.grpc.status_code", code);
    if (code !== GrpcCode.OK) {
      endSpanWithError(span, grpcCodeName(code));
      return;
    }
  }
  span.end();
}
