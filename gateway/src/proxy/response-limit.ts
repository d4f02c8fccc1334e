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
  // HEAD answers and 204/304 declare a length but carry no body.
  if (!response.body) return { ok: true, response };
  const declared = response.headers.get("content-length");
  if (declared !== null) {
    const length = Number(declared);
    if (length > maxBytes) {
      void response.body.cancel().catch(() => {});
      return { ok: false, declared: length };
    }
    return { ok: true, response };
  }
  let seen = 0;
  const counted = response.body.pipeThrough(
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
