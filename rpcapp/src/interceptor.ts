/**
 * One server interceptor for what every RPC gets, whatever its method: the identity headers as
 * response initial metadata (`x-served-by`, `x-service-version`, `x-request-id`), the trace
 * context continuing the caller's (W3C `traceparent` in the request metadata) with a server span
 * when spans are recorded, the RPC metrics, and one JSON access-log line when the call ends
 * (access-log.ts).
 *
 * It runs on every call, so what can be worked out once per method is (`MethodInfo`: the name,
 * span attributes, metric series, whether it is a probe), and nothing is done twice per call
 * (rpcapp/scripts/cost.ts measures what a call costs). Probes — grpc.health.v1 and reflection —
 * are counted in the metrics like any call but write no access line unless `logProbes`
 * (LOG_PROBES): the gateways' health checks alone would log a line every ~2 s per gateway.
 */
import * as grpc from "@grpc/grpc-js";
import {
  type Attributes,
  type Context,
  context,
  type Span,
  SpanStatusCode,
  trace,
  type Tracer,
} from "@opentelemetry/api";
import type { ServiceIdentity } from "../../lib/env.ts";
import type { Logger } from "../../lib/log.ts";
import { requestIdOrNew } from "../../lib/request-id.ts";
import type { GrpcServerMetrics } from "../../lib/telemetry/metrics.ts";
import type { Series } from "../../lib/telemetry/series.ts";
import { metadataGetter, startServerSpan, unrecordedServerContext } from "../../lib/telemetry/spans.ts";
import { AccessLog } from "./access-log.ts";

/** Codes that mean the server failed, as opposed to the caller sending something wrong. */
const SERVER_FAULTS = new Set([
  grpc.status.UNKNOWN,
  grpc.status.INTERNAL,
  grpc.status.DATA_LOSS,
  grpc.status.UNIMPLEMENTED,
]);
/** Codes that mark a server span as failed (OpenTelemetry gRPC semantic conventions). */
const SPAN_ERRORS = new Set([...SERVER_FAULTS, grpc.status.DEADLINE_EXCEEDED, grpc.status.UNAVAILABLE]);

const HEALTH_SERVICE = "grpc.health.v1.Health";
/** Services whose calls are probes, not traffic: health checks and reflection. */
const PROBE_SERVICES = new Set([
  HEALTH_SERVICE,
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
]);

export interface RpcTelemetry {
  /** Spans go here; the global tracer (a no-op one unless tracing was started) by default. */
  tracer?: Tracer;
  /** Nothing is counted without them. */
  metrics?: GrpcServerMetrics;
  /**
   * Whether spans can be recorded at all (tracing exports them: lib/telemetry/tracing.ts
   * `isExporting`). When not, a call takes its trace context without the SDK — the caller's
   * trace id and sampled flag, a fresh span id, the request id — at a tenth of the cost. Default true.
   */
  recording?: boolean;
}

export interface AccessInterceptorOptions {
  telemetry?: RpcTelemetry;
  /** Access lines for probes (health checks, reflection) too. Default false. */
  logProbes?: boolean;
}

/** What every call of one method shares. */
interface MethodInfo {
  /** `pkg.Service/Method`: the span name and metric label. */
  name: string;
  /** `name` as a JSON string, for the access line. */
  quotedName: string;
  attributes: Attributes;
  /** Health checks get ids for their log line, never a recorded span: they would fill the trace store. */
  isHealth: boolean;
  isProbe: boolean;
  /** Metric series by status code, bound on first use. */
  series: (Series | undefined)[];
}

function describeMethod(path: string): MethodInfo {
  const name = path.slice(1);
  const slash = name.indexOf("/");
  const service = name.slice(0, slash);
  return {
    name,
    quotedName: JSON.stringify(name),
    attributes: Object.freeze({ "rpc.system": "grpc", "rpc.service": service, "rpc.method": name.slice(slash + 1) }),
    isHealth: service === HEALTH_SERVICE,
    isProbe: PROBE_SERVICES.has(service),
    series: [],
  };
}

/** The base call's view of the request's events (grpc-js does not export the type's name). */
type CallListener = Parameters<grpc.ServerInterceptingCallInterface["start"]>[0];
type StatusToSend = Parameters<grpc.ServerInterceptingCallInterface["sendStatus"]>[0];

/** Where `noteStatus` leaves the code of a status grpc-js's base call sent by itself. */
const BASE_STATUS = Symbol("status sent by grpc-js's base call");
/** The base call's observer, for the identity headers of a status it sends by itself. */
const OBSERVED = Symbol("the call's observer");
type NotedCall = grpc.ServerInterceptingCallInterface & { [BASE_STATUS]?: grpc.status; [OBSERVED]?: ObservedCall };

/**
 * grpc-js ends some calls itself, on its base call, where no interceptor sees the status: the
 * deadline passing (`grpc-timeout`), a request it cannot decode or that is over the size limit, a
 * malformed `grpc-timeout`. The interceptor is then told only `onCancel`. Put in place of the
 * base call's `sendStatus`, this notes the code on the call, so the call is logged and counted as
 * what the client got, not as CANCELLED; and when nothing was sent yet (the answer is then
 * trailers-only), it adds the identity headers to the status's metadata, which grpc-js sends in
 * that one header block — every answer says who gave it. A shared function (not a closure per
 * call): it finds the base method on the call's prototype.
 */
function noteStatus(this: NotedCall, status: StatusToSend): void {
  this[BASE_STATUS] = status.code;
  const observed = this[OBSERVED];
  const sent = observed && !observed.metadataSent ? observed.withIdentity(status) : status;
  (Object.getPrototypeOf(this) as NotedCall).sendStatus.call(this, sent);
}

function traceparentOf(metadata: grpc.Metadata): string | null {
  const value = metadata.get("traceparent")[0];
  return typeof value === "string" ? value : null;
}

/** What every call's `ObservedCall` shares: built once per server. */
interface Observer {
  identity: ServiceIdentity;
  accessLog: AccessLog;
  logProbes: boolean;
  tracer: Tracer;
  metrics: GrpcServerMetrics | undefined;
  recording: boolean;
}

/**
 * One call, observed: the interceptor's whole per-call state in one object whose methods are on
 * its prototype. It stands between grpc-js's base call and the handler both ways — as the call the
 * handler talks to and as the listener the base call tells of the request. grpc-js's own
 * `ServerInterceptingCall` builds, per call, a responder and a listener object and seven closures
 * so that an interceptor may answer later; every step here is synchronous, so the four methods that
 * build them are replaced (the rest — startRead, getPeer, getDeadline… — pass to the base call as
 * they did). Cheaper by ~40 objects per call (rpcapp/scripts/cost.ts measures the CPU;
 * bench/README.md has the figures).
 */
class ObservedCall extends grpc.ServerInterceptingCall {
  readonly #startedAt = performance.now();
  #listener: CallListener | undefined;
  #requestId = "";
  #traced: Context | undefined;
  #span: Span | undefined;
  /** Initial metadata went out (through `sendMetadata`, the only way to the base call's). */
  metadataSent = false;
  #ended = false;
  /** The call was cancelled (or grpc-js ended it): later events from the base call are dropped. */
  #cancelled = false;

  constructor(
    private readonly base: NotedCall,
    private readonly info: MethodInfo,
    private readonly observer: Observer,
  ) {
    super(base);
    // The base call (this is the only interceptor): see noteStatus.
    base.sendStatus = noteStatus;
    base[OBSERVED] = this;
  }

  // --- the call, as the handler sees it ---

  override start(listener: CallListener): void {
    this.#listener = listener;
    this.base.start(this);
  }

  override sendMetadata(metadata: grpc.Metadata): void {
    this.metadataSent = true;
    this.base.sendMetadata(this.#addIdentity(metadata));
  }

  /** `status` with the identity headers in its metadata: for a trailers-only answer grpc-js sends itself. */
  withIdentity(status: StatusToSend): StatusToSend {
    return { ...status, metadata: this.#addIdentity(status.metadata?.clone() ?? new grpc.Metadata()) };
  }

  #addIdentity(metadata: grpc.Metadata): grpc.Metadata {
    const { identity } = this.observer;
    metadata.set("x-served-by", identity.instance);
    metadata.set("x-service-version", identity.version);
    metadata.set("x-request-id", this.#requestId || crypto.randomUUID());
    return metadata;
  }

  override sendMessage(message: unknown, callback: () => void): void {
    if (!this.metadataSent) this.sendMetadata(new grpc.Metadata());
    this.base.sendMessage(message, callback);
  }

  override sendStatus(status: StatusToSend): void {
    // A call that fails before any message would otherwise go out as "trailers-only", with
    // no initial metadata at all; send the headers first so every response carries them.
    if (!this.metadataSent) this.sendMetadata(new grpc.Metadata());
    this.#end(status.code);
    this.base.sendStatus(status);
  }

  // --- the request, as the base call tells it ---

  onReceiveMetadata(metadata: grpc.Metadata): void {
    if (this.#cancelled) return;
    const { info, observer } = this;
    const requestId = requestIdOrNew(metadata.get("x-request-id")[0]);
    this.#requestId = requestId;
    const traced =
      observer.recording && !info.isHealth
        ? startServerSpan(observer.tracer, info.name, metadata, metadataGetter, requestId, info.attributes)
        : unrecordedServerContext(traceparentOf(metadata), requestId);
    this.#traced = traced;
    this.#span = trace.getSpan(traced);
    if (observer.metrics) observer.metrics.inFlight++;
    this.#listener!.onReceiveMetadata(metadata);
  }

  onReceiveMessage(message: unknown): void {
    if (!this.#cancelled) this.#listener!.onReceiveMessage(message);
  }

  /** The handler runs when the request is complete: inside the trace context, so anything it logs or calls carries the trace. */
  onReceiveHalfClose(): void {
    if (this.#cancelled) return;
    const listener = this.#listener!;
    if (this.#traced) context.with(this.#traced, listener.onReceiveHalfClose, listener);
    else listener.onReceiveHalfClose();
  }

  /** A status grpc-js sent by itself, or the client's cancellation. */
  onCancel(): void {
    this.#cancelled = true;
    this.#end(this.base[BASE_STATUS] ?? grpc.status.CANCELLED);
    this.#listener!.onCancel();
  }

  #end(code: grpc.status): void {
    if (this.#ended) return;
    this.#ended = true;
    const { info, observer } = this;
    const seconds = (performance.now() - this.#startedAt) / 1000;
    const metrics = observer.metrics;
    if (metrics) {
      let series = info.series[code];
      if (series === undefined) info.series[code] = series = metrics.calls.get(info.name, grpc.status[code]);
      series.observe(seconds);
      if (this.#traced) metrics.inFlight--; // counted in when its metadata arrived
    }
    const span = this.#span;
    if (span) {
      if (span.isRecording()) {
        span.setAttribute("rpc.grpc.status_code", code);
        if (SPAN_ERRORS.has(code)) span.setStatus({ code: SpanStatusCode.ERROR, message: grpc.status[code] });
      }
      span.end();
    }
    if (info.isProbe && !observer.logProbes) return;
    const level = SERVER_FAULTS.has(code) ? "error" : "info";
    if (!observer.accessLog.enabled(level)) return;
    observer.accessLog.write(level, {
      quotedMethod: info.quotedName,
      codeName: grpc.status[code],
      seconds,
      span: span?.spanContext(),
      requestId: this.#requestId,
      peer: this.base.getPeer(),
    });
  }
}

export function accessInterceptor(
  identity: ServiceIdentity,
  log: Logger,
  opts: AccessInterceptorOptions = {},
): grpc.ServerInterceptor {
  const observer: Observer = {
    identity,
    accessLog: new AccessLog(log),
    logProbes: opts.logProbes ?? false,
    tracer: opts.telemetry?.tracer ?? trace.getTracer("portico"),
    metrics: opts.telemetry?.metrics,
    recording: opts.telemetry?.recording ?? true,
  };
  const methods = new Map<string, MethodInfo>();
  return (method, call) => {
    let info = methods.get(method.path);
    if (info === undefined) methods.set(method.path, (info = describeMethod(method.path)));
    return new ObservedCall(call, info, observer);
  };
}
