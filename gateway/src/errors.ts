/**
 * The gateway's own error responses: RFC 9457 problem+json, each with the request id, so a
 * client can quote it and an operator can find the log line.
 */
import { problemResponse } from "../../lib/problem.ts";

export interface GatewayProblem {
  status: number;
  title: string;
  requestId: string;
  detail?: string;
  /** Extra members of the body (RFC 9457 §3.2), e.g. `upstream`, `errors`. */
  extensions?: Record<string, unknown>;
  headers?: Record<string, string>;
}

export function gatewayProblem({ status, title, requestId, detail, extensions, headers }: GatewayProblem): Response {
  return problemResponse(
    { title, status, ...(detail ? { detail } : {}), request_id: requestId, ...extensions },
    { "x-request-id": requestId, ...headers },
  );
}
