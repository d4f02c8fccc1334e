/**
 * RFC 9457 problem details: every error a Portico service returns over HTTP has this shape.
 * https://www.rfc-editor.org/rfc/rfc9457
 */
export interface Problem {
  /** A URI reference naming the problem type; "about:blank" when the status says it all. */
  type?: string;
  title: string;
  status: number;
  detail?: string;
  instance?: string;
  /** Extension members, e.g. `errors: [{ field, message }]` for validation failures. */
  [extension: string]: unknown;
}

export const PROBLEM_CONTENT_TYPE = "application/problem+json";

export function problemResponse(problem: Problem, headers?: HeadersInit): Response {
  const h = new Headers(headers);
  h.set("content-type", PROBLEM_CONTENT_TYPE);
  return new Response(JSON.stringify({ type: "about:blank", ...problem }), { status: problem.status, headers: h });
}
