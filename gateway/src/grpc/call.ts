/**
 * The gRPC transport: one unary call on one endpoint's grpc-js client, with the request id (and
 * trace context) as metadata and a deadline; resolves with the reply or the gRPC status.
 */
import * as grpc from "@grpc/grpc-js";
import { gatewayTelemetry } from "../telemetry.ts";
import type { Endpoint } from "../upstream/endpoint.ts";
import type { GrpcMethod } from "./method.ts";

/** Which replica answered, and its version: its `x-served-by` / `x-service-version` initial metadata. */
export interface ReplicaIdentity {
  servedBy?: string;
  serviceVersion?: string;
}

export type GrpcOutcome =
  | ({ kind: "reply"; reply: Record<string, unknown> } & ReplicaIdentity)
  | ({ kind: "status"; code: grpc.status; details: string } & ReplicaIdentity);

/** Makes one try, inside a client span whose `traceparent` goes out in `metadata` (telemetry.ts). */
export function callUnary(
  endpoint: Endpoint,
  method: GrpcMethod,
  message: object,
  metadata: grpc.Metadata,
  timeoutMs: number,
): Promise<GrpcOutcome> {
  return gatewayTelemetry.traceGrpc(endpoint, method.path, metadata, () =>
    sendUnary(endpoint, method, message, metadata, timeoutMs),
  );
}

function sendUnary(
  endpoint: Endpoint,
  method: GrpcMethod,
  message: object,
  metadata: grpc.Metadata,
  timeoutMs: number,
): Promise<GrpcOutcome> {
  return new Promise((resolve) => {
    const replica: ReplicaIdentity = {};
    const call = endpoint
      .grpcClient()
      .makeUnaryRequest(
        method.path,
        method.serialize,
        method.deserialize,
        message,
        metadata,
        { deadline: Date.now() + timeoutMs },
        (err, reply) => {
          if (err)
            resolve({
              kind: "status",
              code: err.code ?? grpc.status.UNKNOWN,
              details: err.details ?? err.message,
              ...replica,
            });
          else resolve({ kind: "reply", reply: reply ?? {}, ...replica });
        },
      );
    call.on("metadata", (md: grpc.Metadata) => {
      const [servedBy] = md.get("x-served-by");
      const [serviceVersion] = md.get("x-service-version");
      if (typeof servedBy === "string") replica.servedBy = servedBy;
      if (typeof serviceVersion === "string") replica.serviceVersion = serviceVersion;
    });
  });
}
