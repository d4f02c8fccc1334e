/**
 * What one try on one endpoint came to, in the terms resilience decisions need: did the
 * endpoint fail (breaker, ejection, latency penalty), and is the request safe to try again
 * elsewhere. One classification for both transports, made once per try by dispatch.ts; the
 * breaker, outlier detection, metrics and spans all take that verdict.
 */
import type { GrpcOutcome } from "../grpc/call.ts";
import { GrpcCode } from "../grpc/status.ts";
import type { HttpOutcome } from "../proxy/http.ts";

export type Outcome = HttpOutcome | GrpcOutcome;

/**
 * - `ok`: the endpoint answered (4xx and gRPC application errors included);
 * - `connect`: nothing reached the endpoint — safe to retry for any method;
 * - `refused`: the endpoint is up and said it did not process the request (gRPC: REFUSED_STREAM,
 *   twice) — safe to retry for any method, as `connect` is, but a failure like `unavailable` for
 *   the endpoint, not a refused connection (which ejects it at once);
 * - `unavailable`: 502/503/504, a reset after sending, gRPC UNAVAILABLE — retry if idempotent;
 * - `timeout`: no answer in time (the request may have been processed) — retry if idempotent;
 * - `failure`: the endpoint failed in a way a retry would not fix (500, gRPC INTERNAL…);
 * - `cancelled`: the client went away first and the try was abandoned — it says nothing of the
 *   endpoint (not counted for health, latency or the canary; see dispatch.ts for the breaker), and
 *   nobody is left to retry for.
 */
export type Verdict = "ok" | "connect" | "refused" | "unavailable" | "timeout" | "failure" | "cancelled";

export function classify(outcome: Outcome): Verdict {
  switch (outcome.kind) {
    case "response": {
      const status = outcome.response.status;
      if (status < 500 || status === 501) return "ok";
      return status === 502 || status === 503 || status === 504 ? "unavailable" : "failure";
    }
    case "reply":
      return "ok";
    case "connect-error":
      return "connect";
    case "timeout":
      return "timeout";
    case "cancelled":
      return "cancelled";
    case "error":
      return "unavailable";
    case "status":
      // The gRPC client says when nothing reached the endpoint (grpc/h2-client.ts `unsent`).
      if (outcome.unsent) return "connect";
      if (outcome.unprocessed) return "refused";
      switch (outcome.code) {
        case GrpcCode.UNAVAILABLE:
          return "unavailable";
        case GrpcCode.DEADLINE_EXCEEDED:
          return "timeout";
        case GrpcCode.INTERNAL:
        case GrpcCode.UNKNOWN:
        case GrpcCode.DATA_LOSS:
          return "failure";
        default:
          return "ok";
      }
  }
}

/** The version the replica reported with its answer (`x-service-version`), if any. */
export function versionOf(outcome: Outcome): string | undefined {
  switch (outcome.kind) {
    case "response":
      return outcome.response.headers.get("x-service-version") ?? undefined;
    case "reply":
    case "status":
      return outcome.serviceVersion;
    default:
      return undefined;
  }
}

/** Whether a try failed, for callers that hold an outcome rather than its verdict. */
export function isFailure(outcome: Outcome): boolean {
  return classify(outcome) !== "ok";
}

/** RFC 9110 §9.2.2 idempotent methods (TRACE aside, which no route forwards). */
export function isIdempotentMethod(method: string): boolean {
  return method === "GET" || method === "HEAD" || method === "PUT" || method === "DELETE" || method === "OPTIONS";
}

export function isRetryable(verdict: Verdict, idempotent: boolean): boolean {
  return (
    verdict === "connect" ||
    verdict === "refused" ||
    (idempotent && (verdict === "unavailable" || verdict === "timeout"))
  );
}
