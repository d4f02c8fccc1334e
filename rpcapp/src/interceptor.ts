/**
 * One server interceptor for what every RPC gets, whatever its method: the identity headers as
 * response initial metadata (`x-served-by`, `x-service-version`, `x-request-id`), a server span
 * continuing the caller's trace (W3C `traceparent` in the request metadata), the RPC metrics, and
 * one JSON access-log line when the call ends.
 */
import * as grpc from "@grpc/grpc-js";
import { type Context, context, SpanStatusCode, trace, type Tracer } from "@opentelemetry/api";
import type { ServiceIdentity } from "../../lib/env.ts";
import type { Logger } from "../../lib/log.ts";
import { requestIdOrNew } from "../../lib/request-id.ts";
import type { GrpcServerMetrics } from "../../lib/telemetry/metrics.ts";
import { logFieldsOf, metadataGetter, startServerSpan } from "../../lib/telemetry/spans.ts";

/** Codes that mean the server failed, as opposed to the caller sending something wrong. */
const SERVER_FAULTS = new Set([
  grpc.status.UNKNOWN,
  grpc.status.INTERNAL,
  grpc.status.DATA_LOSS,
  grpc.status.UNIMPLEMENTED,
]);
/** Codes that mark a server span as failed (OpenTelemetry gRPC semantic conventions). */
const SPAN_ERRORS = new Set([...SERVER_FAULTS, grpc.status.DEADLINE_EXCEEDED, grpc.status.UNAVAILABLE]);

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
}

/** `/pkg.Service/Method` → `pkg.Service/Method`, sliced once per method rather than per call. */
const methodNames = new Map<string, string>();
function methodName(path: string): string {
  let name = methodNames.get(path);
  if (name === undefined) methodNames.set(path, (name = path.slice(1)));
  return name;
}

export function accessInterceptor(identity: ServiceIdentity, log: Logger): grpc.ServerInterceptor {
  return (method, call) => {
    const startedAt = performance.now();
    const name = methodName(method.path);
    const { tracer, metrics } = telemetry;
    let requestId = "";
    let traced: Context | undefined;
    let isMetadataSent = false;
    let isLogged = false;

    const logEnd = (code: grpc.status) => {
      if (isLogged) return;
      isLogged = true;
      const seconds = (performance.now() - startedAt) / 1000;
      const codeName = grpc.status[code];
      if (metrics) {
        metrics.observe(name, codeName, seconds);
        if (traced) metrics.inFlight--;
      }
      if (traced) {
        const span = trace.getSpan(traced)!;
        if (span.isRecording()) {
          span.setAttribute("rpc.grpc.status_code", code);
          if (SPAN_ERRORS.has(code)) span.setStatus({ code: SpanStatusCode.ERROR, message: codeName });
        }
        span.end();
      }
      const line = {
        method: name,
        grpc_code: codeName,
        duration_ms: Math.round(seconds * 1_000_000) / 1000,
        ...(traced && logFieldsOf(traced)),
        request_id: requestId,
        peer: call.getPeer(),
      };
      if (SERVER_FAULTS.has(code)) log.error(line, "rpc");
      else log.info(line, "rpc");
    };

    const intercepted: grpc.ServerInterceptingCall = new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, nextMetadata) => {
            requestId = requestIdOrNew(metadata.get("x-request-id")[0]);
            const slash = name.indexOf("/");
            const attributes = {
              "rpc.system": "grpc",
              "rpc.service": name.slice(0, slash),
              "rpc.method": name.slice(slash + 1),
            };
            // Health checks arrive every few seconds from every gateway: ids for the log, no span.
            const record = !name.startsWith("grpc.health.v1.");
            traced = startServerSpan(tracer, name, metadata, metadataGetter, requestId, attributes, record);
            if (metrics) metrics.inFlight++;
            nextMetadata(metadata);
          },
          // The handler runs when the request is complete: inside the trace context, so anything
          // it logs or calls carries the trace.
          onReceiveHalfClose: (nextHalfClose) => (traced ? context.with(traced, nextHalfClose) : nextHalfClose()),
          onCancel: () => logEnd(grpc.status.CANCELLED),
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
        logEnd(status.code);
        next(status);
      },
    });
    return intercepted;
  };
}
