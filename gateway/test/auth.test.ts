/**
 * Per-route authentication: JWTs (RS256 from a PEM file, ES256 from a JWKS URL, HS256 from an
 * environment variable) and API keys stored as SHA-256 digests. First the guard in-process (every
 * way a token can be wrong, config mistakes at their line, key-set outages), then through a real
 * gateway process — HTTP and gRPC routes — whose logs and exported spans must never contain a
 * credential.
 */
import { afterAll, afterEach, beforeAll, describe, expect, setSystemTime, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { decodeJwt, exportJWK, exportSPKI, generateKeyPair, SignJWT, UnsecuredJWT } from "jose";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { loadGrpcObject } from "../../lib/grpc-proto.ts";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import {
  REPO_ROOT,
  spawnService,
  type Spawned,
  stopAll,
  waitFor,
  testTempDir,
} from "../../scripts/stack/testing/processes.ts";
import { apiKeyDigest } from "../src/auth/api-key.ts";
import { parseResponse, rawExchange } from "./spy/raw-client.ts";
import type { RouteAuth } from "../src/auth/guard.ts";
import { ConfigError, type GatewayConfig, parseConfig } from "../src/config/load.ts";

const ISSUER = "https://issuer.test";
const AUDIENCE = "portico";
const HS_SECRET = "an-hs256-secret-of-more-than-32-bytes!";
const KEY_A = `key-a-${crypto.randomUUID()}`;
const KEY_B = `key-b-${crypto.randomUUID()}`;

type KeyPair = Awaited<ReturnType<typeof generateKeyPair>>;
let rs: KeyPair;
let otherRs: KeyPair;
let es: KeyPair;
let rsPem: string;
let dir: string;
let jwks: ReturnType<typeof Bun.serve>;
let jwksHits = 0;

interface TokenOptions {
  alg?: string;
  kid?: string;
  iss?: string;
  aud?: string;
  /** Seconds from now; null: no exp claim. */
  expIn?: number | null;
  nbfIn?: number;
  claims?: Record<string, unknown>;
}

async function token(key: KeyPair["privateKey"] | Uint8Array, opts: TokenOptions = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const jwt = new SignJWT({ sub: "user-1", scope: "projects:read", ...opts.claims })
    .setProtectedHeader({ alg: opts.alg ?? "RS256", ...(opts.kid ? { kid: opts.kid } : {}) })
    .setIssuedAt(now)
    .setIssuer(opts.iss ?? ISSUER)
    .setAudience(opts.aud ?? AUDIENCE);
  if (opts.expIn !== null) jwt.setExpirationTime(now + (opts.expIn ?? 600));
  if (opts.nbfIn !== undefined) jwt.setNotBefore(now + opts.nbfIn);
  return jwt.sign(key);
}

/** routes.yaml with one route per way of authenticating, all to `upstream`. */
function authConfig(opts: { echo: string; grpc: string; jwksUrl: string }): string {
  return `upstreams:
  echo: { protocol: http, endpoints: "${opts.echo}", healthCheck: { enabled: false } }
  verifier: { protocol: grpc, endpoints: "${opts.grpc}", proto: proto/userverify.proto, healthCheck: { enabled: false } }
routes:
  - name: rs
    path: /rs
    upstream: echo
    auth:
      jwt: { keyFile: rs256.pem, issuer: ${ISSUER}, audience: ${AUDIENCE} }
      forwardClaims: { sub: x-auth-subject, scope: x-auth-scope }
  - name: es
    path: /es
    upstream: echo
    auth:
      jwt: { jwksUrl: "${opts.jwksUrl}", issuer: ${ISSUER}, audience: ${AUDIENCE} }
      forwardClaims: { sub: x-auth-subject }
  - name: hs
    path: /hs
    upstream: echo
    auth:
      jwt: { secretEnv: TEST_JWT_SECRET, audience: ${AUDIENCE} }
  - name: scoped
    path: /scoped
    upstream: echo
    auth:
      jwt: { keyFile: rs256.pem, scopes: [projects:write], claims: { tenant: [acme, globex] } }
  - name: keys
    path: /keys
    upstream: echo
    auth:
      apiKey:
        keys:
          - { name: partner-a, sha256: ${apiKeyDigest(KEY_A)} }
          - { name: partner-b, sha256: ${apiKeyDigest(KEY_B)} }
        allow: [partner-a]
      forwardClaims: { sub: x-auth-subject }
  - name: either
    path: /either
    upstream: echo
    auth:
      jwt: { keyFile: rs256.pem }
      apiKey: { header: x-partner-key, keys: [{ name: partner-b, sha256: ${apiKeyDigest(KEY_B)} }] }
      forwardCredential: true
  - name: open
    path: /open
    upstream: echo
  - name: verify
    path: /verify
    match: exact
    upstream: verifier
    grpc: { method: userverify.UserVerify/VerifyUser }
    auth:
      jwt: { keyFile: rs256.pem }
      forwardClaims: { sub: x-auth-subject }
`;
}

beforeAll(async () => {
  [rs, otherRs, es] = await Promise.all([
    generateKeyPair("RS256", { extractable: true }),
    generateKeyPair("RS256"),
    generateKeyPair("ES256", { extractable: true }),
  ]);
  rsPem = await exportSPKI(rs.publicKey);
  dir = testTempDir("auth");
  writeFileSync(join(dir, "rs256.pem"), rsPem);
  const esJwk = { ...(await exportJWK(es.publicKey)), kid: "es-1", alg: "ES256", use: "sig" };
  jwks = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch() {
      jwksHits++;
      return Response.json({ keys: [esJwk] });
    },
  });
});

afterAll(async () => {
  jwks?.stop(true);
  await stopAll();
});

function config(overrides: { jwksUrl?: string } = {}): GatewayConfig {
  return parseConfig(
    authConfig({
      echo: "127.0.0.1:1",
      grpc: "127.0.0.1:2",
      jwksUrl: overrides.jwksUrl ?? `http://127.0.0.1:${jwks.port}/jwks.json`,
    }),
    "auth.yaml",
    { TEST_JWT_SECRET: HS_SECRET },
    dir,
  );
}

function guardOf(cfg: GatewayConfig, route: string): RouteAuth {
  return cfg.routes.find((r) => r.name === route)!.auth!;
}

function bearer(value: string, extra: Record<string, string> = {}): Headers {
  return new Headers({ authorization: `Bearer ${value}`, ...extra });
}

// Tests that set the wall clock (setSystemTime) get the real one back whatever happens.
afterEach(() => {
  setSystemTime();
});

describe("the guard, in-process", () => {
  let cfg: GatewayConfig;
  beforeAll(() => {
    cfg = config();
  });

  test("a valid RS256 token passes; the claims replace client-sent claim headers", async () => {
    const headers = bearer(await token(rs.privateKey), { "x-auth-subject": "admin-forged" });
    const decision = await guardOf(cfg, "rs").check(headers);
    expect(decision).toMatchObject({ ok: true, identity: { kind: "jwt", subject: "user-1" } });
    expect(headers.get("x-auth-subject")).toBe("user-1");
    expect(headers.get("x-auth-scope")).toBe("projects:read");
  });

  const refusals: [string, () => Promise<Headers>, string][] = [
    ["expired", async () => bearer(await token(rs.privateKey, { expIn: -120 })), "the token has expired"],
    ["not yet valid", async () => bearer(await token(rs.privateKey, { nbfIn: 300 })), "the token is not valid yet"],
    [
      "wrong issuer",
      async () => bearer(await token(rs.privateKey, { iss: "https://evil.test" })),
      "the token issuer is not accepted",
    ],
    [
      "wrong audience",
      async () => bearer(await token(rs.privateKey, { aud: "someone-else" })),
      "the token audience is not accepted",
    ],
    ["signed by another key", async () => bearer(await token(otherRs.privateKey)), "the token signature is invalid"],
    [
      "alg none",
      async () =>
        bearer(
          new UnsecuredJWT({ sub: "user-1" }).setIssuer(ISSUER).setAudience(AUDIENCE).setExpirationTime("10m").encode(),
        ),
      "the token signing algorithm is not accepted",
    ],
    [
      "HS256 keyed with the public key (algorithm confusion)",
      async () => bearer(await token(new TextEncoder().encode(rsPem), { alg: "HS256" })),
      "the token signing algorithm is not accepted",
    ],
    ["without exp", async () => bearer(await token(rs.privateKey, { expIn: null })), "the token has no exp claim"],
    ["not a JWT", async () => bearer("not.a.jwt"), "the token is malformed"],
    [
      "an empty Bearer",
      async () => new Headers({ authorization: "Bearer " }),
      "the Authorization header does not hold a Bearer token",
    ],
  ];
  for (const [name, headers, description] of refusals) {
    test(`401 invalid_token: ${name}`, async () => {
      const decision = await guardOf(cfg, "rs").check(await headers());
      expect(decision.ok).toBe(false);
      if (decision.ok) return;
      const res = decision.response("req-1");
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toBe(
        `Bearer realm="portico", error="invalid_token", error_description="${description}"`,
      );
      expect(((await res.json()) as { detail: string }).detail).toBe(description);
    });
  }

  test("401 without an error code when no credential is sent (RFC 6750 §3.1), also for another scheme", async () => {
    for (const headers of [new Headers(), new Headers({ authorization: "Basic dXNlcjpwYXNz" })]) {
      const decision = await guardOf(cfg, "rs").check(headers);
      expect(decision.ok).toBe(false);
      if (!decision.ok) expect(decision.response("r").headers.get("www-authenticate")).toBe('Bearer realm="portico"');
    }
    const either = await guardOf(cfg, "either").check(new Headers());
    if (!either.ok)
      expect(either.response("r").headers.get("www-authenticate")).toBe(
        'Bearer realm="portico", ApiKey realm="portico", header="x-partner-key"',
      );
  });

  test("a token inside the clock skew (30 s by default) is accepted", async () => {
    expect((await guardOf(cfg, "rs").check(bearer(await token(rs.privateKey, { expIn: -10 })))).ok).toBe(true);
    expect((await guardOf(cfg, "rs").check(bearer(await token(rs.privateKey, { nbfIn: 10 })))).ok).toBe(true);
  });

  test("403 insufficient_scope for a valid token without the scope or the claim value", async () => {
    const scoped = guardOf(cfg, "scoped");
    const noScope = await scoped.check(bearer(await token(rs.privateKey, { claims: { tenant: "acme" } })));
    expect(noScope.ok).toBe(false);
    if (!noScope.ok) {
      expect(noScope.status).toBe(403);
      expect(noScope.response("r").headers.get("www-authenticate")).toBe(
        'Bearer realm="portico", error="insufficient_scope", error_description="the token lacks the scope projects:write", scope="projects:write"',
      );
    }
    const wrongTenant = await scoped.check(
      bearer(await token(rs.privateKey, { claims: { scope: "projects:read projects:write", tenant: "initech" } })),
    );
    expect(wrongTenant).toMatchObject({ ok: false, status: 403 });
    const listed = await scoped.check(
      bearer(await token(rs.privateKey, { claims: { scp: ["projects:write"], tenant: ["initech", "globex"] } })),
    );
    expect(listed.ok).toBe(true);
  });

  test("ES256 keys come from the JWKS URL, fetched once and cached; an unknown kid is 401", async () => {
    const es256 = guardOf(cfg, "es");
    const before = jwksHits;
    expect((await es256.check(bearer(await token(es.privateKey, { alg: "ES256", kid: "es-1" })))).ok).toBe(true);
    expect(
      (await es256.check(bearer(await token(es.privateKey, { alg: "ES256", kid: "es-1", claims: { n: 2 } })))).ok,
    ).toBe(true);
    expect(jwksHits - before).toBe(1);
    const unknown = await es256.check(bearer(await token(es.privateKey, { alg: "ES256", kid: "rotated-away" })));
    expect(unknown.ok).toBe(false);
    if (!unknown.ok)
      expect(unknown.response("r").headers.get("www-authenticate")).toContain(
        'error_description="no known key matches the token"',
      );
  });

  test("HS256 verifies with the secret from the environment; another secret is 401", async () => {
    const hs = guardOf(cfg, "hs");
    expect((await hs.check(bearer(await token(new TextEncoder().encode(HS_SECRET), { alg: "HS256" })))).ok).toBe(true);
    expect(
      (await hs.check(bearer(await token(new TextEncoder().encode(`${HS_SECRET}-other`), { alg: "HS256" })))).ok,
    ).toBe(false);
  });

  test("API keys: the right key passes as its name, a wrong or missing one is 401, a key not allowed here is 403", async () => {
    const keys = guardOf(cfg, "keys");
    const ok = new Headers({ "x-api-key": KEY_A, "x-auth-subject": "forged" });
    expect(await keys.check(ok)).toMatchObject({ ok: true, identity: { kind: "api-key", subject: "partner-a" } });
    expect(ok.get("x-auth-subject")).toBe("partner-a");
    const wrong = await keys.check(new Headers({ "x-api-key": `${KEY_A}x` }));
    expect(wrong).toMatchObject({ ok: false, status: 401 });
    if (!wrong.ok)
      expect(wrong.response("r").headers.get("www-authenticate")).toBe('ApiKey realm="portico", header="x-api-key"');
    expect(await keys.check(new Headers())).toMatchObject({ ok: false, status: 401 });
    expect(await keys.check(new Headers({ "x-api-key": KEY_B }))).toMatchObject({ ok: false, status: 403 });
  });

  test("the credential is removed before forwarding unless the route forwards it", async () => {
    const rsHeaders = bearer("t", { "x-api-key": "k" });
    guardOf(cfg, "rs").stripCredentials(rsHeaders);
    expect([rsHeaders.get("authorization"), rsHeaders.get("x-api-key")]).toEqual([null, "k"]);
    const either = bearer("t", { "x-partner-key": "k" });
    guardOf(cfg, "either").stripCredentials(either);
    expect(either.get("authorization")).toBe("Bearer t");
  });

  test("/config shows the rules, never the secret or a key digest", () => {
    const shown = JSON.stringify(cfg.routes.map(({ grpcMethod: _g, ...r }) => r));
    expect(shown).toContain('"keys":"secretEnv TEST_JWT_SECRET"');
    expect(shown).toContain('"keys":["partner-a","partner-b"]');
    expect(shown).not.toContain(HS_SECRET);
    expect(shown).not.toContain(apiKeyDigest(KEY_A));
  });

  test("a verified token is remembered only until it expires", async () => {
    const short = parseConfig(
      `upstreams: { up: { protocol: http, endpoints: "127.0.0.1:1" } }
routes: [{ name: r, path: /r, upstream: up, auth: { jwt: { keyFile: rs256.pem, clockSkewSec: 0 } } }]`,
      "short.yaml",
      {},
      dir,
    );
    const t = await token(rs.privateKey, { expIn: 2 });
    expect((await guardOf(short, "r").check(bearer(t))).ok).toBe(true);
    expect((await guardOf(short, "r").check(bearer(t))).ok).toBe(true);
    // The wall clock set, not waited for (the cache and jose both read Date): the last
    // millisecond before `exp`, then `exp` itself.
    const expiresAt = decodeJwt(t).exp! * 1000;
    setSystemTime(new Date(expiresAt - 1));
    expect((await guardOf(short, "r").check(bearer(t))).ok).toBe(true);
    setSystemTime(new Date(expiresAt));
    expect(await guardOf(short, "r").check(bearer(t))).toMatchObject({ ok: false, status: 401 });
  });

  test("JWKS unreachable before any key is known → 503; after, the last keys fetched keep working", async () => {
    const closed = await freePort();
    const down = guardOf(config({ jwksUrl: `http://127.0.0.1:${closed}/jwks.json` }), "es");
    const refused = await down.check(bearer(await token(es.privateKey, { alg: "ES256", kid: "es-1" })));
    expect(refused).toMatchObject({ ok: false, status: 503 });
    // Nothing is fetched again for a second (jwt-hardening.test.ts: the back-off).
    if (!refused.ok) expect(refused.response("r").headers.get("retry-after")).toBe("1");

    const esJwk = { ...(await exportJWK(es.publicKey)), kid: "es-1", alg: "ES256" };
    let issuerUp = true;
    let jwksFetches = 0;
    const flaky = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: () => {
        jwksFetches++;
        return issuerUp ? Response.json({ keys: [esJwk] }) : new Response("down", { status: 503 });
      },
    });
    const guard = guardOf(
      parseConfig(
        `upstreams: { up: { protocol: http, endpoints: "127.0.0.1:1" } }
routes: [{ name: r, path: /r, upstream: up, auth: { jwt: { jwksUrl: "http://127.0.0.1:${flaky.port}/k", jwksCacheMaxAgeMs: 1000 } } }]`,
        "flaky.yaml",
      ),
      "r",
    );
    expect((await guard.check(bearer(await token(es.privateKey, { alg: "ES256", kid: "es-1" })))).ok).toBe(true);
    expect(jwksFetches).toBe(1);
    issuerUp = false;
    setSystemTime(new Date(Date.now() + 1_100)); // past jwksCacheMaxAgeMs (jose reads Date.now)
    // A new token (not remembered), and the cached key set is stale: the refetch fails.
    expect(
      (await guard.check(bearer(await token(es.privateKey, { alg: "ES256", kid: "es-1", claims: { n: 3 } })))).ok,
    ).toBe(true);
    expect(jwksFetches).toBe(2);
    flaky.stop(true);
  });
});

describe("auth config mistakes stop the gateway at their line", () => {
  const problems = (auth: string, env: Record<string, string> = {}) => {
    const text = `upstreams: { up: { protocol: http, endpoints: "127.0.0.1:1" } }
routes:
  - name: r
    path: /r
    upstream: up
    auth:
${auth.replace(/^/gm, "      ")}
`;
    try {
      parseConfig(text, "auth.yaml", env, dir);
    } catch (err) {
      if (err instanceof ConfigError) return err.problems.map((p) => `${p.line} ${p.field}: ${p.message}`);
      throw err;
    }
    throw new Error("expected the config to be rejected");
  };

  test("each mistake names the field and what to do", () => {
    writeFileSync(join(dir, "private.pem"), "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n");
    expect(problems("jwt: { issuer: x }")).toEqual([
      expect.stringContaining("7 routes[0].auth.jwt: jwt needs one key source"),
    ]);
    expect(problems("jwt: { keyFile: rs256.pem, jwksUrl: 'https://x/k' }")[0]).toContain(
      "jwt takes one key source; got keyFile and jwksUrl",
    );
    expect(problems("jwt: { keyFile: rs256.pem, algorithms: [HS256] }")[0]).toContain(
      "routes[0].auth.jwt.algorithms: HS256 would verify with the public key as an HMAC secret",
    );
    expect(problems("jwt: { keyFile: rs256.pem, algorithms: [ES256] }")[0]).toContain(
      "the rsa key in rs256.pem cannot verify ES256",
    );
    expect(problems("jwt: { secretEnv: MISSING_SECRET }")[0]).toContain(
      "routes[0].auth.jwt.secretEnv: environment variable MISSING_SECRET is not set",
    );
    expect(problems("jwt: { secretEnv: S }", { S: "short" })[0]).toContain("S holds 5 bytes; HS256 need at least 32");
    expect(problems("jwt: { keyFile: private.pem }")[0]).toContain(
      "holds a private key; give the gateway the public key only",
    );
    expect(problems("jwt: { keyFile: nowhere.pem }")[0]).toContain("cannot read");
    expect(problems("apiKey: { keys: [{ name: a, sha256: abc }] }")[0]).toContain(
      "routes[0].auth.apiKey.keys[0].sha256",
    );
    expect(problems(`apiKey: { keys: [{ name: a, sha256: ${apiKeyDigest("k")} }], allow: [b] }`)[0]).toContain(
      "routes[0].auth.apiKey.allow[0]: no key named b",
    );
    expect(problems("jwt: { keyFile: rs256.pem }\nforwardClaims: { sub: x-forwarded-for }")[0]).toContain(
      "routes[0].auth.forwardClaims.sub: x-forwarded-for is a header the gateway",
    );
    expect(problems("{}")[0]).toContain("auth needs jwt, apiKey or both");
  });
});

describe("through a gateway process", () => {
  let gateway: Spawned;
  let gw: string;
  const upstreamSaw: Record<string, string>[] = [];
  const grpcSaw: Record<string, unknown>[] = [];
  const otlpBodies: string[] = [];
  let echo: ReturnType<typeof Bun.serve>;
  let otlp: ReturnType<typeof Bun.serve>;
  let grpcServer: grpc.Server;
  const sentCredentials: string[] = [KEY_A, KEY_B];

  beforeAll(async () => {
    echo = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch(req) {
        const headers = Object.fromEntries(req.headers);
        upstreamSaw.push(headers);
        return Response.json({ path: new URL(req.url).pathname, headers }, { headers: { "x-served-by": "echo" } });
      },
    });
    otlp = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(req) {
        otlpBodies.push(await req.text());
        return Response.json({});
      },
    });
    const pkg = loadGrpcObject(["proto/userverify.proto"], REPO_ROOT) as unknown as {
      userverify: { UserVerify: grpc.ServiceClientConstructor };
    };
    grpcServer = new grpc.Server();
    grpcServer.addService(pkg.userverify.UserVerify.service, {
      VerifyUser(call: grpc.ServerUnaryCall<{ id: number }, unknown>, done: grpc.sendUnaryData<{ message: string }>) {
        grpcSaw.push(call.metadata.getMap());
        done(null, {
          message: `Verified: ${call.request.id} as ${call.metadata.get("x-auth-subject")[0] ?? "nobody"}`,
        });
      },
    });
    const grpcPort = await freePort();
    await new Promise<void>((resolve, reject) =>
      grpcServer.bindAsync(`127.0.0.1:${grpcPort}`, grpc.ServerCredentials.createInsecure(), (err) =>
        err ? reject(err) : resolve(),
      ),
    );
    const routes = join(dir, "routes.yaml");
    writeFileSync(
      routes,
      authConfig({
        echo: `127.0.0.1:${echo.port}`,
        grpc: `127.0.0.1:${grpcPort}`,
        jwksUrl: `http://127.0.0.1:${jwks.port}/jwks.json`,
      }),
    );
    const [port, adminPort] = [await freePort(), await freePort()];
    gateway = spawnService(
      "gateway",
      {
        PORT: String(port),
        ADMIN_PORT: String(adminPort),
        HOST: "127.0.0.1",
        ROUTES_FILE: routes,
        TEST_JWT_SECRET: HS_SECRET,
        LOG_LEVEL: "debug",
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${otlp.port}`,
        OTEL_BSP_SCHEDULE_DELAY: "100",
      },
      "gateway-auth",
    );
    gw = `http://127.0.0.1:${port}`;
    await waitFor("the gateway to be ready", async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).ok, {
      proc: gateway,
    });
  }, 30_000);

  afterAll(() => {
    echo?.stop(true);
    otlp?.stop(true);
    grpcServer?.forceShutdown();
  });

  async function call(path: string, headers: Record<string, string> = {}, init: RequestInit = {}): Promise<Response> {
    for (const name of ["authorization", "x-api-key", "x-partner-key"])
      if (headers[name]) sentCredentials.push(headers[name].replace(/^Bearer /, ""));
    return fetch(`${gw}${path}`, { ...init, headers });
  }

  test("a valid token reaches the upstream as claim headers; the token itself does not", async () => {
    const res = await call("/rs/items", {
      authorization: `Bearer ${await token(rs.privateKey)}`,
      "x-auth-subject": "admin",
    });
    expect(res.status).toBe(200);
    const seen = ((await res.json()) as { headers: Record<string, string> }).headers;
    expect(seen["x-auth-subject"]).toBe("user-1");
    expect(seen["x-auth-scope"]).toBe("projects:read");
    expect(seen.authorization).toBeUndefined();
  });

  test("every bad or missing token is 401 with a Bearer challenge, and nothing reaches the upstream", async () => {
    const before = upstreamSaw.length;
    const bad = [
      await token(rs.privateKey, { expIn: -120 }),
      await token(rs.privateKey, { nbfIn: 300 }),
      await token(rs.privateKey, { iss: "https://evil.test" }),
      await token(rs.privateKey, { aud: "other" }),
      await token(otherRs.privateKey),
      new UnsecuredJWT({ sub: "x" }).setExpirationTime("1h").encode(),
      await token(new TextEncoder().encode(rsPem), { alg: "HS256" }),
    ];
    for (const t of bad) {
      const res = await call("/rs", { authorization: `Bearer ${t}` });
      expect(res.status).toBe(401);
      expect(res.headers.get("www-authenticate")).toStartWith(
        'Bearer realm="portico", error="invalid_token", error_description="',
      );
      expect(res.headers.get("content-type")).toContain("application/problem+json");
    }
    const missing = await call("/rs");
    expect([missing.status, missing.headers.get("www-authenticate")]).toEqual([401, 'Bearer realm="portico"']);
    expect(upstreamSaw.length).toBe(before);
  });

  test("ES256 from the JWKS URL and HS256 from the environment are accepted", async () => {
    expect(
      (await call("/es", { authorization: `Bearer ${await token(es.privateKey, { alg: "ES256", kid: "es-1" })}` }))
        .status,
    ).toBe(200);
    expect(
      (
        await call("/hs", {
          authorization: `Bearer ${await token(new TextEncoder().encode(HS_SECRET), { alg: "HS256" })}`,
        })
      ).status,
    ).toBe(200);
  });

  test("a valid token without the required scope is 403", async () => {
    const res = await call("/scoped", {
      authorization: `Bearer ${await token(rs.privateKey, { claims: { tenant: "acme" } })}`,
    });
    expect(res.status).toBe(403);
    expect(res.headers.get("www-authenticate")).toContain('error="insufficient_scope"');
  });

  test("API keys: right → 200 as the key's name (key not forwarded), wrong/missing → 401, not allowed → 403", async () => {
    const ok = await call("/keys", { "x-api-key": KEY_A });
    expect(ok.status).toBe(200);
    const seen = ((await ok.json()) as { headers: Record<string, string> }).headers;
    expect(seen["x-auth-subject"]).toBe("partner-a");
    expect(seen["x-api-key"]).toBeUndefined();
    expect((await call("/keys", { "x-api-key": "guess" })).status).toBe(401);
    expect((await call("/keys")).status).toBe(401);
    expect((await call("/keys", { "x-api-key": KEY_B })).status).toBe(403);
  });

  test("a route that forwards the credential passes it on; open routes are untouched", async () => {
    const either = await call("/either", { "x-partner-key": KEY_B });
    expect(either.status).toBe(200);
    expect(((await either.json()) as { headers: Record<string, string> }).headers["x-partner-key"]).toBe(KEY_B);
    expect((await call("/open")).status).toBe(200);
  });

  test("a client cannot keep or forge a claim header: not through Connection, not under an underscore name", async () => {
    // Connection names headers the gateway must drop; were it applied after the guard set the
    // claim headers, `Connection: x-auth-subject` would remove the verified identity. Some
    // upstream stacks (CGI, WSGI, PHP) read `x_auth_subject` as `x-auth-subject`.
    sentCredentials.push(KEY_A);
    const port = Number(new URL(gw).port);
    const exchange = await rawExchange(
      port,
      "GET /keys HTTP/1.1\r\nHost: gw\r\n" +
        `x-api-key: ${KEY_A}\r\nConnection: close, x-auth-subject\r\n` +
        "x_auth_subject: admin\r\nX-Auth_Subject: root\r\n\r\n",
    );
    const res = parseResponse(exchange.bytes);
    expect(res?.status).toBe(200);
    const seen = (JSON.parse(res!.body.toString()) as { headers: Record<string, string> }).headers;
    expect(seen["x-auth-subject"]).toBe("partner-a");
    expect(Object.keys(seen).filter((name) => name.replaceAll("_", "-") === "x-auth-subject")).toEqual([
      "x-auth-subject",
    ]);
  });

  test("a path with percent-encoded letters meets the guard of the route it names, and is sent decoded", async () => {
    expect((await call("/%6Beys/1")).status).toBe(401);
    const ok = await call("/%6B%65ys/%31", { "x-api-key": KEY_A });
    expect(ok.status).toBe(200);
    expect(((await ok.json()) as { path: string }).path).toBe("/keys/1");
  });

  test("no route lets a client send a claim header, or a gateway-set header under an underscore name", async () => {
    // /open has no auth, but its upstream trusts x-auth-subject on /keys. And CGI-style stacks
    // read X_Forwarded_For as X-Forwarded-For (appended to the gateway's: the last one wins).
    const port = Number(new URL(gw).port);
    const exchange = await rawExchange(
      port,
      "GET /open HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nX-Auth-Subject: partner-a\r\n" +
        "x_auth_scope: admin\r\nX_Forwarded_For: 6.6.6.6\r\nX_Real_IP: 6.6.6.6\r\n" +
        "X_Forwarded_Proto: https\r\nx_forwarded_host: evil.example\r\nX_Request_ID: forged\r\n" +
        "x_custom_kept: yes\r\n\r\n",
    );
    const res = parseResponse(exchange.bytes);
    expect(res?.status).toBe(200);
    const seen = (JSON.parse(res!.body.toString()) as { headers: Record<string, string> }).headers;
    expect(seen["x-auth-subject"]).toBeUndefined();
    expect(Object.keys(seen).filter((name) => name.includes("_"))).toEqual(["x_custom_kept"]);
    expect(seen["x-forwarded-for"]).toBe("127.0.0.1");
  });

  test("a GET or HEAD with a body is refused, not forwarded without it", async () => {
    const port = Number(new URL(gw).port);
    for (const framing of [
      "Content-Length: 5\r\n\r\nhello",
      "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    ]) {
      for (const method of ["GET", "HEAD"]) {
        const before = upstreamSaw.length;
        const exchange = await rawExchange(
          port,
          `${method} /open HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n${framing}`,
        );
        expect([method, framing, parseResponse(exchange.bytes)?.status]).toEqual([method, framing, 400]);
        expect(upstreamSaw.length).toBe(before);
      }
    }
    const empty = await rawExchange(
      port,
      "GET /open HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    );
    expect(parseResponse(empty.bytes)?.status).toBe(200);
  });

  test("Connection cannot remove Content-Type, so a JSON body cannot dodge the depth limit", async () => {
    const port = Number(new URL(gw).port);
    const body = `${"[".repeat(200)}${"]".repeat(200)}`;
    const exchange = await rawExchange(
      port,
      "POST /open HTTP/1.1\r\nHost: gw\r\nConnection: close, content-type\r\n" +
        `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
    expect(parseResponse(exchange.bytes)?.status).toBe(400);
  });

  test("a Connection header naming something that is not a header name is ignored, not a 500", async () => {
    const port = Number(new URL(gw).port);
    const exchange = await rawExchange(
      port,
      "GET /open HTTP/1.1\r\nHost: gw\r\nConnection: close, foo bar, (x)\r\n\r\n",
    );
    expect(parseResponse(exchange.bytes)?.status).toBe(200);
  });

  test("gRPC routes: the claims travel as metadata, the token does not", async () => {
    const res = await call(
      "/verify",
      { authorization: `Bearer ${await token(rs.privateKey)}`, "content-type": "application/json" },
      { method: "POST", body: '{"id": 7, "token": "t"}' },
    );
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ message: "Verified: 7 as user-1" });
    expect(grpcSaw.at(-1)!["x-auth-subject"]).toBe("user-1");
    expect(JSON.stringify(grpcSaw)).not.toContain("authorization");
    expect(
      (
        await call(
          "/verify",
          { "content-type": "application/json" },
          { method: "POST", body: '{"id": 7, "token": "t"}' },
        )
      ).status,
    ).toBe(401);
  });

  test("no credential appears in the gateway's logs (at debug level) or in its exported spans", async () => {
    await waitFor(
      "spans of the authenticated routes to be exported",
      () => otlpBodies.join("").includes("/keys") && otlpBodies.join("").includes("/verify"),
      { timeoutMs: 10_000 },
    );
    const logs = gateway.lines.join("\n");
    const spans = otlpBodies.join("\n");
    expect(logs).toContain('"route":"rs"');
    const credentials = [...new Set(sentCredentials)].filter((c) => c.length > 8);
    expect(credentials.length).toBeGreaterThan(10);
    for (const credential of credentials) {
      expect(logs.includes(credential)).toBe(false);
      expect(spans.includes(credential)).toBe(false);
      // A token's signature alone is as good as the token: check that part too.
      const signature = credential.split(".")[2];
      if (signature) expect(logs.includes(signature) || spans.includes(signature)).toBe(false);
    }
    // Nor did the upstream see any bearer token (the routes that got one do not forward it).
    expect(JSON.stringify(upstreamSaw)).not.toContain("Bearer");
  });
});
