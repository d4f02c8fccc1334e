/**
 * The Redis project store against a real redis-server: the ProjectStore contract, the key layout
 * it writes, and its configuration. Outages and several processes: redis-store.e2e.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RedisClient } from "bun";
import { requireBinary, stopAll, waitFor } from "../../scripts/stack/testing/processes.ts";
import { TestRedis } from "../../scripts/stack/testing/redis.ts";
import { loadConfig } from "../src/config.ts";
import { openStore } from "../src/store/index.ts";
import { openRedisStore } from "../src/store/redis.ts";
import { type ProjectStore, StoreUnavailableError } from "../src/store/store.ts";
import { describeProjectStoreContract } from "./store-contract.ts";

const hasRedis = requireBinary("redis-server");
let redis: TestRedis;
let raw: RedisClient;

beforeAll(async () => {
  if (!hasRedis) return;
  redis = await TestRedis.start();
  raw = new RedisClient(redis.url);
}, 30_000); // processes start slowly on a busy 2-core machine

afterAll(async () => {
  raw?.close();
  await stopAll();
});

let prefixes = 0;
/** Every store gets keys no other test touches. */
const newPrefix = () => `test:${++prefixes}:`;

/** A store that has connected (it connects in the background). */
async function openConnected(keyPrefix: string, maxProjects?: number): Promise<ProjectStore> {
  const store = openRedisStore({ url: redis.url, keyPrefix, timeoutMs: 500, maxProjects });
  await waitFor("the store to reach redis", () => store.ping().then(() => true), { timeoutMs: 5000 });
  return store;
}

describeProjectStoreContract(
  "Redis",
  {
    open: () => openConnected(newPrefix()),
    openPair: async (opts) => {
      const prefix = newPrefix();
      return [await openConnected(prefix, opts?.maxProjects), await openConnected(prefix, opts?.maxProjects)];
    },
  },
  { skip: !hasRedis },
);

describe.skipIf(!hasRedis)("Redis project store: what it writes", () => {
  test("each project is JSON under <prefix>project:<id>, indexed by id in <prefix>index, ids from <prefix>id; no key expires", async () => {
    const prefix = newPrefix();
    const store = await openConnected(prefix);
    const a = await store.create("alpha");
    const b = await store.create("beta");
    expect([a.id, b.id]).toEqual([1, 2]);
    expect(await raw.get(`${prefix}id`)).toBe("2");
    expect(JSON.parse((await raw.get(`${prefix}project:1`))!)).toEqual(a);
    expect(JSON.parse((await raw.get(`${prefix}project:2`))!)).toEqual(b);
    expect(await raw.send("ZRANGE", [`${prefix}index`, "0", "-1", "WITHSCORES"])).toEqual([
      ["1", 1],
      ["2", 2],
    ]);
    const keys = ((await raw.send("KEYS", [`${prefix}*`])) as string[]).sort();
    expect(keys).toEqual([`${prefix}id`, `${prefix}index`, `${prefix}project:1`, `${prefix}project:2`]);
    // volatile-ttl evicts only keys with a TTL: projects must have none.
    for (const key of keys) expect(await raw.send("PTTL", [key])).toBe(-1);
    await store.close();
  });

  test("stores with different key prefixes on one Redis are separate: own ids, own projects", async () => {
    const [one, two] = [await openConnected(newPrefix()), await openConnected(newPrefix())];
    const a = await one.create("in one");
    const b = await two.create("in two");
    expect([a.id, b.id]).toEqual([1, 1]);
    expect(await one.list({ limit: 10, after: 0 })).toEqual([a]);
    expect(await two.get(1)).toEqual(b);
    await one.close();
    await two.close();
  });

  test("a project key holding something else is an error naming the key, never returned as a project", async () => {
    const prefix = newPrefix();
    const store = await openConnected(prefix);
    await raw.set(`${prefix}project:1`, "not json");
    await raw.send("ZADD", [`${prefix}index`, "1", "1"]);
    await expect(store.get(1)).rejects.toThrow(`redis key ${prefix}project:1 does not hold a project`);
    await expect(store.list({ limit: 10, after: 0 })).rejects.toThrow(`redis key ${prefix}project:1`);
    await store.close();
  });
});

describe.skipIf(!hasRedis)("Redis project store: creates wait for replicas (REDIS_WAIT_REPLICAS)", () => {
  test("without the replicas asked for, a create is not acknowledged (StoreUnavailableError naming the count); the project was written", async () => {
    const prefix = newPrefix();
    const store = openRedisStore({
      url: redis.url,
      keyPrefix: prefix,
      timeoutMs: 500,
      waitReplicas: 1,
      waitTimeoutMs: 20,
    });
    await waitFor("the store to reach redis", () => store.ping().then(() => true), { timeoutMs: 5000 });
    const error = await store.create("unconfirmed").catch((err: unknown) => err);
    expect(error).toBeInstanceOf(StoreUnavailableError);
    expect((error as Error).message).toBe("project 1 reached the master but 0 of 1 replicas confirmed it within 20 ms");
    expect(JSON.parse((await raw.get(`${prefix}project:1`))!)).toMatchObject({ title: "unconfirmed" });
    await store.close();
  });

  test("concurrent creates share WAITs: one in flight at a time, so a read never queues behind more than one", async () => {
    const store = openRedisStore({
      url: redis.url,
      keyPrefix: newPrefix(),
      timeoutMs: 500,
      waitReplicas: 1,
      waitTimeoutMs: 20,
    });
    await waitFor("the store to reach redis", () => store.ping().then(() => true), { timeoutMs: 5000 });
    const waitsBefore = await waitCalls();
    const results = await Promise.allSettled(Array.from({ length: 30 }, (_, i) => store.create(`batch ${i}`)));
    expect(results.every((r) => r.status === "rejected" && r.reason instanceof StoreUnavailableError)).toBe(true);
    // The first create goes out alone; the 29 that arrive while its WAIT blocks go out together after it.
    expect((await waitCalls()) - waitsBefore).toBe(2);
    await store.close();
  });
});

/** How many WAIT commands Redis has run (INFO commandstats). */
async function waitCalls(): Promise<number> {
  const info = (await raw.send("INFO", ["commandstats"])) as string;
  return Number(/cmdstat_wait:calls=(\d+)/.exec(info)?.[1] ?? 0);
}

describe("STORE=redis configuration", () => {
  test("REDIS_URL is required and must be a Redis URL; its password never shows in the error", () => {
    expect(() => loadConfig({ STORE: "redis" })).toThrow(
      "STORE=redis needs REDIS_URL, e.g. REDIS_URL=redis://127.0.0.1:6379",
    );
    expect(() => loadConfig({ STORE: "redis", REDIS_URL: "http://user:s3cret@cache:6379" })).toThrow(
      "REDIS_URL=http://user:***@cache:6379/ is not a Redis URL; expected redis://host:port (or rediss://, valkey://)",
    );
    expect(() => loadConfig({ STORE: "redis", REDIS_URL: "cache:6379" })).toThrow("is not a Redis URL");
  });

  test("the key prefix defaults to portico:webapp: and the timeout to 500 ms; a bad timeout names REDIS_TIMEOUT_MS", () => {
    expect(loadConfig({ STORE: "redis", REDIS_URL: "redis://redis:6379" }).redis).toEqual({
      url: "redis://redis:6379",
      keyPrefix: "portico:webapp:",
      timeoutMs: 500,
      waitReplicas: 0,
      waitTimeoutMs: 250,
    });
    expect(
      loadConfig({ STORE: "redis", REDIS_URL: "rediss://r:6380", REDIS_KEY_PREFIX: "x:", REDIS_TIMEOUT_MS: "50" })
        .redis,
    ).toEqual({ url: "rediss://r:6380", keyPrefix: "x:", timeoutMs: 50, waitReplicas: 0, waitTimeoutMs: 25 });
    expect(() => loadConfig({ STORE: "redis", REDIS_URL: "redis://redis:6379", REDIS_TIMEOUT_MS: "soon" })).toThrow(
      'REDIS_TIMEOUT_MS="soon" is not an integer in [1, 60000]',
    );
  });

  test("REDIS_SENTINELS: follow the master the Sentinels name, and wait for 1 replica by default", () => {
    const redis = loadConfig({
      STORE: "redis",
      REDIS_URL: "redis://webapp:pw@redis-store-0.redis-store:6379",
      REDIS_SENTINELS: "redis-store-sentinel:26379, [::1]:26380",
      REDIS_SENTINEL_PASSWORD: "s3cret",
    }).redis;
    expect(redis).toMatchObject({
      sentinel: { addresses: ["redis-store-sentinel:26379", "[::1]:26380"], masterName: "portico", password: "s3cret" },
      waitReplicas: 1,
      waitTimeoutMs: 250,
    });
    const custom = loadConfig({
      STORE: "redis",
      REDIS_URL: "redis://r:6379",
      REDIS_SENTINELS: "s:26379",
      REDIS_SENTINEL_MASTER: "other",
      REDIS_WAIT_REPLICAS: "0",
    }).redis;
    expect(custom).toMatchObject({ sentinel: { addresses: ["s:26379"], masterName: "other" }, waitReplicas: 0 });
    expect(custom?.sentinel?.password).toBeUndefined();
  });

  test("a bad Sentinel address or a WAIT timeout not below REDIS_TIMEOUT_MS stops start-up, naming the variable", () => {
    const base = { STORE: "redis", REDIS_URL: "redis://r:6379" };
    expect(() => loadConfig({ ...base, REDIS_SENTINELS: "sentinel" })).toThrow(
      'REDIS_SENTINELS: "sentinel" is not host:port (e.g. redis-sentinel:26379, [::1]:26379)',
    );
    expect(() => loadConfig({ ...base, REDIS_SENTINELS: "s:99999" })).toThrow("REDIS_SENTINELS");
    expect(() => loadConfig({ ...base, REDIS_SENTINELS: " , " })).toThrow("REDIS_SENTINELS");
    expect(() => loadConfig({ ...base, REDIS_TIMEOUT_MS: "200", REDIS_WAIT_TIMEOUT_MS: "200" })).toThrow(
      "REDIS_WAIT_TIMEOUT_MS=200 must be below REDIS_TIMEOUT_MS=200",
    );
    // The smallest timeout is valid when no WAIT is sent; with one, the variable to raise is named.
    expect(loadConfig({ ...base, REDIS_TIMEOUT_MS: "1" }).redis?.timeoutMs).toBe(1);
    expect(() => loadConfig({ ...base, REDIS_TIMEOUT_MS: "1", REDIS_WAIT_REPLICAS: "1" })).toThrow(
      "REDIS_TIMEOUT_MS=1 leaves no time for the WAIT for replicas (REDIS_WAIT_REPLICAS=1)",
    );
  });

  test("with STORE=sqlite the REDIS_* variables are not read", () => {
    expect(loadConfig({ REDIS_URL: "nonsense", REDIS_TIMEOUT_MS: "soon" }).redis).toBeUndefined();
  });

  test("the factory refuses STORE=redis without its settings", () => {
    expect(() => openStore({ kind: "redis", sqlitePath: ":memory:" })).toThrow("STORE=redis needs REDIS_URL");
  });

  test.skipIf(!hasRedis)("the factory opens the Redis store for STORE=redis", async () => {
    const store = openStore({
      kind: "redis",
      sqlitePath: ":memory:",
      redis: { url: redis.url, keyPrefix: newPrefix(), timeoutMs: 500 },
    });
    await waitFor("the store to reach redis", () => store.ping().then(() => true), { timeoutMs: 5000 });
    expect((await store.create("via factory")).title).toBe("via factory");
    await store.close();
  });
});
