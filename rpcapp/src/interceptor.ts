/**
 * One server interceptor for what every RPC gets, whatever its method: the identity headers as
 * response initial metadata (`x-served-by`, `x-service-version`, `x-request-id`), a server span
 * continuing the caller's trace (W3C `traceparent` in the request metadata), the RPC metrics, and
 * one JSON access-log line when the call ends (access-log.ts).
 *
 * It runs on every call, so what can be worked out once per method is (`MethodInfo`: the name,
 * span attributes, metric series, whether it is a probe), and nothing is done twice per call.
 * Probes — grpc.health.v1 and reflection — are counted in the metrics like any call, but write no
 * access line unless `logProbes` (LOG_PROBES): the gateway's health checks alone would otherwise
 * log a line every few seconds per gateway.
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
const EXP_PINO = !!process.env.RPCAPP_EXP_PINO;
import { logFieldsOf, metadataGetter, startServerSpan } from "../../lib/telemetry/spans.ts";
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

/** Services whose calls are probes: health checks and reflection, not traffic. */
const PROBE_SERVICES = new Set([
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
]);

export interface RpcTelemetry {
  tracer: Tracer;
  metrics?: GrpcServerMetrics;
}

// The global tracer (a proxy: it follows the provider startTracing registers, a no-op before).
let telemetry: RpcTelemetry = { tracer: trace.getTracer("portico") };

/**
 * Sets the tracer and metrics every RPC reports to. main.ts calls it before the server starts;
 * without it (tests building a server in-process) spans go to the global tracer and no metrics
 * are kept.
 */
export function instrumentRpcs(next: RpcTelemetry): void {
  telemetry = next;
  methods.clear(); // their series belonged to the previous metrics
}

/** What every call of one method shares. */
interface MethodInfo {
  /** `pkg.Service/Method`: the span name and metric label. */
  name: string;
  /** `name` as a JSON string, for the access line. */
  quotedName: string;
  attributes: Attributes;
  /** Health checks get trace ids for their log line, but no recorded span. */
  isHealth: boolean;
  isProbe: boolean;
  /** Metric series by status code, bound on first use. */
  series: (Series | undefined)[];
}

const methods = new Map<string, MethodInfo>();

function methodInfo(path: string): MethodInfo {
  let info = methods.get(path);
  if (info === undefined) {
    const name = path.slice(1);
    const slash = name.indexOf("/");
    const service = name.slice(0, slash);
    info = {
      name,
      quotedName: JSON.stringify(name),
      attributes: Object.freeze({ "rpc.system": "grpc", "rpc.service": service, "rpc.method": name.slice(slash + 1) }),
      isHealth: service === "grpc.health.v1.Health",
      isProbe: PROBE_SERVICES.has(service),
      series: [],
    };
    methods.set(path, info);
  }
  return info;
}

function seriesOf(info: MethodInfo, metrics: GrpcServerMetrics, code: grpc.status): Series {
  let series = info.series[code];
  if (series === undefined) info.series[code] = series = metrics.calls.get(info.name, grpc.status[code]);
  return series;
}

export interface AccessInterceptorOptions {
  /** Write access lines for probes (health checks, reflection) too. Default false. */
  logProbes?: boolean;
}

export function accessInterceptor(
  identity: ServiceIdentity,
  log: Logger,
  opts: AccessInterceptorOptions = {},
): grpc.ServerInterceptor {
  const accessLog = new AccessLog(log);
  const logProbes = opts.logProbes ?? false;

  return (method, call) => {
    const startedAt = performance.now();
    const info = methodInfo(method.path);
    const { tracer, metrics } = telemetry;
    let requestId = "";
    let traced: Context | undefined;
    let span: Span | undefined;
    let isMetadataSent = false;
    let isEnded = false;

    const end = (code: grpc.status) => {
      if (isEnded) return;
      isEnded = true;
      const seconds = (performance.now() - startedAt) / 1000;
      if (metrics) {
        seriesOf(info, metrics, code).observe(seconds);
        if (span) metrics.inFlight--;
      }
      if (span) {
        if (span.isRecording()) {
          span.setAttribute("rpc.grpc.status_code", code);
          if (SPAN_ERRORS.has(code)) span.setStatus({ code: SpanStatusCode.ERROR, message: grpc.status[code] });
        }
        span.end();
      }
      if (info.isProbe && !logProbes) return;
      if (EXP_PINO) {
        const fields = {
          method: info.name,
          grpc_code: grpc.status[code],
          duration_ms: Math.round(seconds * 1_000_000) / 1000,
          ...(traced && logFieldsOf(traced)),
          request_id: requestId,
          peer: call.getPeer(),
        };
        if (SERVER_FAULTS.has(code)) log.error(fields, "rpc");
        else log.info(fields, "rpc");
        return;
      }
      accessLog.write(SERVER_FAULTS.has(code) ? "error" : "info", {
        quotedMethod: info.quotedName,
        codeName: grpc.status[code],
        seconds,
        span: span?.spanContext(),
        requestId,
        peer: call.getPeer(),
      });
    };

    const intercepted: grpc.ServerInterceptingCall = new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            requestId = requestIdOrNew(metadata.get("x-request-id")[0]);
            traced = startServerSpan(
              tracer,
              info.name,
              metadata,
              metadataGetter,
              requestId,
              info.attributes,
              !info.isHealth,
            );
            span = trace.getSpan(traced);
            if (metrics && span) metrics.inFlight++;
            nextMetadata(metadata);
          },
          // The handler runs when the request is complete: inside the trace context, so anything
          // it logs or calls carries the trace.
          onReceiveHalfClose: (nextHalfClose) => (traced ? context.with(traced, nextHalfClose) : nextHalfClose()),
          onCancel: () => end(grpc.status.CANCELLED),
        }),
      sendMetadata: (metadata, next) => {
        isMetadataSent = true;
        metadata.set("x-served-by", identity.instance);
        metadata.set("x-service-version", identity.version);
        metadata.set("x-request-id", requestId || crypto.randomUUID());
        next(metadata);
      },
      sendStatus: (status, next) => {
        // A call that fails before any message would otherwise go out as "trailers-only", with
        // no initial metadata at all; send the headers first so every response carries them.
        if (!isMetadataSent) intercepted.sendMetadata(new grpc.Metadata());
        end(status.code);
        next(status);
      },
    });
    return intercepted;
  };
}
