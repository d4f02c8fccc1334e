/**
 * Reads a request body, bounded. Request bodies are buffered (they are size-limited per route):
 * forwarding a buffered ArrayBuffer cost 8–14 µs less per request than a stream here
 * (docs/design.md, "Hot-path costs"). A body without Content-Length (chunked) is counted as it arrives and refused the
 * moment it passes the limit, so a client cannot make the gateway buffer more than the limit.
 */
export type BodyRead = { ok: true; bytes: Uint8Array | null } | { ok: false; reason: "too-large" | "aborted" };

export async function readBody(req: Request, limit: number): Promise<BodyRead> {
  const declared = req.headers.get("content-length");
  if (declared !== null) {
    // Bun admits repeated identical Content-Length headers joined as "5, 5" (RFC 9112 §6.3
    // allows it; differing values it refuses itself); fetch recomputes the length upstream.
    const comma = declared.indexOf(",");
    const length = Number(comma < 0 ? declared : declared.slice(0, comma));
    if (!Number.isFinite(length) || length > limit) return { ok: false, reason: "too-large" };
    if (length === 0) return { ok: true, bytes: null };
    try {
      // bytes(), not a Uint8Array over arrayBuffer(): a view made over a fresh ArrayBuffer costs
      // ~0.2 µs more, and lengthened every young-generation pause (bench/README.md, 2026-12-08
      // second stop).
      return { ok: true, bytes: await req.bytes() };
    } catch {
      return { ok: false, reason: "aborted" };
    }
  }
  if (!req.body) return { ok: true, bytes: null };
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = req.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > limit) {
        void reader.cancel().catch(() => {});
        return { ok: false, reason: "too-large" };
      }
      chunks.push(value);
    }
  } catch {
    return { ok: false, reason: "aborted" };
  }
  if (size === 0) return { ok: true, bytes: null };
  if (chunks.length === 1) return { ok: true, bytes: chunks[0]! };
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return { ok: true, bytes };
}
