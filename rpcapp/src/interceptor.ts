/**
 * One server interceptor for what every RPC gets, whatever its method: the identity headers as
 * response initial metadata (`x-served-by`, `x-service-version`, `x-request-id`) and one JSON
 * access-log line when the call ends.
 */
import * as grpc from "@grpc/grpc-js";
import type { ServiceIdentity } from "../../lib/env.ts";
import type { Logger } from "../../lib/log.ts";
import { requestIdOrNew } from "../../lib/request-id.ts";

/** Codes that mean the server failed, as opposed to the caller sending something wrong. */
const SERVER_FAULTS = new Set([grpc.status.UNKNOWN, grpc.status.INTERNAL, grpc.status.DATA_LOSS, grpc.status.UNIMPLEMENTED]);

export function accessInterceptor(identity: ServiceIdentity, log: Logger): grpc.ServerInterceptor {
  return (method, call) => {
    const startedAt = performance.now();
    let requestId = "";
    let isMetadataSent = false;
    let isLogged = false;

    const logEnd = (code: grpc.status) => {
      if (isLogged) return;
      isLogged = true;
      const line = {
        method: method.path.slice(1),
        grpc_code: grpc.status[code],
        duration_ms: Math.round((performance.now() - startedAt) * 1000) / 1000,
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
            nextMetadata(metadata);
          },
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
