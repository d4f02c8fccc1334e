/**
 * A route's authentication guard, run right after the route matched and before its rate limit
 * (so a limit can key on the identity, e.g. a forwarded `x-auth-subject` header).
 *
 *   - no credential, or one that does not verify       → 401 + WWW-Authenticate (RFC 6750 §3)
 *   - a verified identity without access (scopes,
 *     required claims, API key not allowed here)       → 403 (Bearer: error="insufficient_scope")
 *   - the JWKS cannot be fetched and no keys are known  → 503 + Retry-After: when the gateway will
 *                                                         fetch again (not the client's fault)
 *
 * The credential is never logged, traced or echoed; by default it is not forwarded either (the
 * gateway terminated it; an upstream that wants the caller reads the forwarded claims instead).
 * Claim headers arriving from the client are always removed (by the gateway, from every request,
 * and here again), so an upstream can trust them.
 */
import type { JWTPayload } from "jose";
import { gatewayProblem } from "../errors.ts";
import type { ApiKeyVerifier } from "./api-key.ts";
import type { JwtVerifier } from "./jwt.ts";

export interface Identity {
  kind: "jwt" | "api-key";
  /** `sub` of the token, or the API key's name. */
  subject: string | undefined;
  /** The header the verified credential came in (lower case): `authorization`, or the API key's. */
  header: string;
  /**
   * The credential as the guard read and verified it: the Bearer token (whatever the scheme's
   * spelling), or the API key. What a rate limit keyed on `header` keys by; never logged.
   */
  credential: string;
}

export type AuthDecision =
  | { ok: true; identity: Identity }
  | { ok: false; status: 401 | 403 | 503; response: (requestId: string) => Response };

export interface JwtGuard {
  verifier: JwtVerifier;
  scopes: readonly string[];
  /** claim → accepted values */
  claims: readonly (readonly [string, readonly string[]])[];
  /** What /config shows: where keys come from, never a secret. */
  summary: Record<string, unknown>;
}

export interface ApiKeyGuard {
  verifier: ApiKeyVerifier;
  /** Key names allowed on the route; undefined: every key. */
  allow: ReadonlySet<string> | undefined;
  summary: Record<string, unknown>;
}

export interface RouteAuthSettings {
  realm: string;
  jwt?: JwtGuard;
  apiKey?: ApiKeyGuard;
  /** [claim, header] pairs. */
  forwardClaims: readonly (readonly [string, string])[];
  forwardCredential: boolean;
}

/** RFC 6750 b64token after "Bearer ". */
const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i;
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

export class RouteAuth {
  readonly #s: RouteAuthSettings;
  readonly #challenge: string;
  /** The headers the route takes a credential in (lower case). */
  readonly credentialHeaders: readonly string[];

  constructor(settings: RouteAuthSettings) {
    this.#s = settings;
    this.credentialHeaders = [
      ...(settings.jwt ? ["authorization"] : []),
      ...(settings.apiKey ? [settings.apiKey.verifier.header] : []),
    ];
    const challenges: string[] = [];
    if (settings.jwt) challenges.push(bearerChallenge(settings.realm));
    if (settings.apiKey) challenges.push(apiKeyChallenge(settings.realm, settings.apiKey.verifier.header));
    this.#challenge = challenges.join(", ");
  }

  /** Decides the request; on success the claim headers are set on `headers` for the upstream. */
  async check(headers: Headers): Promise<AuthDecision> {
    const { jwt, apiKey, forwardClaims } = this.#s;
    // The gateway removes them (and their `_` spellings) from every request first (ForgedHeaders);
    // this keeps the guard sound on its own.
    for (const [, header] of forwardClaims) headers.delete(header);
    const authorization = jwt ? headers.get("authorization") : null;
    if (jwt && authorization !== null && /^bearer(\s|$)/i.test(authorization)) {
      const token = BEARER.exec(authorization)?.[1];
      if (token === undefined)
        return this.#unauthorized(
          "the Authorization header does not hold a Bearer token",
          bearerChallenge(this.#s.realm, "invalid_token", "the Authorization header does not hold a Bearer token"),
        );
      return this.#checkJwt(jwt, token, headers);
    }
    const key = apiKey ? headers.get(apiKey.verifier.header) : null;
    if (apiKey && key !== null) return this.#checkApiKey(apiKey, key, headers);
    return this.#unauthorized(
      `this route needs ${[jwt && "a Bearer token", apiKey && `an API key in ${apiKey.verifier.header}`].filter(Boolean).join(" or ")}`,
      this.#challenge,
    );
  }

  /** The route's challenges (`WWW-Authenticate`), for a 401 that its upstream answered. */
  get challenge(): string {
    return this.#challenge;
  }

  /** The headers the verified claims travel in (lower case). */
  get claimHeaders(): readonly string[] {
    return this.#s.forwardClaims.map(([, header]) => header);
  }

  /** Removes the credential the gateway consumed, unless the route forwards it (call before forwarding). */
  stripCredentials(headers: Headers): void {
    if (this.#s.forwardCredential) return;
    if (this.#s.jwt) headers.delete("authorization");
    if (this.#s.apiKey) headers.delete(this.#s.apiKey.verifier.header);
  }

  /** gRPC routes: the claim headers `check` set travel as request metadata. */
  copyClaimHeaders(from: Headers, to: { set(key: string, value: string): void }): void {
    for (const [, header] of this.#s.forwardClaims) {
      const value = from.get(header);
      if (value !== null) to.set(header.toLowerCase(), value);
    }
  }

  /** What GET /config shows: the rules, never a secret or a key digest. */
  toJSON(): Record<string, unknown> {
    const { realm, jwt, apiKey, forwardClaims, forwardCredential } = this.#s;
    return {
      realm,
      ...(jwt ? { jwt: jwt.summary } : {}),
      ...(apiKey ? { apiKey: apiKey.summary } : {}),
      forwardClaims: Object.fromEntries(forwardClaims),
      forwardCredential,
    };
  }

  async #checkJwt(jwt: JwtGuard, token: string, headers: Headers): Promise<AuthDecision> {
    const result = await jwt.verifier.verify(token);
    if (!result.ok) {
      if (result.reason === "unavailable") {
        const { description: detail, retryAfterSec } = result;
        return {
          ok: false,
          status: 503,
          response: (requestId) =>
            gatewayProblem({
              status: 503,
              title: "Authentication unavailable",
              requestId,
              detail,
              headers: { "retry-after": String(retryAfterSec) },
            }),
        };
      }
      return this.#unauthorized(
        result.description,
        bearerChallenge(this.#s.realm, "invalid_token", result.description),
      );
    }
    const payload = result.payload;
    if (jwt.scopes.length > 0) {
      const granted = scopesOf(payload);
      const missing = jwt.scopes.filter((s) => !granted.has(s));
      if (missing.length > 0) {
        const description = `the token lacks the scope ${missing.join(" ")}`;
        return this.#forbidden(
          description,
          bearerChallenge(this.#s.realm, "insufficient_scope", description, jwt.scopes.join(" ")),
        );
      }
    }
    for (const [claim, accepted] of jwt.claims) {
      if (!claimMatches(claimOf(payload, claim), accepted)) {
        const description = `the token ${claim} claim does not grant access to this route`;
        return this.#forbidden(description, bearerChallenge(this.#s.realm, "insufficient_scope", description));
      }
    }
    this.#forward(payload, headers);
    const subject = typeof payload.sub === "string" ? payload.sub : undefined;
    return { ok: true, identity: { kind: "jwt", subject, header: "authorization", credential: token } };
  }

  #checkApiKey(apiKey: ApiKeyGuard, presented: string, headers: Headers): AuthDecision {
    const name = apiKey.verifier.identify(presented);
    if (name === undefined)
      return this.#unauthorized("the API key is not valid", apiKeyChallenge(this.#s.realm, apiKey.verifier.header));
    if (apiKey.allow && !apiKey.allow.has(name))
      return this.#forbidden(`the API key ${name} is not allowed on this route`);
    this.#forward({ sub: name }, headers);
    return {
      ok: true,
      identity: { kind: "api-key", subject: name, header: apiKey.verifier.header, credential: presented },
    };
  }

  #forward(claims: JWTPayload, headers: Headers): void {
    for (const [claim, header] of this.#s.forwardClaims) {
      const value = claimOf(claims, claim);
      if (value !== undefined && value !== null) headers.set(header, headerValue(value));
    }
  }

  #unauthorized(detail: string, challenge: string): AuthDecision {
    return {
      ok: false,
      status: 401,
      response: (requestId) =>
        gatewayProblem({
          status: 401,
          title: "Unauthorized",
          requestId,
          detail,
          headers: { "www-authenticate": challenge },
        }),
    };
  }

  #forbidden(detail: string, challenge?: string): AuthDecision {
    return {
      ok: false,
      status: 403,
      response: (requestId) =>
        gatewayProblem({
          status: 403,
          title: "Forbidden",
          requestId,
          detail,
          ...(challenge ? { headers: { "www-authenticate": challenge } } : {}),
        }),
    };
  }
}

/** RFC 6750 §3: without credentials, no error code; descriptions are fixed texts without quotes. */
function bearerChallenge(realm: string, error?: string, description?: string, scope?: string): string {
  let challenge = `Bearer realm="${realm}"`;
  if (error) challenge += `, error="${error}"`;
  if (description) challenge += `, error_description="${description.replace(/["\\]/g, "")}"`;
  if (scope) challenge += `, scope="${scope}"`;
  return challenge;
}

/** Not a registered scheme; it tells a client which header to send. */
function apiKeyChallenge(realm: string, header: string): string {
  return `ApiKey realm="${realm}", header="${header}"`;
}

/** `scope` (RFC 8693: space-separated) or `scp` (a list, or a string). */
function scopesOf(payload: JWTPayload): Set<string> {
  const granted = new Set<string>();
  for (const value of [payload.scope, payload.scp]) {
    if (typeof value === "string") for (const s of value.split(" ")) if (s) granted.add(s);
    if (Array.isArray(value)) for (const s of value) if (typeof s === "string") granted.add(s);
  }
  return granted;
}

/** A claim by name; a dotted name not present as such is a path (`realm_access.roles`). */
function claimOf(payload: JWTPayload, name: string): unknown {
  if (Object.hasOwn(payload, name)) return payload[name];
  if (!name.includes(".")) return undefined;
  let value: unknown = payload;
  for (const part of name.split(".")) {
    if (typeof value !== "object" || value === null || !Object.hasOwn(value, part)) return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

function claimMatches(value: unknown, accepted: readonly string[]): boolean {
  const scalar = (v: unknown) =>
    (typeof v === "string" || typeof v === "number" || typeof v === "boolean") && accepted.includes(String(v));
  return Array.isArray(value) ? value.some(scalar) : scalar(value);
}

/**
 * Scalars as text, lists and objects as JSON. Anything outside printable ASCII is
 * percent-encoded (UTF-8): a header value cannot carry it, and a claim never injects a header.
 */
function headerValue(value: unknown): string {
  const text =
    typeof value === "string"
      ? value
      : typeof value === "number" || typeof value === "boolean"
        ? String(value)
        : JSON.stringify(value);
  return PRINTABLE_ASCII.test(text) ? text : encodeURIComponent(text);
}
