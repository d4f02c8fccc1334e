/**
 * The HTTP transport: sends one try to one endpoint's origin with Bun's fetch (keep-alive pooled
 * per origin) and returns the upstream's answer, checked. Its headers are edited in place rather
 * than re-wrapped, which measured 3–6 µs per request cheaper (docs/design.md, "Hot-path costs").
 * Gzip is passed through untouched (`decompress: false`).
 *
 * What the try covers, so that a failure becomes a 502/504 of the gateway's own rather than an
 * empty reply (Bun.serve drops a response's head when its body stream fails before the first
 * byte is out):
 *   - a small body with a Content-Length (≤ SMALL_BODY_BYTES, the common API answer) is read
 *     whole inside the try and answered from memory;
 *   - any other body streams through, but only once its first chunk has arrived;
 *   - a head whose framing is ambiguous (Content-Length and Transfer-Encoding both, RFC 9112 §6.3)
 *     or whose headers exceed limits.maxHeaderBytes is refused (an `invalid` error).
 *
 * A pure send: no retries, spans or metrics here. upstream/dispatch.ts decides where each try
 * goes and reports it; proxy/route.ts builds what is sent.
 */
import { isHopByHop, stripHopByHop } from "./headers.ts";

/** What Bun's fetch takes as `tls` for an https origin (upstream/tls.ts builds it). */
export interface FetchTls {
  ca: string;
  cert?: string;
  key?: string;
  /** The name the origin's certificate must carry (the origin is dialled by address). */
  serverName: string;
}

export type HttpOutcome =
  | { kind: "response"; response: Response }
  /** Nothing reached the upstream (refused, reset before sending): safe to retry anywhere. */
  | { kind: "connect-error"; error: Error }
  | { kind: "timeout" }
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

/** Bodies up to this size with a Content-Length are read inside the try (one allocation, no stream). */
export const SMALL_BODY_BYTES = 64 * 1024;

const CONNECT_ERRORS = new Set([
  "ECONNREFUSED",
  "ConnectionRefused",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTFOUND",
  "FailedToOpenSocket",
  "ConnectionClosed",
]);

/**
 * Origins whose connections must not be reused, until the time given (performance.now() ms).
 * Bun's fetch has returned a connection to its keep-alive pool by the time its answer reaches
 * JavaScript, and has no way to close one pooled connection; after an answer with ambiguous
 * framing, the origin's tries go without keep-alive (a connection each, never pooled) until
 * every connection pooled before has been closed by the pool's idle timeout (5 minutes in Bun
 * 1.4.5, src/http/HTTPContext.zig; a margin is added).
 */
const noKeepAliveUntil = new Map<string, number>();
const POOL_IDLE_CLOSE_MS = 5 * 60_000 + 10_000;

/** Whether a request to `origin` may use a pooled connection (health checks ask too). */
export function keepAliveAllowed(origin: string): boolean {
  if (noKeepAliveUntil.size === 0) return true;
  const until = noKeepAliveUntil.get(origin);
  if (until === undefined) return true;
  // Each request to a quarantined origin uses a fresh connection, so none of the pool's is used
  // again; once they have timed out the origin is trusted again.
  if (performance.now() < until) return false;
  noKeepAliveUntil.delete(origin);
  return true;
}

/** Sends one try to `origin` (`http://host:port`); never rejects (failures are outcomes). */
export async function forwardHttp(
  origin: string,
  method: string,
  pathAndQuery: string,
  headers: Headers,
  body: Uint8Array | null,
  timeoutMs: number,
  limits: ResponseLimits,
  /** TLS to the origin (https); undefined for http. */
  tls?: FetchTls,
): Promise<HttpOutcome> {
  try {
    const keepalive = keepAliveAllowed(origin);
    const upstream = await fetch(origin + pathAndQuery, {
      method,
      headers,
      body,
      redirect: "manual",
      decompress: false,
      signal: AbortSignal.timeout(timeoutMs),
      ...(keepalive ? {} : { keepalive: false }),
      ...(tls ? { tls } : {}),
    } as RequestInit);
    const head = checkHead(upstream.headers, limits.maxHeaderBytes);
    if (head !== HEAD_CLEAN) {
      if (head !== HEAD_HOP_BY_HOP) {
        if (head.framing) noKeepAliveUntil.set(origin, performance.now() + POOL_IDLE_CLOSE_MS);
        void upstream.body?.cancel().catch(() => {});
        return { kind: "error", error: head.error };
      }
      stripHopByHop(upstream.headers);
    }
    const stream = upstream.body;
    if (!stream) return { kind: "response", response: upstream };
    const declared = upstream.headers.get("content-length");
    if (declared !== null) {
      const length = Number(declared);
      if (length > limits.maxResponseBytes) return { kind: "response", response: upstream };
      if (length <= SMALL_BODY_BYTES) {
        const bytes = await upstream.arrayBuffer();
        return {
          kind: "response",
          response: new Response(bytes, {
            status: upstream.status,
            statusText: upstream.statusText,
            headers: upstream.headers,
          }),
        };
      }
    }
    return { kind: "response", response: await afterFirstChunk(upstream, stream) };
  } catch (err) {
    const error = err as Error & { code?: string };
    if (error.name === "TimeoutError" || error.name === "AbortError") return { kind: "timeout" };
    if (error.code && CONNECT_ERRORS.has(error.code)) return { kind: "connect-error", error };
    return { kind: "error", error };
  }
}

const HEAD_CLEAN = 0;
const HEAD_HOP_BY_HOP = 1;
type HeadCheck = typeof HEAD_CLEAN | typeof HEAD_HOP_BY_HOP | { error: Error; framing: boolean };

/**
 * Whether a response head is refused, and why; else whether it has hop-by-hop headers to strip.
 * One pass over the headers (no allocation per header): their size, both framing headers at once,
 * and hop-by-hop names. Bun's fetch reads Transfer-Encoding over Content-Length as RFC 9112 asks,
 * but a message with both is a smuggling or splitting attempt, or a broken server (RFC 9112
 * §6.3), and the connection it came on cannot be trusted.
 */
function checkHead(headers: Headers, maxHeaderBytes: number): HeadCheck {
  let bytes = 0;
  let framing = 0;
  let hopByHop = false;
  headers.forEach((value, name) => {
    bytes += name.length + value.length;
    if (name === "content-length") framing |= 1;
    else if (name === "transfer-encoding") framing |= 2;
    if (!hopByHop && isHopByHop(name)) hopByHop = true;
  });
  if (framing === 3)
    return {
      framing: true,
      error: new InvalidUpstreamResponse(
        "Upstream response framing is ambiguous",
        "the response has both Content-Length and Transfer-Encoding",
      ),
    };
  if (bytes > maxHeaderBytes)
    return {
      framing: false,
      error: new InvalidUpstreamResponse(
        "Upstream response headers too large",
        `the response headers are ${bytes} bytes; the limit is ${maxHeaderBytes}`,
      ),
    };
  return hopByHop ? HEAD_HOP_BY_HOP : HEAD_CLEAN;
}

/**
 * The response, once the first chunk of its body has arrived (a failure before it rejects, inside
 * the try); the rest streams through as the client reads it, with back-pressure.
 */
async function afterFirstChunk(upstream: Response, stream: ReadableStream<Uint8Array>): Promise<Response> {
  const reader = stream.getReader();
  const first = await reader.read();
  let pending: Uint8Array | undefined = first.done ? undefined : first.value;
  const body = first.done
    ? null
    : new ReadableStream<Uint8Array>({
        async pull(controller) {
          if (pending) {
            controller.enqueue(pending);
            pending = undefined;
            return;
          }
          const { done, value } = await reader.read();
          if (done) controller.close();
          else controller.enqueue(value);
        },
        cancel(reason) {
          return reader.cancel(reason);
        },
      });
  return new Response(body, { status: upstream.status, statusText: upstream.statusText, headers: upstream.headers });
}
