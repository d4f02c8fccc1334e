/**
 * The request id every response echoes and every log line carries: the caller's when it looks
 * like an id (it is written back into headers, logs and gRPC metadata verbatim, so arbitrary text
 * is not trusted), else a fresh UUID. One rule for all three services.
 */
const ACCEPTABLE_REQUEST_ID = /^[A-Za-z0-9._:/+=-]{1,128}$/;

export function requestIdOrNew(incoming: unknown): string {
  return typeof incoming === "string" && ACCEPTABLE_REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
}

/** The request id for an HTTP request, from its X-Request-ID header. */
export function requestIdOf(headers: Headers): string {
  return requestIdOrNew(headers.get("x-request-id"));
}
