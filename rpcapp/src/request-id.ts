/**
 * The request id a response echoes: the caller's, when it looks like an id (it ends up in logs
 * and headers, so arbitrary text is not trusted), else a fresh UUID.
 * (Webapp and gateway need the same rule; it belongs in lib/ once they do.)
 */
const REQUEST_ID = /^[\w.:\-]{1,128}$/;

export function requestIdOrNew(incoming: unknown): string {
  return typeof incoming === "string" && REQUEST_ID.test(incoming) ? incoming : crypto.randomUUID();
}
