/**
 * Nesting depth of a JSON body (limits.maxJsonDepth), measured on its bytes before anything parses
 * them. JSON.parse itself copes with any depth, but slowly: 1 MiB of `[` took 145 ms here — seven
 * such requests a second would keep a core busy. Scanning stops at the first bracket past the
 * limit, so a hostile body costs a few dozen bytes of work; a well-formed one costs one pass
 * (~0.1 µs for a small body, ~3 ms per MiB: half of JSON.parse's time).
 * String lengths are checked after parsing (grpc/transcode.ts), where the field can be named.
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

/** `application/json` or any `application/<x>+json` (RFC 6839), parameters ignored. */
const JSON_MEDIA_TYPE = /^\s*application\/(?:[\w.-]+\+)?json\s*(?:;|$)/i;

/**
 * HTTP routes: a JSON body nested past the limit is refused at the edge too. Upstreams parse and
 * validate it themselves, but deep nesting is where parsers and validators break (webapp's
 * validation error mapper overflowed its stack on a 5000-deep `title`); a few dozen levels are
 * all any API here needs. Other media types pass untouched.
 */
export function isTooDeepJson(contentType: string | null, body: Uint8Array, maxDepth: number): boolean {
  return contentType !== null && JSON_MEDIA_TYPE.test(contentType) && exceedsJsonDepth(body, maxDepth);
}
