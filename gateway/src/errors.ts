/**
 * The gateway's own error responses: RFC 9457 problem+json, each with the request id, so a
 * client can quote it and an operator can find the log line.
 */
import { problemResponse } from "../../lib/problem.ts";

export function gatewayProblem(
  status: number,
  title: string,
  requestId: string,
  detail?: string,
  extra?: Record<string, unknown>,
  headers?: Record<string, string>,
): Response {
  return problemResponse(
    { title, status, ...(detail ? { detail } : {}), request_id: requestId, ...extra },
    { "x-request-id": requestId, ...headers },
  );
}
