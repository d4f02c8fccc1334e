/**
 * The gRPC transport: one unary call on one endpoint's grpc-js client, with the metadata it is
 * given (request id, trace context) and a deadline; resolves with the reply or the gRPC status,
 * and the identity of the replica that answered.
 *
 * A pure send: no retries, spans or metrics here. upstream/dispatch.ts decides where each try
 * goes and reports it; grpc/route.ts builds what is sent.
 */
import * as grpc from "@grpc/grpc-js";
import type { GrpcMethod } from "./method.ts";

/** Which replica answered, and its version: its `x-served-by` / `x-service-version` initial metadata. */
export interface ReplicaIdentity {
  servedBy?: string;
  serviceVersion?: string;
}

export type GrpcOutcome =
  | ({ kind: "reply"; reply: Record<string, unknown> } & ReplicaIdentity)
  | ({ kind: "status"; code: grpc.status; details: string } & ReplicaIdentity);

/** Makes one call on `client`; never rejects (a failure is a status). */
export function callUnary(
  client: grpc.Client,
  method: GrpcMethod,
  message: object,
  metadata: grpc.Metadata,
  timeoutMs: number,
): Promise<GrpcOutcome> {
  return new Promise((resolve) => {
    const replica: ReplicaIdentity = {};
    const call = client.makeUnaryRequest(
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
