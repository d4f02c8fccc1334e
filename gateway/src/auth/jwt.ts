/**
 * JWT verification with `jose`: signature (only the configured algorithms — never `none`, never
 * an HMAC with a public key), exp/nbf with a clock skew, issuer, audience, required claims.
 *
 * Verifying costs 50–170 µs per token here (HS256 … ES256), several times a whole proxied
 * request, so a verified token is remembered until it expires (at most a minute, so a key removed
 * from a JWKS stops working soon): a bounded map keyed by the token, checked before jose.
 * So a token must be spelled one way only: jose decodes base64url loosely, and would take `=`
 * padding or spare bits set in a segment's last character as the same token under another string.
 */
import type { KeyObject } from "node:crypto";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  type ExportedJWKSCache,
  type FlattenedJWSInput,
  type JSONWebKeySet,
  type JWKSCacheInput,
  type JWSHeaderParameters,
  type JWTPayload,
  jwksCache,
  jwtVerify,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
} from "jose";
import type { JwtAlgorithm } from "./schema.ts";

export type JwtKeySource =
  | { kind: "secret"; secret: Uint8Array }
  | { kind: "key"; key: KeyObject }
  | { kind: "jwks"; jwks: JSONWebKeySet }
  | { kind: "remote"; url: string; cacheMaxAgeMs: number; cooldownMs: number; timeoutMs: number };

export interface JwtRules {
  algorithms: JwtAlgorithm[];
  issuer?: string | string[];
  audience?: string | string[];
  clockSkewSec: number;
  requiredClaims: string[];
}

export type JwtResult =
  | { ok: true; payload: JWTPayload }
  /** The token is not acceptable: 401. `description` is safe to show (never the token). */
  | { ok: false; reason: "invalid"; description: string }
  /** The keys could not be fetched: not the client's fault (503). */
  | { ok: false; reason: "unavailable"; description: string; retryAfterSec: number };

const CACHE_ENTRIES = 1024;
const CACHE_MAX_MS = 60_000;
/** Longer tokens are verified every time rather than held in memory. */
const CACHE_MAX_TOKEN_CHARS = 8192;

const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64URL_CHARS = /^[A-Za-z0-9_-]*$/;

/**
 * Three segments in canonical base64url (RFC 7515 §2): its alphabet only, no padding, and the
 * unused low bits of the last character zero. Checked a segment at a time with a plain character
 * class: one regex for the whole rule backtracks (0.7 s on a megabyte).
 */
function isCanonicalJws(token: string): boolean {
  const segments = token.split(".", 4);
  return segments.length === 3 && segments.every(isCanonicalSegment);
}

function isCanonicalSegment(segment: string): boolean {
  if (!B64URL_CHARS.test(segment)) return false;
  // Characters past the last whole group of 4 (3 bytes): 2 carry one byte and 4 spare bits,
  // 3 carry two bytes and 2 spare bits; 1 carries no whole byte.
  const tail = segment.length % 4;
  if (tail === 0) return true;
  if (tail === 1) return false;
  return (B64URL.indexOf(segment.at(-1)!) & (tail === 2 ? 0b1111 : 0b11)) === 0;
}

export class JwtVerifier {
  readonly #key: KeyObject | Uint8Array | JWTVerifyGetKey;
  readonly #options: JWTVerifyOptions;
  readonly #skewMs: number;
  readonly #verified = new Map<string, { payload: JWTPayload; until: number }>();

  constructor(source: JwtKeySource, rules: JwtRules) {
    this.#key = keyOf(source);
    this.#skewMs = rules.clockSkewSec * 1000;
    this.#options = {
      algorithms: rules.algorithms,
      clockTolerance: rules.clockSkewSec,
      requiredClaims: rules.requiredClaims,
      ...(rules.issuer !== undefined ? { issuer: rules.issuer } : {}),
      ...(rules.audience !== undefined ? { audience: rules.audience } : {}),
    };
  }

  async verify(token: string): Promise<JwtResult> {
    const now = Date.now();
    const known = this.#verified.get(token);
    if (known) {
      if (now < known.until) return { ok: true, payload: known.payload };
      this.#verified.delete(token);
    }
    // After the cache: a token there passed this check when it was verified.
    if (!isCanonicalJws(token)) return { ok: false, reason: "invalid", description: "the token is malformed" };
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.#key as KeyObject, this.#options));
    } catch (err) {
      return describeFailure(err);
    }
    if (token.length <= CACHE_MAX_TOKEN_CHARS) {
      const expires = typeof payload.exp === "number" ? payload.exp * 1000 + this.#skewMs : Infinity;
      if (this.#verified.size >= CACHE_ENTRIES) this.#verified.delete(this.#verified.keys().next().value!);
      this.#verified.set(token, { payload, until: Math.min(expires, now + CACHE_MAX_MS) });
    }
    return { ok: true, payload };
  }
}

/** Thrown by the remote key lookup when the JWKS cannot be had: the gateway's problem, not the token's. */
class KeysUnavailable extends Error {
  override name = "KeysUnavailable";
  constructor(
    message: string,
    /** Seconds until the keys are fetched again: the client's Retry-After. */
    readonly retryAfterSec: number,
  ) {
    super(message);
  }
}

/** Fetched key sets by URL and settings, shared by every route (and kept across config reloads). */
const remoteSets = new Map<string, JWTVerifyGetKey>();

function keyOf(source: JwtKeySource): KeyObject | Uint8Array | JWTVerifyGetKey {
  switch (source.kind) {
    case "secret":
      return source.secret;
    case "key":
      return source.key;
    case "jwks":
      return createLocalJWKSet(source.jwks);
    case "remote": {
      const id = `${source.url} ${source.cacheMaxAgeMs} ${source.cooldownMs} ${source.timeoutMs}`;
      let getKey = remoteSets.get(id);
      if (!getKey) remoteSets.set(id, (getKey = remoteKeys(source)));
      return getKey;
    }
  }
}

/** After a failed JWKS fetch the next waits this long, doubling with each failure in a row. */
const JWKS_RETRY_FIRST_MS = 1000;

/** jose's lookup errors that are about the token, not about fetching the keys. */
const TOKEN_ERRORS = new Set([
  "ERR_JWKS_NO_MATCHING_KEY",
  "ERR_JWKS_MULTIPLE_MATCHING_KEYS",
  "ERR_JOSE_NOT_SUPPORTED",
  "ERR_JOSE_ALG_NOT_ALLOWED",
]);

/**
 * A JWKS URL as a key lookup. jose fetches when the keys are older than the cache age or a `kid`
 * is unknown (past the cooldown), one fetch shared by the lookups waiting for it. When a fetch
 * fails (the issuer is down or answers garbage) the last keys fetched keep verifying tokens: an
 * outage of the issuer should not log every user out. And nothing is fetched again for a while
 * (1 s, 2 s, 4 s … up to the cooldown, at least 1 s): jose's cache age and cooldown count from the
 * last good fetch, so without this every request of an outage would ask the issuer again.
 */
function remoteKeys(source: Extract<JwtKeySource, { kind: "remote" }>): JWTVerifyGetKey {
  // jose records each good fetch here: when (`uat`) and the key set.
  const fetched: Partial<ExportedJWKSCache> = {};
  const remote = createRemoteJWKSet(new URL(source.url), {
    cacheMaxAge: source.cacheMaxAgeMs,
    cooldownDuration: source.cooldownMs,
    timeoutDuration: source.timeoutMs,
    [jwksCache]: fetched as JWKSCacheInput,
  });
  const retryMaxMs = Math.max(source.cooldownMs, JWKS_RETRY_FIRST_MS);
  let retryAt = 0; // no fetch before this (Date.now())
  let failures = 0; // failed fetches with no good one between them
  let failedSince: number | undefined; // `fetched.uat` when they began
  let last: { uat: number; keys: ReturnType<typeof createLocalJWKSet> } | undefined;

  /** The keys of the last good fetch, fetching nothing. */
  const lastKeys = (header: JWSHeaderParameters, token: FlattenedJWSInput, why: string) => {
    if (fetched.uat === undefined || fetched.jwks === undefined)
      throw new KeysUnavailable(
        `the signing keys could not be fetched (${why})`,
        // When the next fetch may be made: the back-off's end, at least a second from now.
        Math.max(1, Math.ceil((retryAt - Date.now()) / 1000)),
      );
    if (last?.uat !== fetched.uat) last = { uat: fetched.uat, keys: createLocalJWKSet(fetched.jwks) };
    return last.keys(header, token);
  };

  return async (header: JWSHeaderParameters, token: FlattenedJWSInput) => {
    if (Date.now() < retryAt) return lastKeys(header, token, "waiting after a failed fetch");
    try {
      return await remote(header, token);
    } catch (err) {
      if (TOKEN_ERRORS.has((err as { code?: string }).code ?? "")) throw err;
      // Counted once by the lookups that shared the fetch: the first sets retryAt.
      if (Date.now() >= retryAt) {
        failures = fetched.uat === failedSince ? failures + 1 : 1;
        failedSince = fetched.uat;
        retryAt = Date.now() + Math.min(JWKS_RETRY_FIRST_MS * 2 ** (failures - 1), retryMaxMs);
      }
      return lastKeys(header, token, (err as Error).message);
    }
  };
}

/** jose's error → what the client is told (RFC 6750 error_description: no quotes, no token). */
function describeFailure(err: unknown): Extract<JwtResult, { ok: false }> {
  if (err instanceof KeysUnavailable)
    return {
      ok: false,
      reason: "unavailable",
      description: "the signing keys are unavailable; retry later",
      retryAfterSec: err.retryAfterSec,
    };
  const e = err as { code?: string; claim?: string; reason?: string };
  const invalid = (description: string) => ({ ok: false as const, reason: "invalid" as const, description });
  switch (e.code) {
    case "ERR_JWT_EXPIRED":
      return invalid("the token has expired");
    case "ERR_JWT_CLAIM_VALIDATION_FAILED":
      if (e.reason === "missing") return invalid(`the token has no ${e.claim} claim`);
      if (e.claim === "nbf") return invalid("the token is not valid yet");
      if (e.claim === "iss") return invalid("the token issuer is not accepted");
      if (e.claim === "aud") return invalid("the token audience is not accepted");
      return invalid(`the token ${e.claim ?? "claims"} claim is invalid`);
    case "ERR_JOSE_ALG_NOT_ALLOWED":
      return invalid("the token signing algorithm is not accepted");
    case "ERR_JWS_SIGNATURE_VERIFICATION_FAILED":
      return invalid("the token signature is invalid");
    case "ERR_JWKS_NO_MATCHING_KEY":
    case "ERR_JWKS_MULTIPLE_MATCHING_KEYS":
      return invalid("no known key matches the token");
    case "ERR_JWS_INVALID":
    case "ERR_JWT_INVALID":
      return invalid("the token is malformed");
    default:
      // e.g. a `crit` header jose does not support, or a key the token's header cannot use.
      return invalid("the token cannot be verified");
  }
}
