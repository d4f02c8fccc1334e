/**
 * Request-path normalisation, done once before matching, so that what a route matches is exactly
 * what the upstream receives: `/projects/../admin`, `/%2e%2e/admin` and `//admin` cannot reach a
 * path that no route exposes, and `/%61dmin` is matched (and sent) as `/admin`.
 */
export const MAX_PATH_LENGTH = 4096;

export type NormalizedPath = { ok: true; path: string } | { ok: false; status: 400 | 414; reason: string };

/** Characters whose encoded form would change how an upstream splits the path. */
const FORBIDDEN_ENCODED = /%(2f|5c|00)/i;

export function normalizePath(raw: string): NormalizedPath {
  if (raw.length > MAX_PATH_LENGTH)
    return { ok: false, status: 414, reason: `path longer than ${MAX_PATH_LENGTH} bytes` };
  if (raw.charCodeAt(0) !== 47 /* / */) return { ok: false, status: 400, reason: "path must start with /" };
  // Fast path: nothing to normalise in the common case.
  if (!raw.includes("%") && !raw.includes("//") && !raw.includes("/.") && !raw.includes("\\") && !raw.includes("#"))
    return { ok: true, path: raw };
  if (raw.includes("\\")) return { ok: false, status: 400, reason: "backslash in path" };
  // Bun passes a fragment in the request target through; fetch would drop it upstream, so the
  // path matched and the path sent would differ.
  if (raw.includes("#")) return { ok: false, status: 400, reason: "fragment (#) in request target" };
  if (FORBIDDEN_ENCODED.test(raw)) return { ok: false, status: 400, reason: "encoded slash, backslash or NUL in path" };
  const out: string[] = [];
  const segments = raw.split("/");
  for (let i = 1; i < segments.length; i++) {
    const segment = segments[i]!;
    let decoded: string;
    try {
      decoded = decodeURIComponent(segment);
    } catch {
      return { ok: false, status: 400, reason: "malformed percent-encoding in path" };
    }
    const isLast = i === segments.length - 1;
    if (decoded === "." || (decoded === "" && !isLast)) continue;
    if (decoded === "..") {
      if (out.length === 0) return { ok: false, status: 400, reason: "path climbs above the root" };
      out.pop();
      continue;
    }
    out.push(segment.includes("%") ? canonicalEscapes(segment) : segment);
  }
  return { ok: true, path: `/${out.join("/")}` };
}

const ESCAPE = /%([0-9A-Fa-f]{2})/g;
const UNRESERVED = /[A-Za-z0-9\-._~]/;

/**
 * RFC 3986 §6.2.2: `%61` and `a` are the same path, and an upstream decodes one to the other, so
 * unreserved characters are decoded (else `/%61dmin` would miss the `/admin` route and its
 * guards, and match a broader one); every other escape stays, with upper-case hex digits.
 */
function canonicalEscapes(segment: string): string {
  return segment.replace(ESCAPE, (encoded, hex: string) => {
    const char = String.fromCharCode(Number.parseInt(hex, 16));
    return UNRESERVED.test(char) ? char : encoded.toUpperCase();
  });
}
