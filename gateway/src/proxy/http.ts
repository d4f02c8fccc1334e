/**
 * What one HTTP try to one endpoint comes back as, and the limits it is checked against. The
 * client is proxy/h1-client.ts (HTTP/1.1 on Bun.connect, answers parsed by llhttp), one pool per
 * endpoint (Endpoint.httpPool). Gzip and other content codings pass through untouched.
 *
 * What the try covers, so that a failure becomes a 502/504 of the gateway's own rather than an
 * empty reply (Bun.serve drops a response's head when its body stream fails before the first
 * byte is out):
 *   - a small body with a Content-Length (≤ SMALL_BODY_BYTES, the common API answer) is read
 *     whole inside the try and answered from memory;
 *   - any other body streams through, but only once its first chunk has arrived;
 *   - a head llhttp refuses (ambiguous framing — Content-Length and Transfer-Encoding both,
 *     RFC 9112 §6.3 —, obs-fold, bare CR/LF…) or whose headers exceed limits.maxHeaderBytes is an
 *     `error` outcome, and the connection it came on is closed.
 *
 * A pure send: no retries, spans or metrics here. upstream/dispatch.ts decides where each try
 * goes and reports it; proxy/route.ts builds what is sent.
 */
export type HttpOutcome =
  | { kind: "response"; response: Response }
  /** Nothing reached the upstream (refused, reset before sending): safe to retry anywhere. */
  | { kind: "connect-error"; error: Error }
  | { kind: "timeout" }
  /** The client went away before the answer (its request's signal aborted): the try was abandoned. */
  | { kind: "cancelled" }
  /** The connection failed after the request may have been sent, or the answer was not acceptable HTTP. */
  | { kind: "error"; error: Error };

/** An upstream answer the gateway refuses to pass on; `title` is the 502's. */
export class InvalidUpstreamResponse extends Error {
  constructor(
    readonly title: string,
    message: string,
  ) {
    super(message);
    this.name = "InvalidUpstreamResponse";
  }
}

export interface ResponseLimits {
  /** Sum of the response's header name and value bytes. */
  maxHeaderBytes: number;
  /** A larger declared body is left for proxy/response-limit.ts to refuse, unread. */
  maxResponseBytes: number;
}

/** Header lines as [name, value] pairs, names in lower case. */
export type HeaderPairs = readonly (readonly [name: string, value: string])[];

/** Bodies up to this size with a Content-Length are read inside the try (one allocation, no stream). */
export const SMALL_BODY_BYTES = 64 * 1024;
