/**
 * Rate limiting as a client sees it, through real gateway processes sharing a real Redis: the
 * headers, the 429 body, an honest Retry-After, and whose budget a request uses.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { SignJWT } from "jose";
import { apiKeyDigest } from "../src/auth/api-key.ts";
import { requireBinary, stopAll } from "../../scripts/stack/testing/processes.ts";
import { startGateway, startStubUpstream, type TestGateway, TestRedis, writeRoutes } from "./ratelimit-harness.ts";

const hasRedis = requireBinary("redis-server");
const JWT_SECRET = "a-rate-limit-test-secret-of-32-bytes-or-more";
const API_KEY = `key-${crypto.randomUUID()}`;
let redis: TestRedis;
let stub: Awaited<ReturnType<typeof startStubUpstream>>;
/** Trusts no proxy: X-Forwarded-For is ignored, the client is the TCP peer. */
let direct: TestGateway;
/** Trusts 127.0.0.1 as a proxy: the client is the right-most untrusted X-Forwarded-For entry. */
let behindProxy: TestGateway;

const routes = (endpoint: string, trustedProxies: string[]) => `
upstreams:
  stub:
    protocol: http
    endpoints: ${endpoint}
trustedProxies: ${JSON.stringify(trustedProxies)}
rateLimit: { redisTimeoutMs: 250 } # a busy shared machine can stall Redis past the 100 ms default
routes:
  - { name: headers, path: /headers, upstream: stub, rateLimit: { rate: 2, period: 1m } }
  - { name: retry, path: /retry, upstream: stub, rateLimit: { rate: 1, period: 1s } }
  - name: by-key
    path: /by-key
    upstream: stub
    rateLimit: { name: api-key, rate: 2, period: 1m, key: { type: header, header: X-API-Key } }
  - { name: by-ip, path: /by-ip, upstream: stub, rateLimit: { rate: 2, period: 1m } }
  - { name: by-proxy-ip, path: /by-proxy-ip, upstream: stub, rateLimit: { rate: 2, period: 1m } }
  - { name: global, path: /global, upstream: stub, rateLimit: { rate: 3, period: 1m, key: { type: global } } }
  - name: layered
    path: /layered
    upstream: stub
    rateLimit:
      - { name: per-client, rate: 2, period: 1m }
      - { name: everyone, rate: 1000, period: 1h, burst: 100, key: { type: global } }
  - name: by-token
    path: /by-token
    upstream: stub
    auth: { jwt: { secretEnv: TEST_JWT_SECRET } }
    rateLimit: { name: per-token, rate: 2, period: 1m, key: { type: header, header: Authorization } }
  - name: either
    path: /either
    upstream: stub
    auth:
      jwt: { secretEnv: TEST_JWT_SECRET }
      apiKey: { keys: [{ name: partner, sha256: ${apiKeyDigest(API_KEY)} }] }
    rateLimit: { name: per-key, rate: 2, period: 1m, key: { type: header, header: X-API-Key } }
  - { name: open, path: /open, upstream: stub }
`;

beforeAll(async () => {
  if (!hasRedis) return;
  [redis, stub] = await Promise.all([TestRedis.start(), startStubUpstream()]);
  const env = { REDIS_URL: redis.url, TEST_JWT_SECRET: JWT_SECRET };
  [direct, behindProxy] = await Promise.all([
    startGateway("gateway-direct", writeRoutes(routes(stub.address, [])), env),
    startGateway("gateway-behind-proxy", writeRoutes(routes(stub.address, ["127.0.0.1"])), env),
  ]);
}, 30_000); // processes start slowly on a busy 2-core machine

afterAll(async () => {
  stub?.stop();
  await stopAll();
});

const get = (gateway: TestGateway, path: string, headers: Record<string, string> = {}) =>
  fetch(`${gateway.url}${path}`, { headers });
const tokenFor = (sub: string) =>
  new SignJWT({ sub })
    .setProtectedHeader({ alg: "HS256" })
    .setExpirationTime("5m")
    .sign(new TextEncoder().encode(JWT_SECRET));
const statuses = async (n: number, send: () => Promise<Response>) => {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push((await send()).status);
  return out;
};

describe.skipIf(!hasRedis)("rate-limited responses", () => {
  test("every response of a limited route carries RateLimit-Policy and RateLimit; an unlimited route has neither", async () => {
    const first = await get(direct, "/headers");
    expect(first.status).toBe(200);
    expect(first.headers.get("ratelimit-policy")).toBe('"ip";q=2;w=60');
    // One of two used; one request is earned back every 30 s, so full again in 30 s.
    expect(first.headers.get("ratelimit")).toBe('"ip";r=1;t=30');
    const second = await get(direct, "/headers");
    expect(second.headers.get("ratelimit")).toBe('"ip";r=0;t=60');

    const open = await get(direct, "/open");
    expect(open.status).toBe(200);
    expect(open.headers.has("ratelimit-policy")).toBe(false);
    expect(open.headers.has("ratelimit")).toBe(false);
  });

  test("a refused request gets 429 problem+json naming the route and policy, with Retry-After", async () => {
    const res = await get(direct, "/headers", { "x-request-id": "rl-429-test" });
    expect(res.status).toBe(429);
    expect(res.headers.get("content-type")).toBe("application/problem+json");
    expect(res.headers.get("retry-after")).toBe("30");
    expect(res.headers.get("ratelimit-policy")).toBe('"ip";q=2;w=60');
    expect(res.headers.get("ratelimit")).toBe('"ip";r=0;t=60');
    expect(await res.json()).toEqual({
      type: "about:blank",
      title: "Too Many Requests",
      status: 429,
      detail: 'rate limit "ip" of route "headers" exceeded (2 requests per minute); retry in 30 s',
      request_id: "rl-429-test",
      route: "headers",
      policy: "ip",
      retry_after: 30,
    });
    expect(stub.received("/headers")).toBe(2); // the refused request never reached the upstream
  });

  test("Retry-After is honest: the request sent after it is admitted", async () => {
    expect((await get(direct, "/retry")).status).toBe(200);
    const refused = await get(direct, "/retry");
    expect(refused.status).toBe(429);
    const retryAfterS = Number(refused.headers.get("retry-after"));
    expect(retryAfterS).toBe(1);
    await Bun.sleep(retryAfterS * 1000);
    expect((await get(direct, "/retry")).status).toBe(200);
  });

  test("with several policies every one is reported, and the one that refuses is named", async () => {
    expect((await get(direct, "/layered")).headers.get("ratelimit-policy")).toBe(
      '"per-client";q=2;w=60, "everyone";q=1000;w=3600',
    );
    const second = await get(direct, "/layered");
    expect(second.headers.get("ratelimit")).toMatch(/^"per-client";r=0;t=60, "everyone";r=98;t=\d+$/);
    const refused = await get(direct, "/layered");
    expect(refused.status).toBe(429);
    expect(await refused.json()).toMatchObject({ policy: "per-client" });
    // The refused request did not use up the global budget.
    expect(refused.headers.get("ratelimit")).toMatch(/"everyone";r=98;/);
  });
});

describe.skipIf(!hasRedis)("whose budget a request uses", () => {
  test("two API keys have separate budgets; leaving the key out does not share anyone's", async () => {
    const withKey = (key: string) => () => get(direct, "/by-key", { "x-api-key": key });
    expect(await statuses(3, withKey("alice-key"))).toEqual([200, 200, 429]);
    expect(await statuses(3, withKey("bob-key"))).toEqual([200, 200, 429]);
    // Without the header the request is keyed by its client IP instead.
    expect(await statuses(3, () => get(direct, "/by-key"))).toEqual([200, 200, 429]);
  });

  test("two client IPs behind a trusted proxy have separate budgets", async () => {
    const from = (ip: string) => () => get(behindProxy, "/by-proxy-ip", { "x-forwarded-for": ip });
    expect(await statuses(3, from("10.0.0.1"))).toEqual([200, 200, 429]);
    expect(await statuses(3, from("10.0.0.2"))).toEqual([200, 200, 429]);
  });

  test("a forged left-most X-Forwarded-For entry does not escape the limit behind a trusted proxy", async () => {
    // The proxy appends the address it saw (10.0.0.1, already out of budget); a client can
    // only prepend entries.
    const forged = await statuses(3, () =>
      get(behindProxy, "/by-proxy-ip", { "x-forwarded-for": `203.0.113.${Math.floor(Math.random() * 250)}, 10.0.0.1` }),
    );
    expect(forged).toEqual([429, 429, 429]);
  });

  test("X-Forwarded-For from an untrusted client is ignored: forging it does not escape the limit", async () => {
    let n = 0;
    const forged = () => get(direct, "/by-ip", { "x-forwarded-for": `198.51.100.${++n}` });
    expect(await statuses(4, forged)).toEqual([200, 200, 429, 429]);
  });

  test("a limit keyed on Authorization is one budget per token, however the scheme is spelled", async () => {
    const token = await tokenFor("user-1");
    // The scheme is case-insensitive and may be followed by several spaces (RFC 9110 §11.1, §11.4):
    // every spelling is accepted by the guard, and every one is the same budget.
    const spellings = [`Bearer ${token}`, `bearer  ${token}`, `BEARER ${token}`, `Bearer    ${token}`];
    const seen = await statuses(spellings.length, () =>
      get(direct, "/by-token", { authorization: spellings.shift()! }),
    );
    expect(seen).toEqual([200, 200, 429, 429]);
    expect(stub.received("/by-token")).toBe(2);
  });

  test("a limit keyed on a credential header the guard did not check is keyed by the client address", async () => {
    const token = await tokenFor("user-2");
    // The route takes a JWT or an API key, and the Bearer token is what it checked: a made-up
    // X-API-Key beside it is not a budget of its own.
    let n = 0;
    const withJunkKey = () => get(direct, "/either", { authorization: `Bearer ${token}`, "x-api-key": `junk-${++n}` });
    expect(await statuses(3, withJunkKey)).toEqual([200, 200, 429]);
    // The API key the guard verifies keys its own budget.
    expect(await statuses(3, () => get(direct, "/either", { "x-api-key": API_KEY }))).toEqual([200, 200, 429]);
    expect(stub.received("/either")).toBe(4);
  });

  test("a global policy is one budget for every client, across gateways", async () => {
    const results = [
      (await get(direct, "/global", { "x-api-key": "a" })).status,
      (await get(behindProxy, "/global", { "x-forwarded-for": "10.9.9.9" })).status,
      (await get(direct, "/global")).status,
      (await get(behindProxy, "/global", { "x-forwarded-for": "10.9.9.10" })).status,
    ];
    expect(results).toEqual([200, 200, 200, 429]);
  });
});
