/**
 * A route's `auth` section → its guard, checked when routes.yaml loads: a key file that is not a
 * public key, a secret that is missing or short, an algorithm the key cannot make, a header the
 * gateway owns — each is a config error at its line, never a 500 at the first request.
 */
import { configFilePath } from "../config/paths.ts";
import { createPublicKey, type KeyObject, type webcrypto } from "node:crypto";
import { readFileSync } from "node:fs";
import type { JSONWebKeySet, JWK } from "jose";
import { Value } from "@sinclair/typebox/value";
import { ApiKeyVerifier, type StoredApiKey } from "./api-key.ts";
import { RouteAuth, type ApiKeyGuard, type JwtGuard } from "./guard.ts";
import { type JwtKeySource, JwtVerifier } from "./jwt.ts";
import {
  type JwtAlgorithm,
  ApiKeyAuthSchema,
  JwtAuthSchema,
  type RawApiKeyAuth,
  type RawJwtAuth,
  type RawRouteAuth,
  RouteAuthSchema,
} from "./schema.ts";

export interface AuthContext {
  env: Readonly<Record<string, string | undefined>>;
  /** Relative key files are read from here (the routes file's folder). */
  baseDir: string;
}

/** `path` is relative to the route's `auth` key. */
export type AuthReport = (path: (string | number)[], message: string) => void;

/** RFC 7518 §3.2: an HMAC key at least as long as the hash. */
const MIN_SECRET_BYTES: Record<string, number> = { HS256: 32, HS384: 48, HS512: 64 };
/** Headers the gateway itself sets or that frame the request: a claim must not overwrite them. */
const RESERVED_HEADERS = new Set([
  "authorization",
  "host",
  "content-length",
  "content-type",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "te",
  "trailer",
  "upgrade",
  "proxy-authorization",
  "x-forwarded-for",
  "x-forwarded-host",
  "x-forwarded-proto",
  "x-request-id",
  "via",
  "traceparent",
  "tracestate",
  "cookie",
]);

export function compileRouteAuth(raw: RawRouteAuth, ctx: AuthContext, report: AuthReport): RouteAuth | undefined {
  const settings = Value.Default(RouteAuthSchema, structuredClone(raw)) as Required<
    Pick<RawRouteAuth, "realm" | "forwardCredential">
  > &
    RawRouteAuth;
  if (!raw.jwt && !raw.apiKey) report([], "auth needs jwt, apiKey or both");
  let problems = 0;
  const counted: AuthReport = (path, message) => {
    problems++;
    report(path, message);
  };
  const jwt = raw.jwt ? compileJwt(raw.jwt, ctx, (path, message) => counted(["jwt", ...path], message)) : undefined;
  const apiKey = raw.apiKey
    ? compileApiKey(raw.apiKey, (path, message) => counted(["apiKey", ...path], message))
    : undefined;
  const forwardClaims = Object.entries(raw.forwardClaims ?? {}).map(
    ([claim, header]) => [claim, header.toLowerCase()] as const,
  );
  const seen = new Set<string>();
  for (const [claim, header] of forwardClaims) {
    if (RESERVED_HEADERS.has(header) || header === apiKey?.verifier.header)
      counted(
        ["forwardClaims", claim],
        `${header} is a header the gateway or the client's credential uses; pick another name (e.g. x-auth-${claim.replace(/[^A-Za-z0-9-]/g, "-")})`,
      );
    if (header.endsWith("-bin"))
      counted(["forwardClaims", claim], `${header}: names ending in -bin are binary gRPC metadata; pick another name`);
    if (seen.has(header)) counted(["forwardClaims", claim], `${header} is already the header of another claim`);
    seen.add(header);
  }
  if (problems > 0 || (!jwt && !apiKey)) return undefined;
  return new RouteAuth({
    realm: settings.realm,
    jwt,
    apiKey,
    forwardClaims,
    forwardCredential: settings.forwardCredential,
  });
}

function compileJwt(raw: RawJwtAuth, ctx: AuthContext, report: AuthReport): JwtGuard | undefined {
  const s = Value.Default(JwtAuthSchema, structuredClone(raw)) as RawJwtAuth &
    Required<
      Pick<RawJwtAuth, "jwksCacheMaxAgeMs" | "jwksCooldownMs" | "jwksTimeoutMs" | "clockSkewSec" | "requiredClaims">
    >;
  const sources = (["secretEnv", "keyFile", "jwksUrl"] as const).filter((k) => s[k] !== undefined);
  if (sources.length !== 1) {
    report(
      [],
      sources.length === 0
        ? "jwt needs one key source: secretEnv (HS*), keyFile or jwksUrl"
        : `jwt takes one key source; got ${sources.join(" and ")}`,
    );
    return undefined;
  }
  let source: JwtKeySource | undefined;
  let algorithms: JwtAlgorithm[] | undefined = s.algorithms;
  let keys: string;
  if (s.secretEnv !== undefined) {
    keys = `secretEnv ${s.secretEnv}`;
    algorithms ??= ["HS256"];
    const asymmetric = algorithms.filter((a) => !a.startsWith("HS"));
    if (asymmetric.length > 0)
      report(
        ["algorithms"],
        `${asymmetric.join(", ")} need a public key (keyFile or jwksUrl); a shared secret only verifies HS256/HS384/HS512`,
      );
    const secret = ctx.env[s.secretEnv];
    const needed = Math.max(...algorithms.map((a) => MIN_SECRET_BYTES[a] ?? 0));
    if (secret === undefined || secret === "")
      report(["secretEnv"], `environment variable ${s.secretEnv} is not set: it must hold the HMAC secret`);
    else if (Buffer.byteLength(secret) < needed)
      report(
        ["secretEnv"],
        `${s.secretEnv} holds ${Buffer.byteLength(secret)} bytes; ${algorithms.join("/")} need at least ${needed} (e.g. openssl rand -hex 32)`,
      );
    else source = { kind: "secret", secret: new TextEncoder().encode(secret) };
  } else {
    const symmetric = (algorithms ?? []).filter((a) => a.startsWith("HS"));
    if (symmetric.length > 0)
      report(
        ["algorithms"],
        `${symmetric.join(", ")} would verify with the public key as an HMAC secret (algorithm confusion): use secretEnv for HS*`,
      );
    if (s.keyFile !== undefined) {
      keys = `keyFile ${s.keyFile}`;
      const loaded = loadKeyFile(s.keyFile, ctx.baseDir, (message) => report(["keyFile"], message));
      if (loaded?.kind === "key") {
        const own = algorithmsFor(loaded.key);
        if (algorithms === undefined) algorithms = own;
        else {
          const unusable = algorithms.filter((a) => !own.includes(a));
          if (unusable.length > 0)
            report(
              ["algorithms"],
              `the ${loaded.key.asymmetricKeyType} key in ${s.keyFile} cannot verify ${unusable.join(", ")} (it can: ${own.join(", ")})`,
            );
        }
      }
      algorithms ??= ["RS256", "ES256"];
      source = loaded;
    } else {
      keys = `jwksUrl ${s.jwksUrl}`;
      algorithms ??= ["RS256", "ES256"];
      try {
        new URL(s.jwksUrl!);
        source = {
          kind: "remote",
          url: s.jwksUrl!,
          cacheMaxAgeMs: s.jwksCacheMaxAgeMs,
          cooldownMs: s.jwksCooldownMs,
          timeoutMs: s.jwksTimeoutMs,
        };
      } catch {
        report(["jwksUrl"], `${s.jwksUrl} is not a URL`);
      }
    }
  }
  if (!source) return undefined;
  const verifier = new JwtVerifier(source, {
    algorithms,
    issuer: s.issuer,
    audience: s.audience,
    clockSkewSec: s.clockSkewSec,
    requiredClaims: s.requiredClaims,
  });
  const claims = Object.entries(s.claims ?? {}).map(
    ([claim, values]) => [claim, typeof values === "string" ? [values] : values] as const,
  );
  return {
    verifier,
    scopes: s.scopes ?? [],
    claims,
    summary: {
      keys,
      algorithms,
      issuer: s.issuer ?? null,
      audience: s.audience ?? null,
      clockSkewSec: s.clockSkewSec,
      requiredClaims: s.requiredClaims,
      scopes: s.scopes ?? [],
      claims: s.claims ?? {},
    },
  };
}

function compileApiKey(raw: RawApiKeyAuth, report: AuthReport): ApiKeyGuard | undefined {
  const s = Value.Default(ApiKeyAuthSchema, structuredClone(raw)) as RawApiKeyAuth & { header: string };
  const header = s.header.toLowerCase();
  if (RESERVED_HEADERS.has(header))
    report(
      ["header"],
      `${header} is not a header for API keys (the gateway uses or rewrites it); the usual one is x-api-key`,
    );
  const names = new Set<string>();
  const digests = new Set<string>();
  const keys: StoredApiKey[] = [];
  s.keys.forEach((key, i) => {
    const digest = key.sha256.toLowerCase();
    if (names.has(key.name)) report(["keys", i, "name"], `duplicate key name ${key.name}`);
    if (digests.has(digest))
      report(["keys", i, "sha256"], `the same digest as another key: each holder needs a key of its own`);
    names.add(key.name);
    digests.add(digest);
    keys.push({ name: key.name, digest: Buffer.from(digest, "hex") });
  });
  for (const [i, name] of (s.allow ?? []).entries())
    if (!names.has(name)) report(["allow", i], `no key named ${name} (known: ${[...names].join(", ")})`);
  return {
    verifier: new ApiKeyVerifier(header, keys),
    allow: s.allow ? new Set(s.allow) : undefined,
    summary: { header, keys: keys.map((k) => k.name), allow: s.allow ?? null },
  };
}

/** PEM (SPKI), one JWK, or a JWKS. Private keys are refused: the gateway only ever verifies. */
function loadKeyFile(file: string, baseDir: string, report: (message: string) => void): JwtKeySource | undefined {
  const path = configFilePath(baseDir, file);
  let text: string;
  try {
    text = readFileSync(path, "utf8").trim();
  } catch (err) {
    report(`cannot read ${path}: ${(err as Error).message}`);
    return undefined;
  }
  if (text.startsWith("-----BEGIN")) {
    if (/PRIVATE KEY-----/.test(text)) {
      report(`${file} holds a private key; give the gateway the public key only (openssl pkey -pubout)`);
      return undefined;
    }
    try {
      return { kind: "key", key: createPublicKey(text) };
    } catch (err) {
      report(`${file} is not a PEM public key: ${(err as Error).message}`);
      return undefined;
    }
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    report(`${file} is neither a PEM public key nor JSON (a JWK or a JWKS)`);
    return undefined;
  }
  const isSet = typeof json === "object" && json !== null && Array.isArray((json as { keys?: unknown }).keys);
  const jwks = (isSet ? (json as { keys: unknown[] }).keys : [json]) as JWK[];
  if (jwks.length === 0) {
    report(`${file} holds no keys`);
    return undefined;
  }
  for (const [i, jwk] of jwks.entries()) {
    const where = isSet ? `${file} keys[${i}]` : file;
    if (typeof jwk !== "object" || jwk === null) {
      report(`${where} is not a JWK object`);
      return undefined;
    }
    if (jwk.d !== undefined || jwk.k !== undefined) {
      report(`${where} is a private or secret key; the file must hold public keys only`);
      return undefined;
    }
    try {
      createPublicKey({ key: jwk as webcrypto.JsonWebKey, format: "jwk" });
    } catch (err) {
      report(`${where} is not a usable public JWK: ${(err as Error).message}`);
      return undefined;
    }
  }
  // One key: used directly. Several: chosen per token by its `kid` and `alg`, as a JWKS URL would be.
  if (!isSet && jwks.length === 1)
    return { kind: "key", key: createPublicKey({ key: jwks[0] as webcrypto.JsonWebKey, format: "jwk" }) };
  return { kind: "jwks", jwks: { keys: jwks } as JSONWebKeySet };
}

/** The algorithms a public key can verify, by its type and curve. */
function algorithmsFor(key: KeyObject): JwtAlgorithm[] {
  switch (key.asymmetricKeyType) {
    case "rsa":
      return ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"];
    case "rsa-pss":
      return ["PS256", "PS384", "PS512"];
    case "ec": {
      const curve = key.asymmetricKeyDetails?.namedCurve;
      return curve === "secp384r1" || curve === "P-384" ? ["ES384"] : ["ES256"];
    }
    case "ed25519":
      return ["EdDSA"];
    default:
      return [];
  }
}
