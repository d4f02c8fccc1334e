/**
 * gRPC's richer error model: a `grpc-status-details-bin` trailer holds a google.rpc.Status whose
 * `details` are `Any` messages (google.rpc.BadRequest, ErrorInfo, RetryInfo, a service's own…).
 * grpc-gateway writes them into its error body's `details`; so does the gRPC route, each as JSON
 * with its `@type`:
 *
 *   - a type the upstream's .proto files define: its fields, as a reply's are written
 *     (`{"@type": "type.googleapis.com/acme.QuotaFailure", "limit": "10"}`);
 *   - any other (google.rpc's own, unless the .proto imports them): its bytes in base64 under
 *     `value` (`{"@type": "…", "value": "CgR…"}`), a form of the gateway's own: protojson refuses
 *     an Any it cannot resolve, where a client is better served by the bytes.
 *
 * A trailer that is not a Status gives no details: the code and message still come from
 * `grpc-status` and `grpc-message`, which gRPC says are the ones to trust.
 */
import protobuf from "protobufjs";
import { REPLY_TO_JSON } from "./transcode.ts";

// google.rpc.Status and google.protobuf.Any, wire for wire (the field numbers are theirs), under a
// name of the gateway's own so that they never clash with an upstream's .proto. Parsed on the
// first trailer that needs it, not at start-up: most gateways never see one.
let status: protobuf.Type | undefined;
function statusType(): protobuf.Type {
  status ??= protobuf
    .parse(
      `syntax = "proto3";
      package portico.rpc;
      message Any { string type_url = 1; bytes value = 2; }
      message Status { int32 code = 1; string message = 2; repeated Any details = 3; }`,
      { keepCase: true },
    )
    .root.lookupType("portico.rpc.Status");
  return status;
}

/** Bounds the work a hostile trailer can ask for: details past this many are left out. */
const MAX_DETAILS = 16;

/** The details of a `grpc-status-details-bin` value (base64), resolved against `types`; [] when it holds none or is not a Status. */
export function statusDetails(trailer: string, types: protobuf.Root): Record<string, unknown>[] {
  let details: { type_url: string; value: Uint8Array }[];
  try {
    details = (statusType().decode(Buffer.from(trailer, "base64")) as unknown as { details: typeof details }).details;
  } catch {
    return [];
  }
  return details.slice(0, MAX_DETAILS).map(({ type_url, value }) => {
    const name = type_url.slice(type_url.lastIndexOf("/") + 1);
    try {
      const type = types.lookupType(name);
      return { "@type": type_url, ...type.toObject(type.decode(value), REPLY_TO_JSON) };
    } catch {
      return { "@type": type_url, value: Buffer.from(value).toString("base64") };
    }
  });
}
