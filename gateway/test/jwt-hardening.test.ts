/**
 * Two review findings on JWT verification (gateway/src/auth/jwt.ts), through the guard a route
 * gets from its config:
 *   - a JWKS endpoint that is down or answers garbage is asked again only after a back-off
 *     (1 s, doubling, up to jwksCooldownMs), while the last keys fetched keep verifying tokens;
 *   - a token whose base64url is not canonical (`=` padding, unused low bits set in the last
 *     character) is 401: it decodes to the same bytes, so one token could otherwise be sent as
 *     many distinct strings, each a new entry in the verified-token cache and a new rate-limit key.
 * Time is set (setSystemTime), not waited for: the back-off, the cache and jose all read Date.
 */
import { afterAll, afterEach, beforeAll, describe, expect, setSystemTime, test } from "bun:test";
import { exportJWK, exportSPKI, generateKeyPair, SignJWT } from "jose";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RouteAuth } from "../src/auth/guard.ts";
import { JwtVerifier } from "../src/auth/jwt.ts";
import { parseConfig } from "../src/config/load.ts";

const HS_SECRET = "an-hs256-secret-of-more-than-32-bytes!";
const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

type KeyPair = Awaited<ReturnType<typeof generateKeyPair>>;
let es: KeyPair;
let es2: KeyPair;
let rs: KeyPair;
let dir: string;
let tokenCount = 0;

beforeAll(async () => {
  [es, es2, rs] = await Promise.all([
    generateKeyPair("ES256", { extractable: true }),
    generateKeyPair("ES256", { extractable: true }),
    generateKeyPair("RS256", { extractable: true }),
  ]);
  dir = mkdtempSync(join(tmpdir(), "portico-jwt-"));
  writeFileSync(join(dir, "rs256.pem"), await exportSPKI(rs.publicKey));
  writeFileSync(join(dir, "es256.json"), JSON.stringify(await jwk(es, "es-1")));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

afterEach(() => {
  setSystemTime();
});

async function jwk(pair: KeyPair, kid: string) {
  return { ...(await exportJWK(pair.publicKey)), kid, alg: pair === rs ? "RS256" : "ES256", use: "sig" };
}

/** A new token each call (so never one the verifier remembers), valid for 10 minutes. */
async function token(
  key: KeyPair["privateKey"] | Uint8Array,
  alg: string,
  opts: { kid?: string; claims?: Record<string, unknown> } = {},
): Promise<string> {
  return new SignJWT({ sub: "user-1", n: ++tokenCount, ...opts.claims })
    .setProtectedHeader({ alg, ...(opts.kid ? { kid: opts.kid } : {}) })
    .setIssuedAt()
    .setExpirationTime("10m")
    .sign(key);
}

function guard(auth: string): RouteAuth {
  const cfg = parseConfig(
    `upstreams: { up: { protocol: http, endpoints: "127.0.0.1:1" } }
routes: [{ name: r, path: /r, upstream: up, auth: { jwt: ${auth} } }]`,
    "jwt.yaml",
    { TEST_JWT_SECRET: HS_SECRET },
    dir,
  );
  return cfg.routes[0]!.auth!;
}

async function check(g: RouteAuth, t: string): Promise<{ status: number; description?: string }> {
  const decision = await g.check(new Headers({ authorization: `Bearer ${t}` }));
  if (decision.ok) return { status: 200 };
  const challenge = decision.response("r").headers.get("www-authenticate") ?? "";
  const description = /error_description="([^"]*)"/.exec(challenge)?.[1];
  return { status: decision.status, ...(description ? { description } : {}) };
}

/** A JWKS endpoint on 127.0.0.1 that counts the requests it gets; `answer` says what it sends. */
interface JwksEndpoint {
  hits: number;
  answer: () => Response;
  server: ReturnType<typeof Bun.serve>;
}

function jwksEndpoint(answer: () => Response): JwksEndpoint {
  const endpoint: Omit<JwksEndpoint, "server"> = { hits: 0, answer };
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: () => {
      endpoint.hits++;
      return endpoint.answer();
    },
  });
  return Object.assign(endpoint, { server });
}

const down = () => new Response("upstream connect error", { status: 503 });

describe("a JWKS endpoint that fails is not asked again before a back-off", () => {
  const servers: JwksEndpoint[] = [];
  afterAll(() => {
    for (const s of servers) s.server.stop(true);
  });

  test("an outage after keys were fetched: 40 requests make one fetch, the last keys keep verifying", async () => {
    const keys = { keys: [await jwk(es, "es-1")] };
    const issuer = jwksEndpoint(() => Response.json(keys));
    servers.push(issuer);
    const g = guard(`{ jwksUrl: "http://127.0.0.1:${issuer.server.port}/k", jwksCacheMaxAgeMs: 1000 }`);
    expect(await check(g, await token(es.privateKey, "ES256", { kid: "es-1" }))).toEqual({ status: 200 });
    expect(issuer.hits).toBe(1);

    // Garbage with a 200, then past jwksCacheMaxAgeMs: the cached keys are stale, every lookup
    // wants a refetch. Sequential requests, then a concurrent burst, all with new tokens.
    issuer.answer = () => new Response("<html>maintenance</html>", { headers: { "content-type": "text/html" } });
    setSystemTime(new Date(Date.now() + 1_100));
    for (let i = 0; i < 20; i++)
      expect(await check(g, await token(es.privateKey, "ES256", { kid: "es-1" }))).toEqual({ status: 200 });
    const burst = await Promise.all(
      Array.from({ length: 20 }, async () => check(g, await token(es.privateKey, "ES256", { kid: "es-1" }))),
    );
    expect(burst.every((r) => r.status === 200)).toBe(true);
    expect(issuer.hits).toBe(2);

    // An unknown kid during the outage is 401 (as when the endpoint answers) and fetches nothing.
    for (let i = 0; i < 10; i++)
      expect(await check(g, await token(es2.privateKey, "ES256", { kid: "es-2" }))).toEqual({
        status: 401,
        description: "no known key matches the token",
      });
    expect(issuer.hits).toBe(2);
  });

  test("no key ever fetched: every request is 503, one fetch per back-off, concurrent ones share it", async () => {
    const issuer = jwksEndpoint(down);
    servers.push(issuer);
    const g = guard(`{ jwksUrl: "http://127.0.0.1:${issuer.server.port}/k", jwksCooldownMs: 30000 }`);
    const burst = await Promise.all(
      Array.from({ length: 20 }, async () => check(g, await token(es.privateKey, "ES256", { kid: "es-1" }))),
    );
    expect(burst.every((r) => r.status === 503)).toBe(true);
    for (let i = 0; i < 20; i++)
      expect((await check(g, await token(es.privateKey, "ES256", { kid: "es-1" }))).status).toBe(503);
    expect(issuer.hits).toBe(1);
  });

  test("the back-off doubles from 1 s up to jwksCooldownMs; a good fetch ends it", async () => {
    const issuer = jwksEndpoint(down);
    servers.push(issuer);
    const g = guard(`{ jwksUrl: "http://127.0.0.1:${issuer.server.port}/k", jwksCooldownMs: 5000 }`);
    const start = Date.now();
    const at = async (ms: number) => {
      setSystemTime(new Date(start + ms));
      return (await check(g, await token(es.privateKey, "ES256", { kid: "es-1" }))).status;
    };
    // Failures at 0, 1, 3, 7, 12, 17 s: waits of 1, 2, 4, then 5 (the cap), 5.
    const schedule: [number, number][] = [
      [0, 1],
      [999, 1],
      [1_000, 2],
      [2_999, 2],
      [3_000, 3],
      [6_999, 3],
      [7_000, 4],
      [11_999, 4],
      [12_000, 5],
      [16_999, 5],
      [17_000, 6],
    ];
    for (const [ms, hits] of schedule) {
      expect(await at(ms)).toBe(503);
      expect([ms, issuer.hits]).toEqual([ms, hits]);
    }

    // The issuer is back: the next fetch (after the wait) brings the keys, and a later failure
    // starts again from 1 s, with the keys just fetched still verifying.
    const keys = { keys: [await jwk(es, "es-1")] };
    issuer.answer = () => Response.json(keys);
    expect(await at(21_999)).toBe(503);
    expect(await at(22_000)).toBe(200);
    expect(issuer.hits).toBe(7);
    issuer.answer = down;
    // An unknown kid past the cooldown refetches; it fails, and so waits 1 s.
    setSystemTime(new Date(start + 27_000));
    expect((await check(g, await token(es2.privateKey, "ES256", { kid: "es-2" }))).status).toBe(401);
    expect(issuer.hits).toBe(8);
    setSystemTime(new Date(start + 27_999));
    expect((await check(g, await token(es2.privateKey, "ES256", { kid: "es-2" }))).status).toBe(401);
    expect(issuer.hits).toBe(8);
    expect(await at(27_999)).toBe(200);
    setSystemTime(new Date(start + 28_000));
    expect((await check(g, await token(es2.privateKey, "ES256", { kid: "es-2" }))).status).toBe(401);
    expect(issuer.hits).toBe(9);
  });

  test("the 503's Retry-After is the time left until the next fetch, in whole seconds", async () => {
    const issuer = jwksEndpoint(down);
    servers.push(issuer);
    const g = guard(`{ jwksUrl: "http://127.0.0.1:${issuer.server.port}/k", jwksCooldownMs: 8000 }`);
    const start = Date.now();
    const retryAfter = async (ms: number) => {
      setSystemTime(new Date(start + ms));
      const decision = await g.check(
        new Headers({ authorization: `Bearer ${await token(es.privateKey, "ES256", { kid: "es-1" })}` }),
      );
      expect(decision).toMatchObject({ ok: false, status: 503 });
      return decision.ok ? undefined : decision.response("r").headers.get("retry-after");
    };
    // Failures at 0 s (wait 1), 1 s (wait 2), 3 s (wait 4), 7 s (wait 8, the cap).
    expect(await retryAfter(0)).toBe("1");
    expect(await retryAfter(1_000)).toBe("2");
    expect(await retryAfter(1_500)).toBe("2");
    expect(await retryAfter(2_001)).toBe("1");
    expect(await retryAfter(3_000)).toBe("4");
    expect(await retryAfter(7_000)).toBe("8");
    expect(await retryAfter(14_999)).toBe("1");
    expect(issuer.hits).toBe(4);
  });

  test("tokens verified with the cached keys meanwhile (no fetch) do not reset the back-off", async () => {
    const keys = { keys: [await jwk(es, "es-1")] };
    const issuer = jwksEndpoint(() => Response.json(keys));
    servers.push(issuer);
    const g = guard(`{ jwksUrl: "http://127.0.0.1:${issuer.server.port}/k", jwksCooldownMs: 4000 }`);
    const start = Date.now();
    const at = async (ms: number, kid: "es-1" | "es-2") => {
      setSystemTime(new Date(start + ms));
      const t = await token(kid === "es-1" ? es.privateKey : es2.privateKey, "ES256", { kid });
      return [ms, kid, (await check(g, t)).status, issuer.hits];
    };
    expect(await at(0, "es-1")).toEqual([0, "es-1", 200, 1]);
    issuer.answer = down;
    // Past the cooldown an unknown kid refetches: failure 1, wait 1 s.
    expect(await at(4_000, "es-2")).toEqual([4_000, "es-2", 401, 2]);
    // The known kid verifies from the cached keys without a fetch; the next failure is the 2nd: wait 2 s.
    expect(await at(5_000, "es-1")).toEqual([5_000, "es-1", 200, 2]);
    expect(await at(5_000, "es-2")).toEqual([5_000, "es-2", 401, 3]);
    expect(await at(6_999, "es-2")).toEqual([6_999, "es-2", 401, 3]);
    expect(await at(7_000, "es-2")).toEqual([7_000, "es-2", 401, 4]);
  });
});

describe("a token whose base64url is not canonical is 401", () => {
  const routes: [string, () => RouteAuth, () => Promise<string>][] = [
    ["ES256", () => guard("{ keyFile: es256.json }"), () => token(es.privateKey, "ES256", { kid: "es-1" })],
    ["RS256", () => guard("{ keyFile: rs256.pem }"), () => token(rs.privateKey, "RS256")],
    ["HS256", () => guard("{ secretEnv: TEST_JWT_SECRET }"), () => token(new TextEncoder().encode(HS_SECRET), "HS256")],
  ];

  /** The same bytes as `segment` under other strings: padded, and every other last character. */
  function variants(segment: string): string[] {
    const tail = segment.length % 4;
    expect(tail).not.toBe(0); // only a segment with a partial last group has spare bits
    // A 2-character tail carries 8 bits (4 unused), a 3-character tail 16 (2 unused).
    const unused = tail === 2 ? 0b1111 : 0b11;
    const last = B64URL.indexOf(segment.at(-1)!);
    const lastChars = [...B64URL].filter((_c, i) => i !== last && (i & ~unused) === (last & ~unused));
    expect(lastChars).toHaveLength(unused);
    const out = [segment + "=".repeat(4 - tail), ...lastChars.map((c) => segment.slice(0, -1) + c)];
    for (const v of out) expect(Buffer.from(v, "base64url")).toEqual(Buffer.from(segment, "base64url"));
    return out;
  }

  for (const [alg, route, mint] of routes) {
    test(`${alg}: the signature padded (${alg === "HS256" ? "=" : "=="}) or with its unused bits set`, async () => {
      const g = route();
      const t = await mint();
      const [header, payload, signature] = t.split(".") as [string, string, string];
      const forged = variants(signature);
      expect(forged[0]).toEndWith(alg === "HS256" ? "=" : "==");
      for (const sig of forged)
        expect(await check(g, `${header}.${payload}.${sig}`)).toEqual({
          status: 401,
          description: "the token is malformed",
        });
      expect(await check(g, t)).toEqual({ status: 200 });
      // Also once the canonical token is remembered as verified.
      expect(await check(g, `${header}.${payload}.${forged[1]}`)).toMatchObject({ status: 401 });
    });
  }

  test("the header or the payload padded or with unused bits set (malformed, before any key is used)", async () => {
    // The verifier itself: the guard's Bearer syntax already refuses `=` inside a token.
    const verifier = new JwtVerifier(
      { kind: "secret", secret: new TextEncoder().encode(HS_SECRET) },
      { algorithms: ["HS256"], clockSkewSec: 30, requiredClaims: ["exp"] },
    );
    // A kid and a claim of lengths that leave both segments with a partial last group.
    let t = "";
    for (let k = 1; ; k++) {
      t = await token(new TextEncoder().encode(HS_SECRET), "HS256", {
        kid: "k".repeat(1 + (k % 3)),
        claims: { pad: "p".repeat(k) },
      });
      const [h, p] = t.split(".") as [string, string];
      if (h.length % 4 !== 0 && p.length % 4 !== 0) break;
    }
    const [header, payload, signature] = t.split(".") as [string, string, string];
    const forged = [
      ...variants(header).map((h) => `${h}.${payload}.${signature}`),
      ...variants(payload).map((p) => `${header}.${p}.${signature}`),
    ];
    for (const f of forged)
      expect(await verifier.verify(f)).toEqual({ ok: false, reason: "invalid", description: "the token is malformed" });
    expect((await verifier.verify(t)).ok).toBe(true);
    const g = guard("{ secretEnv: TEST_JWT_SECRET }");
    for (const f of forged) expect((await check(g, f)).status).toBe(401);
  });
});
