/**
 * JWT verification with `jose`: signature (only the configured algorithms — never `none`, never
 * an HMAC with a public key), exp/nbf with a clock skew, issuer, audience, required claims.
 *
 * Verifying costs 50–170 µs per token here (HS256 … ES256), several times a whole proxied
 * request, so a verified token is remembered until it expires (at most a minute, so a key removed
 * from a JWKS stops working soon): a bounded map keyed by the token, checked before jose.
 */
import type { KeyObject } from "node:crypto";
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  type JSONWebKeySet,
  type JWSHeaderParameters,
  type FlattenedJWSInput,
  type JWTPayload,
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
  | { ok: false; reason: "unavailable"; description: string };

const CACHE_ENTRIES = 1024;
const CACHE_MAX_MS = 60_000;
/** Longer tokens are verified every time rather than held in memory. */
const CACHE_MAX_TOKEN_CHARS = 8192;

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

/**
 * A JWKS URL as a key lookup. When a refetch fails (the issuer is down) the last keys fetched keep
 * verifying tokens: an outage of the issuer should not log every user out.
 */
function remoteKeys(source: Extract<JwtKeySource, { kind: "remote" }>): JWTVerifyGetKey {
  const remote = createRemoteJWKSet(new URL(source.url), {
    cacheMaxAge: source.cacheMaxAgeMs,
    cooldownDuration: source.cooldownMs,
    timeoutDuration: source.timeoutMs,
  });
  let stale: ReturnType<typeof createLocalJWKSet> | undefined;
  return async (header: JWSHeaderParameters, token: FlattenedJWSInput) => {
    try {
      const key = await remote(header, token);
      stale = undefined;
      return key;
    } catch (err) {
      const code = (err as { code?: string }).code;
      if (
        code === "ERR_JWKS_NO_MATCHING_KEY" ||
        code === "ERR_JWKS_MULTIPLE_MATCHING_KEYS" ||
        code === "ERR_JOSE_NOT_SUPPORTED" ||
        code === "ERR_JOSE_ALG_NOT_ALLOWED"
      )
        throw err;
      const last = remote.jwks();
      if (last) {
        stale ??= createLocalJWKSet(last);
        return stale(header, token);
      }
      throw new KeysUnavailable(`the signing keys could not be fetched (${(err as Error).message})`);
    }
  };
}

/** jose's error → what the client is told (RFC 6750 error_description: no quotes, no token). */
function describeFailure(err: unknown): Extract<JwtResult, { ok: false }> {
  if (err instanceof KeysUnavailable)
    return { ok: false, reason: "unavailable", description: "the signing keys are unavailable; retry later" };
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
