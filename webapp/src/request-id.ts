/**
 * The request id every response echoes and every log line carries. A caller's id is kept only if
 * it is short printable ASCII: it is written back into headers and logs verbatim.
 */
const ACCEPTABLE_REQUEST_ID = /^[\x21-\x7e]{1,128}$/;

export function requestIdOf(headers: Headers): string {
  const incoming = headers.get("x-request-id");
  return incoming !== null && ACCEPTABLE_REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
}
