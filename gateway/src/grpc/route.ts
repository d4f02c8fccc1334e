/**
 * The gRPC half of the request path (server.ts hands it a routed request whose JSON depth it
 * already checked): JSON body → checked against the method's request type (./transcode.ts) →
 * encoded once → unary call through upstream/dispatch.ts with the gRPC transport (./call.ts, on
 * the lean HTTP/2 client ./h2-client.ts) → the reply as
 * JSON, or the gRPC status as problem+json that also carries grpc-gateway's {code, message,
 * details} (./status-details.ts), with the HTTP status of grpc-gateway's mapping (./status.ts).
 */
import type protobuf from "protobufjs";
import { DEFAULT_REALM } from "../auth/schema.ts";
import type { RoutedRequest } from "../context.ts";
import { gatewayProblem } from "../errors.ts";
import type { GatewayTelemetry } from "../telemetry/index.ts";
import { clientGoneProblem, dispatch, noEndpointProblem } from "../upstream/dispatch.ts";
import { callUnary, type ReplicaIdentity } from "./call.ts";
import { grpcCodeName, httpStatusFromGrpc } from "./status.ts";
import { checkMessage, type FieldError, type TranscodeLimits } from "./transcode.ts";
import { type MetadataHeaders, metadataWriter, setMetadata } from "./wire.ts";

export interface GrpcRouteDeps {
  telemetry: GatewayTelemetry;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

export async function transcodeGrpc(routed: RoutedRequest, deps: GrpcRouteDeps): Promise<Response> {
  // Taken apart here, not in the parameter list: destructured parameters cost an async function a
  // scope object more per call (bench/census.ts).
  const { req, ctx, route, upstream, body, limits } = routed;
  const method = route.grpcMethod!;
  const requestId = ctx.id;
  let input: unknown = {};
  if (body) {
    let text: string;
    try {
      text = utf8.decode(body);
    } catch {
      return gatewayProblem({
        status: 400,
        title: "Invalid request body",
        requestId,
        detail: "the body is not valid UTF-8",
      });
    }
    try {
      input = JSON.parse(text);
    } catch (err) {
      return gatewayProblem({ status: 400, title: "Invalid JSON", requestId, detail: (err as Error).message });
    }
  }
  const errors = checkMessage(method.requestType, input, transcodeLimitsOf(limits));
  if (errors.length > 0) return invalidRequest(requestId, method.requestType, errors);
  // Plain headers: the trace context hook (telemetry/) writes each try's traceparent here too.
  const metadata: MetadataHeaders = {};
  setMetadata(metadata, "x-request-id", requestId);
  setMetadata(metadata, "x-forwarded-for", ctx.clientIp);
  const userAgent = req.headers.get("user-agent");
  if (userAgent) setMetadata(metadata, "x-forwarded-user-agent", userAgent);
  // The caller's vendor trace state travels on beside the traceparent (W3C Trace Context §3.3), as
  // it does in an HTTP route's forwarded headers; when spans are recorded, the propagator writes
  // the same state over it (telemetry/).
  const tracestate = req.headers.get("tracestate");
  if (tracestate) setMetadata(metadata, "tracestate", tracestate);
  route.auth?.copyClaimHeaders(req.headers, metadataWriter(metadata));
  // Checked above, so fromObject alters nothing; encoded and framed once for every try. Should protobufjs
  // still refuse something the check let through, that is the body's fault: a 400, never a 500.
  let message: Uint8Array;
  try {
    message = method.encodeFramed(input as object);
  } catch (err) {
    const reason = String((err as Error)?.message ?? err).slice(0, 200);
    return invalidRequest(requestId, method.requestType, [
      { field: "(body)", message: `cannot be encoded: ${reason}` },
    ]);
  }
  const maxReplyBytes = limits.maxResponseBytes;
  // The client's request (`req`): a call whose client went away is cancelled, and a retry is not
  // sent for one already gone (upstream/client-watch.ts).
  const outcome = await dispatch(
    upstream,
    route,
    ctx,
    route.grpc?.idempotent === true,
    (endpoint, timeoutMs) =>
      callUnary(endpoint.grpcChannel(), method, message, metadata, timeoutMs, maxReplyBytes, req),
    deps.telemetry.grpcTries(upstream.name, method.path, metadata),
    upstream.stickyKey(req.headers),
    req,
  );
  if (outcome.kind === "no-endpoint") return noEndpointProblem(upstream.name, outcome, requestId);
  if (outcome.kind === "cancelled") return clientGoneProblem(upstream.name, ctx.endpoint, requestId);
  ctx.servedBy = outcome.servedBy;
  if (outcome.kind === "reply") return replyResponse(outcome);
  const servedBy = replicaHeaders(outcome);
  // Refused by the gateway's own limit: the upstream's fault, answered as the HTTP route answers it
  // (proxy/route.ts) — not grpc-gateway's 429 for RESOURCE_EXHAUSTED, which would tell the client
  // to slow down.
  if (outcome.replyTooLarge !== undefined)
    return gatewayProblem({
      status: 502,
      title: "Upstream response too large",
      requestId,
      detail: `${upstream.name} answered with a ${outcome.replyTooLarge}-byte reply message; the limit is ${maxReplyBytes}`,
      extensions: { upstream: upstream.name },
      headers: servedBy,
    });
  const status = httpStatusFromGrpc(outcome.code);
  const extra: Record<string, string> = status === 503 ? { "retry-after": "1" } : {};
  // UNAUTHENTICATED is a 401, which must name a challenge (RFC 9110 §15.5.2): the route's own
  // when it has auth, else a Bearer challenge in the default realm (a token is what gRPC
  // services authenticate).
  if (status === 401) extra["www-authenticate"] = route.auth?.challenge ?? UNAUTHENTICATED_CHALLENGE;
  return gatewayProblem({
    status,
    title: grpcCodeName(outcome.code),
    requestId,
    detail: outcome.details,
    extensions: {
      code: outcome.code,
      message: outcome.details,
      details: outcome.richDetails ?? [],
      upstream: upstream.name,
    },
    headers: { ...servedBy, ...extra },
  });
}

const UNAUTHENTICATED_CHALLENGE = `Bearer realm="${DEFAULT_REALM}"`;

/**
 * The reply as JSON, with the replica's identity as headers, as an HTTP upstream's would come back.
 * The headers are set on the response's own: no init object or header record per request, and a
 * function of its own, as a block in the async function would cost a scope object (bench/census.ts).
 */
function replyResponse(outcome: { reply: Record<string, unknown> } & ReplicaIdentity): Response {
  const response = new Response(JSON.stringify(outcome.reply));
  const headers = response.headers;
  headers.set("content-type", "application/json");
  if (outcome.servedBy) headers.set("x-served-by", outcome.servedBy);
  if (outcome.serviceVersion) headers.set("x-service-version", outcome.serviceVersion);
  return response;
}

/** The replica's identity as headers, as an HTTP upstream's would come back. */
function replicaHeaders(replica: ReplicaIdentity): Record<string, string> {
  const headers: Record<string, string> = {};
  if (replica.servedBy) headers["x-served-by"] = replica.servedBy;
  if (replica.serviceVersion) headers["x-service-version"] = replica.serviceVersion;
  return headers;
}

/** A config's JSON limits as checkMessage takes them: made once per config, not per request. */
const transcodeLimits = new WeakMap<RoutedRequest["limits"], TranscodeLimits>();

function transcodeLimitsOf(limits: RoutedRequest["limits"]): TranscodeLimits {
  let made = transcodeLimits.get(limits);
  if (!made)
    transcodeLimits.set(
      limits,
      (made = { maxDepth: limits.maxJsonDepth, maxStringLength: limits.maxJsonStringLength }),
    );
  return made;
}

/** The body does not fit the request message: every error in `errors`, the first in `detail`. */
function invalidRequest(requestId: string, type: protobuf.Type, errors: FieldError[]): Response {
  const [first] = errors;
  const more = errors.length > 1 ? ` (and ${errors.length - 1} more in errors)` : "";
  return gatewayProblem({
    status: 400,
    title: "Invalid request",
    requestId,
    detail: `the body does not match ${type.fullName.slice(1)}: ${first!.field} ${first!.message}${more}`,
    extensions: { errors },
  });
}
