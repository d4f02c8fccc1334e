/**
 * A cap on what one upstream response may send back (limits.maxResponseBytes). A declared
 * Content-Length over the cap is refused before anything reaches the client (502). A body
 * without one (chunked) is counted as it streams: the status line is already out by then, so
 * past the cap the stream is aborted and the client sees a truncated response, never more
 * than the cap. Responses with a Content-Length are returned untouched (no re-wrapping cost:
 * HTTP framing already ends them at their length).
 */
export type LimitedResponse = { ok: true; response: Response } | { ok: false; declared: number };

export function limitResponseSize(response: Response, maxBytes: number): LimitedResponse {
  // The declared length first: reading `response.body` of a Response made from bytes (the h1
  // client's answers with a Content-Length) makes it a ReadableStream, which Bun.serve then
  // writes out through JavaScript instead of in one native write (bench/README.md, 2026-12-06).
  const declared = response.headers.get("content-length");
  const length = declared === null ? undefined : Number(declared);
  // `!(n > max)`: a length that is no number (which llhttp refuses before this) passes, as before.
  if (length !== undefined && !(length > maxBytes)) return { ok: true, response };
  // HEAD answers and 204/304 declare a length but carry no body.
  const body = response.body;
  if (!body) return { ok: true, response };
  if (length !== undefined) {
    void body.cancel().catch(() => {});
    return { ok: false, declared: length };
  }
  let seen = 0;
  const counted = body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        seen += chunk.byteLength;
        if (seen > maxBytes) controller.error(new Error(`upstream response exceeds ${maxBytes} bytes`));
        else controller.enqueue(chunk);
      },
    }),
  );
  return {
    ok: true,
    response: new Response(counted, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    }),
  };
}
