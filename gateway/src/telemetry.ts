/**
 * What the gateway observes per request, in one place, so the request path and the transports
 * each make one call:
 *
 *   begin / end     the server span (continuing the client's `traceparent`), in-flight count and
 *                   RED metrics of a request served, and the dashboard's per-second figures
 *                   of its route (server.ts);
 *   traceHttp /     a client span per try sent upstream, its `traceparent` injected into the
 *   traceGrpc       outgoing headers or metadata, and the try counted and timed per upstream
 *                   endpoint (proxy/http.ts, grpc/call.ts).
 *
 * One instance per process, configured by main.ts; until then spans go to the global tracer (a
 * no-op one unless tracing was started) and nothing is counted.
 */
import * as grpc from "@grpc/grpc-js";
import { type Context, type Span, trace, type Tracer } from "@opentelemetry/api";
import {
  endHttpSpan,
  endSpanWithError,
  headersGetter,
  headersSetter,
  metadataSetter,
  startClientSpan,
  startServerSpan,
} from "../../lib/telemetry/spans.ts";
import type { RequestContext } from "./context.ts";
import type { GrpcOutcome } from "./grpc/call.ts";
import type { TrafficRecorder } from "./admin/traffic.ts";
import type { GatewayMetrics } from "./metrics.ts";
import type { HttpOutcome } from "./proxy/http.ts";
import type { Endpoint } from "./upstream/endpoint.ts";
import { classify } from "./upstream/outcome.ts";

const NO_ATTRIBUTES = Object.freeze({});

export class GatewayTelemetry {
  #tracer: Tracer = trace.getTracer("portico");
  #metrics: GatewayMetrics | undefined;
  #traffic: TrafficRecorder | undefined;

  /** `traffic`: the dashboard's per-second figures of each route (admin/traffic.ts). */
  configure(opts: { tracer: Tracer; metrics?: GatewayMetrics; traffic?: TrafficRecorder }): void {
    this.#tracer = opts.tracer;
    this.#metrics = opts.metrics;
    this.#traffic = opts.traffic;
  }

  /** A request arrived: its server span and trace context (run the request inside it). */
  begin(headers: Headers, requestId: string, method: string, path: string): Context {
    if (this.#metrics) this.#metrics.http.inFlight++;
    // The public /healthz and /readyz are Kubernetes' probes: ids for their log lines, no span.
    const record = path !== "/healthz" && path !== "/readyz";
    return startServerSpan(
      this.#tracer,
      method,
      headers,
      headersGetter,
      requestId,
      { "http.request.method": method, "url.path": path },
      record,
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
    if (ctx.route) this.#traffic?.record(ctx.route.name, status, now - ctx.start, now);
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

  /** One HTTP try: a client span around `send`, whose traceparent goes out in `headers`. */
  async traceHttp(
    endpoint: Endpoint,
    method: string,
    pathAndQuery: string,
    headers: Headers,
    send: () => Promise<HttpOutcome>,
  ): Promise<HttpOutcome> {
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
    const startedAt = performance.now();
    const outcome = await send();
    this.#metrics?.attempt(endpoint, classify(outcome), (performance.now() - startedAt) / 1000);
    if (outcome.kind === "response") endHttpSpan(span, outcome.response.status, "client");
    else endSpanWithError(span, outcome.kind, outcome.kind === "timeout" ? undefined : outcome.error.message);
    return outcome;
  }

  /** One gRPC try: a client span around `send`, whose traceparent goes out in `metadata`. */
  async traceGrpc(
    endpoint: Endpoint,
    methodPath: string,
    metadata: grpc.Metadata,
    send: () => Promise<GrpcOutcome>,
  ): Promise<GrpcOutcome> {
    const name = methodPath.slice(1);
    const span = startClientSpan(this.#tracer, name, metadata, metadataSetter, NO_ATTRIBUTES);
    if (span.isRecording()) {
      const slash = name.indexOf("/");
      span.setAttributes({
        "rpc.system": "grpc",
        "rpc.service": name.slice(0, slash),
        "rpc.method": name.slice(slash + 1),
        ...peer(endpoint),
      });
    }
    const startedAt = performance.now();
    const outcome = await send();
    this.#metrics?.attempt(endpoint, classify(outcome), (performance.now() - startedAt) / 1000);
    endGrpcSpan(span, outcome.kind === "reply" ? grpc.status.OK : outcome.code);
    return outcome;
  }
}

/** The instance the request path and the transports report to. */
export const gatewayTelemetry = new GatewayTelemetry();

function peer(endpoint: Endpoint): { "server.address": string; "server.port": number } {
  const colon = endpoint.address.lastIndexOf(":");
  return {
    "server.address": endpoint.address.slice(0, colon),
    "server.port": Number(endpoint.address.slice(colon + 1)),
  };
}

function endGrpcSpan(span: Span, code: grpc.status): void {
  if (span.isRecording()) {
    span.setAttribute("rpc.grpc.status_code", code);
    if (code !== grpc.status.OK) {
      endSpanWithError(span, grpc.status[code]);
      return;
    }
  }
  span.end();
}
