/**
 * The gRPC transport: one unary call on one endpoint's channel (./h2-client.ts), with the
 * metadata it is given (request id, client address, claims, trace context) and a deadline;
 * resolves with the reply or the gRPC status, and the identity of the replica that answered.
 *
 * A pure send: no retries, spans or metrics here. upstream/dispatch.ts decides where each try
 * goes and reports it; grpc/route.ts builds what is sent (encoded once, whatever the tries).
 */
import { statusDetails } from "./status-details.ts";
import type { ClientWatch } from "../upstream/client-watch.ts";
import type { GrpcChannel, UnaryResult } from "./h2-client.ts";
import type { GrpcMethod } from "./method.ts";
import { GrpcCode } from "./status.ts";
import type { MetadataHeaders } from "./wire.ts";

/** Which replica answered, and its version: its `x-served-by` / `x-service-version` initial metadata. */
export interface ReplicaIdentity {
  servedBy?: string;
  serviceVersion?: string;
}

export type GrpcOutcome =
  | ({ kind: "reply"; reply: Record<string, unknown> } & ReplicaIdentity)
  | ({
      kind: "status";
      code: GrpcCode;
      details: string;
      /** google.rpc.Status details from `grpc-status-details-bin`, as JSON (status-details.ts). */
      richDetails?: Record<string, unknown>[];
      /** Nothing reached the endpoint (no connection, refused before processing): safe to retry. */
      unsent?: true;
      /** A live endpoint refused the call unprocessed (REFUSED_STREAM, twice): safe to retry, not ejected for. */
      unprocessed?: true;
      /** The reply's declared length, over the limit: refused unread (the upstream's fault, not the caller's). */
      replyTooLarge?: number;
    } & ReplicaIdentity)
  /** The client went away first: the call was cancelled (RST_STREAM CANCEL) or never left the queue. */
  | { kind: "cancelled" };

/**
 * Makes one call on `channel` with the already encoded and framed `request` (GrpcMethod.encodeFramed,
 * wire.ts frameMessage); never rejects (a failure is a status).
 */
export function callUnary(
  channel: GrpcChannel,
  method: GrpcMethod,
  request: Uint8Array,
  metadata: MetadataHeaders,
  timeoutMs: number,
  maxReplyBytes: number,
  /** Whoever asked for the call (the client's request): once it is gone, the call is cancelled. */
  client?: ClientWatch,
): Promise<GrpcOutcome> {
  return channel.unaryMapped(
    { path: method.path, message: request, metadata, timeoutMs, maxReplyBytes, client },
    toOutcome,
    method,
  );
}

/** The call's result as an outcome: the reply decoded, and the replica's identity from its initial metadata. */
function toOutcome(result: UnaryResult, method: GrpcMethod): GrpcOutcome {
  if (result.kind === "cancelled") return result;
  // Built field by field (no spreads): one object per call (bench/census.ts).
  let outcome: Exclude<GrpcOutcome, { kind: "cancelled" }>;
  if (result.kind === "status") {
    outcome = { kind: "status", code: result.code, details: result.details };
    if (result.unsent) outcome.unsent = true;
    if (result.unprocessed) outcome.unprocessed = true;
    if (result.replyTooLarge !== undefined) outcome.replyTooLarge = result.replyTooLarge;
    if (result.statusDetails !== undefined)
      outcome.richDetails = statusDetails(result.statusDetails, method.responseType.root);
  } else {
    try {
      outcome = { kind: "reply", reply: method.decode(result.message) };
    } catch (err) {
      outcome = {
        kind: "status",
        code: GrpcCode.INTERNAL,
        details: `the reply is not a valid ${method.responseType.fullName.slice(1)}: ${(err as Error).message}`,
      };
    }
  }
  const headers = result.headers;
  if (headers) {
    const servedBy = headers["x-served-by"];
    const serviceVersion = headers["x-service-version"];
    if (typeof servedBy === "string") outcome.servedBy = servedBy;
    if (typeof serviceVersion === "string") outcome.serviceVersion = serviceVersion;
  }
  return outcome;
}
