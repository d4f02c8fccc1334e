/**
 * Server and client spans, and the trace context carried between services: W3C `traceparent` and
 * `tracestate` in HTTP headers or gRPC metadata (https://www.w3.org/TR/trace-context/).
 *
 * Spans get only the attributes named here — method, route, path, status, peer address — never
 * request headers, cookies or query strings, which can hold credentials. (@elysiajs/opentelemetry
 * records every header; docs/design.md, "Known traps".)
 */
import {
  type Attributes,
  type Context,
  context,
  createContextKey,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  TraceFlags,
  type TextMapSetter,
  trace,
  type Tracer,
} from "@opentelemetry/api";
import { parseTraceParent, W3CTraceContextPropagator } from "@opentelemetry/core";
import { RandomIdGenerator } from "@opentelemetry/sdk-trace";

const propagator = new W3CTraceContextPropagator();
const REQUEST_ID = createContextKey("portico.request_id");
const ids = new RandomIdGenerator();

/** The attribute a request id is recorded under, so Jaeger can find a trace by request id. */
export const REQUEST_ID_ATTRIBUTE = "portico.request_id";

export const headersGetter: TextMapGetter<Headers> = {
  get: (headers, key) => headers.get(key) ?? undefined,
  keys: (headers) => [...headers.keys()],
};

export const headersSetter: TextMapSetter<Headers> = {
  set: (headers, key, value) => headers.set(key, value),
};

/** The part of grpc-js `Metadata` propagation needs (keeps lib/ free of a grpc-js import here). */
export interface MetadataCarrier {
  get(key: string): unknown[];
  set(key: string, value: string): void;
  getMap(): Record<string, unknown>;
}

export const metadataGetter: TextMapGetter<MetadataCarrier> = {
  get: (metadata, key) => {
    const value = metadata.get(key)[0];
    return typeof value === "string" ? value : undefined;
  },
  keys: (metadata) => Object.keys(metadata.getMap()),
};

export const metadataSetter: TextMapSetter<MetadataCarrier> = {
  set: (metadata, key, value) => metadata.set(key, value),
};

/** A plain object of outgoing headers (the gateway's gRPC client sends metadata as one). */
export const recordSetter: TextMapSetter<Record<string, string>> = {
  set: (headers, key, value) => {
    headers[key] = value;
  },
};

/**
 * Starts the span for a request received, as a child of the caller's `traceparent` when it sent a
 * valid one. Returns the context to run the request in: it holds the span and the request id.
 *
 * `record: false` is for probes and scrapes (/healthz, /readyz, /metrics, gRPC health checks):
 * they still get ids for their log lines, but no span is recorded or exported — Kubernetes and
 * the gateway's health checks would otherwise fill the trace store with them.
 */
export function startServerSpan<C>(
  tracer: Tracer,
  name: string,
  carrier: C,
  getter: TextMapGetter<C>,
  requestId: string,
  attributes: Attributes,
  record = true,
): Context {
  const parent = propagator.extract(ROOT_CONTEXT, carrier, getter);
  let span: Span;
  if (record) {
    span = tracer.startSpan(name, { kind: SpanKind.SERVER, attributes }, parent);
    if (span.isRecording()) span.setAttribute(REQUEST_ID_ATTRIBUTE, requestId);
  } else {
    const caller = trace.getSpanContext(parent);
    span = trace.wrapSpanContext({
      traceId: caller?.traceId ?? ids.generateTraceId(),
      spanId: ids.generateSpanId(),
      traceFlags: TraceFlags.NONE,
    });
  }
  return trace.setSpan(parent, span).setValue(REQUEST_ID, requestId);
}

/**
 * Starts the span for a call to another service, as a child of `parent` (the active context by
 * default), and writes its `traceparent` into the outgoing carrier.
 */
export function startClientSpan<C>(
  tracer: Tracer,
  name: string,
  carrier: C,
  setter: TextMapSetter<C>,
  attributes: Attributes,
  parent: Context = context.active(),
): Span {
  const span = tracer.startSpan(name, { kind: SpanKind.CLIENT, attributes }, parent);
  propagator.inject(trace.setSpan(parent, span), carrier, setter);
  return span;
}

/**
 * Ends an HTTP span with its status code. A server span is an error only for 5xx (the server's
 * fault); a client span for any 4xx or 5xx (OpenTelemetry HTTP semantic conventions).
 */
export function endHttpSpan(span: Span, status: number, kind: "server" | "client"): void {
  if (span.isRecording()) {
    span.setAttribute("http.response.status_code", status);
    if (status >= 500 || (kind === "client" && status >= 400)) {
      span.setAttribute("error.type", String(status));
      span.setStatus({ code: SpanStatusCode.ERROR });
    }
  }
  span.end();
}

/** Ends a span that failed without a status (timeout, refused connection…). */
export function endSpanWithError(span: Span, errorType: string, message?: string): void {
  if (span.isRecording()) {
    span.setAttribute("error.type", errorType);
    span.setStatus({ code: SpanStatusCode.ERROR, ...(message ? { message } : {}) });
  }
  span.end();
}

export interface RequestLogFields {
  trace_id?: string;
  span_id?: string;
  request_id?: string;
}

/** The log fields of a request context: its trace, its span and its request id. */
export function logFieldsOf(ctx: Context): RequestLogFields {
  const fields: RequestLogFields = {};
  const span = trace.getSpan(ctx);
  if (span) {
    const { traceId, spanId } = span.spanContext();
    fields.trace_id = traceId;
    fields.span_id = spanId;
  }
  const requestId = requestIdOf(ctx);
  if (requestId !== undefined) fields.request_id = requestId;
  return fields;
}

/**
 * The pino mixin every logger uses (lib/log.ts): a line written while a request is being handled
 * carries its trace_id, span_id and request_id; a line outside any request (start-up, shutdown)
 * carries none. A fresh object each time: pino merges into what the mixin returns.
 */
export function activeLogFields(): RequestLogFields {
  return logFieldsOf(context.active());
}

/** The request id of a context made by `startServerSpan`. */
export function requestIdOf(ctx: Context): string | undefined {
  const value = ctx.getValue(REQUEST_ID);
  return typeof value === "string" ? value : undefined;
}

/** Random bytes drawn a page at a time: one getRandomValues call per ~170 requests, not two per request. */
const randomPool = Buffer.alloc(4096);
let randomAt = randomPool.length;

/**
 * `bytes` random bytes as lowercase hex; never all zeros (an invalid W3C id). One native
 * `toString("hex")`: building the id two characters at a time made a string per byte, 24 per
 * request for a trace and a span id (bench/census.ts).
 */
function randomHexId(bytes: number): string {
  for (;;) {
    if (randomAt + bytes > randomPool.length) {
      crypto.getRandomValues(randomPool);
      randomAt = 0;
    }
    const start = randomAt;
    randomAt += bytes;
    for (let i = start; i < randomAt; i++) if (randomPool[i] !== 0) return randomPool.toString("hex", start, randomAt);
  }
}

/**
 * The context of a request received by a process that records no spans (no exporter), without
 * the SDK: the caller's trace continues under a fresh span id, or a new trace starts, so log lines
 * still carry trace and span ids and the `traceparent` passed on (`traceparentOf`) keeps the
 * caller's trace id and sampled flag, as the W3C asks of a participant that does not record.
 * What `startServerSpan` returns for an unsampled request, at a fraction of its cost (no
 * propagator, sampler or span object: ~0.3 µs instead of ~2.5 µs for server and client span).
 * The caller's `tracestate` is not read: it travels on in the headers the gateway forwards
 * (dropped first by `discardOrphanTracestate` when the traceparent beside it is not valid).
 */
export function unrecordedServerContext(traceparent: string | null, requestId: string): Context {
  const caller = traceparent ? parseTraceParent(traceparent) : null;
  const span = trace.wrapSpanContext({
    traceId: caller?.traceId ?? randomHexId(16),
    spanId: randomHexId(8),
    // Only the sampled bit is passed on (W3C Trace Context §3.2.2.5).
    traceFlags: caller ? caller.traceFlags & TraceFlags.SAMPLED : TraceFlags.NONE,
  });
  return trace.setSpan(ROOT_CONTEXT, span).setValue(REQUEST_ID, requestId);
}

/**
 * Removes a `tracestate` that came without a valid `traceparent`: W3C Trace Context §4.3 says it
 * "MUST be discarded". The request gets a new trace, and the caller's vendor state is not that
 * trace's, so the state must not travel on with it. A tracestate beside a valid traceparent
 * travels on as it came (or as the propagator writes it, when spans are recorded).
 */
export function discardOrphanTracestate(headers: Headers): void {
  if (!headers.has("tracestate")) return;
  const traceparent = headers.get("traceparent");
  if (traceparent === null || parseTraceParent(traceparent) === null) headers.delete("tracestate");
}

/** The `traceparent` (version 00) naming the span of `ctx` as the parent of a call it makes. */
export function traceparentOf(ctx: Context): string | undefined {
  const span = trace.getSpan(ctx);
  if (!span) return undefined;
  const { traceId, spanId, traceFlags } = span.spanContext();
  return `00-${traceId}-${spanId}-${traceFlags & TraceFlags.SAMPLED ? "01" : "00"}`;
}
