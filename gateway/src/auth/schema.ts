/**
 * The `auth` key of a route in routes.yaml (TypeBox, like config/schema.ts, which includes it):
 * who may call the route — a JWT, an API key, or either. Defaults are filled in by auth/config.ts.
 * Secrets never appear in the file: an HS* secret is named by its environment variable, API keys
 * are stored as SHA-256 digests.
 */
import { type Static, Type as T } from "@sinclair/typebox";
import { HTTP_TOKEN_PATTERN } from "../../../lib/http-token.ts";

/** Signature algorithms a route may accept; `none` is never one of them. */
export const JWT_ALGORITHMS = [
  "HS256",
  "HS384",
  "HS512",
  "RS256",
  "RS384",
  "RS512",
  "PS256",
  "PS384",
  "PS512",
  "ES256",
  "ES384",
  "EdDSA",
] as const;
export type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number];

/** RFC 9110 `token`: what a header name may be. */
const HEADER_NAME = HTTP_TOKEN_PATTERN;

/** The realm WWW-Authenticate names when a route's auth gives none. */
export const DEFAULT_REALM = "portico";
/** RFC 6750 scope-token: printable ASCII without space, `"` or `\`. */
const SCOPE_TOKEN = "^[\\x21\\x23-\\x5B\\x5D-\\x7E]+$";

const OneOrMore = (description: string) =>
  T.Union([T.String({ minLength: 1 }), T.Array(T.String({ minLength: 1 }), { minItems: 1 })], { description });

export const JwtAuthSchema = T.Object(
  {
    algorithms: T.Optional(
      T.Array(T.Union(JWT_ALGORITHMS.map((a) => T.Literal(a))), {
        minItems: 1,
        uniqueItems: true,
        description:
          "accepted `alg` values; default: HS256 with secretEnv, the key's own algorithm with keyFile, RS256 and ES256 with jwksUrl",
      }),
    ),
    secretEnv: T.Optional(
      T.String({
        pattern: "^[A-Za-z_][A-Za-z0-9_]*$",
        description: "HS*: the environment variable holding the shared secret (32 bytes or more)",
      }),
    ),
    keyFile: T.Optional(
      T.String({ minLength: 1, description: "a public key: PEM (SPKI), a JWK or a JWKS, as a file" }),
    ),
    jwksUrl: T.Optional(
      T.String({
        pattern: "^https?://",
        description: "a JWKS URL, fetched when a token needs a key not yet known, and cached",
      }),
    ),
    jwksCacheMaxAgeMs: T.Optional(
      T.Integer({
        minimum: 1000,
        maximum: 86_400_000,
        default: 600_000,
        description: "how long fetched keys are used before the JWKS is fetched again",
      }),
    ),
    jwksCooldownMs: T.Optional(
      T.Integer({
        minimum: 0,
        maximum: 3_600_000,
        default: 30_000,
        description:
          "an unknown `kid` refetches the JWKS at most this often; also the longest wait between fetches while the JWKS endpoint fails (from 1 s, doubling)",
      }),
    ),
    jwksTimeoutMs: T.Optional(
      T.Integer({ minimum: 100, maximum: 60_000, default: 5_000, description: "bound on one JWKS fetch" }),
    ),
    issuer: T.Optional(OneOrMore("accepted `iss` value(s); unset: any issuer")),
    audience: T.Optional(OneOrMore("accepted `aud` value(s); unset: any audience")),
    clockSkewSec: T.Optional(
      T.Integer({ minimum: 0, maximum: 600, default: 30, description: "tolerance applied to exp and nbf" }),
    ),
    requiredClaims: T.Optional(
      T.Array(T.String({ minLength: 1 }), {
        uniqueItems: true,
        default: ["exp"],
        description: "claims a token must carry; by default exp, so no token is valid forever",
      }),
    ),
    scopes: T.Optional(
      T.Array(T.String({ pattern: SCOPE_TOKEN }), {
        minItems: 1,
        uniqueItems: true,
        description: "every one must be granted (`scope` or `scp` claim), else 403",
      }),
    ),
    claims: T.Optional(
      T.Record(T.String({ minLength: 1 }), OneOrMore("accepted value(s)"), {
        description:
          "claim → accepted value(s): the claim (or one item of a list claim) must equal one of them, else 403",
      }),
    ),
  },
  {
    additionalProperties: false,
    description: "accept a JWT (Authorization: Bearer); exactly one key source: secretEnv, keyFile or jwksUrl",
  },
);

export const ApiKeySchema = T.Object(
  {
    name: T.String({
      minLength: 1,
      maxLength: 128,
      pattern: "^[A-Za-z0-9_.@:-]+$",
      description: "who holds the key: logged, forwarded as the `sub` claim",
    }),
    sha256: T.String({
      pattern: "^[0-9a-fA-F]{64}$",
      description: 'SHA-256 of the key, hex (printf %s "$KEY" | sha256sum)',
    }),
  },
  { additionalProperties: false },
);

export const ApiKeyAuthSchema = T.Object(
  {
    header: T.Optional(
      T.String({
        maxLength: 128,
        pattern: HEADER_NAME,
        default: "x-api-key",
        description: "the request header carrying the key",
      }),
    ),
    keys: T.Array(ApiKeySchema, {
      minItems: 1,
      description: "the accepted keys, by name and SHA-256 digest (never the key itself)",
    }),
    allow: T.Optional(
      T.Array(T.String({ minLength: 1 }), {
        minItems: 1,
        uniqueItems: true,
        description: "names of the keys allowed on this route (others get 403); default: every key",
      }),
    ),
  },
  { additionalProperties: false, description: "accept an API key sent in a request header" },
);

export const RouteAuthSchema = T.Object(
  {
    jwt: T.Optional(JwtAuthSchema),
    apiKey: T.Optional(ApiKeyAuthSchema),
    realm: T.Optional(
      T.String({
        maxLength: 128,
        pattern: "^[\\x20\\x21\\x23-\\x5B\\x5D-\\x7E]*$",
        default: DEFAULT_REALM,
        description: "the realm named in WWW-Authenticate",
      }),
    ),
    forwardClaims: T.Optional(
      T.Record(T.String({ minLength: 1 }), T.String({ maxLength: 128, pattern: HEADER_NAME }), {
        description:
          "verified claim → request header sent upstream; the same headers coming from a client are removed from every request, on every route",
      }),
    ),
    forwardCredential: T.Optional(
      T.Boolean({ default: false, description: "also send the Authorization / API-key header upstream" }),
    ),
  },
  {
    additionalProperties: false,
    description: "who may call the route: a JWT, an API key, or either; checked before the rate limit",
  },
);

export type RawRouteAuth = Static<typeof RouteAuthSchema>;
export type RawJwtAuth = Static<typeof JwtAuthSchema>;
export type RawApiKeyAuth = Static<typeof ApiKeyAuthSchema>;
