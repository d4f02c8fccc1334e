/**
 * Guards for untrusted JSON bodies, shared by the gateway and webapp: both run them on the raw
 * bytes, before anything parses them.
 */

/**
 * Whether a JSON body is nested deeper than `maxDepth`, measured on its bytes. JSON.parse copes
 * with any depth, but slowly (1 MiB of `[` took 145 ms here), and what runs after it often does
 * not: webapp's validation error mapper overflowed its stack on a 5000-deep `title`. Scanning
 * stops at the first bracket past the limit, so a hostile body costs a few dozen bytes of work; a
 * well-formed one costs one pass (~0.1 µs for a small body, ~3 ms per MiB: half of JSON.parse's).
 * Brackets inside strings (escaped quotes included) do not count.
 */
export function exceedsJsonDepth(bytes: Uint8Array, maxDepth: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i]!;
    if (inString) {
      if (b === 0x5c /* \ */) i++;
      else if (b === 0x22 /* " */) inString = false;
    } else if (b === 0x22) {
      inString = true;
    } else if (b === 0x7b /* { */ || b === 0x5b /* [ */) {
      if (++depth > maxDepth) return true;
    } else if (b === 0x7d /* } */ || b === 0x5d /* ] */) {
      depth--;
    }
  }
  return false;
}

/** `application/json`, or any `application/<x>+json` (RFC 6839), parameters ignored. */
export function isJsonMediaType(contentType: string | null): boolean {
  // The common case without the splitting and lower-casing below (four strings and an array).
  if (contentType === "application/json") return true;
  const type = mediaType(contentType);
  return type === "application/json" || /^application\/[\w.+-]+\+json$/.test(type);
}

/** A Content-Type's media type, lower case, without parameters (`; charset=utf-8`); "" for none. */
export function mediaType(contentType: string | null): string {
  return (contentType ?? "").split(";", 1)[0]!.trim().toLowerCase();
}
