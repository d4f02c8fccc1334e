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
import type { ProjectStore } from "../src/store/store.ts";
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
async function openConnected(keyPrefix: string): Promise<ProjectStore> {
  const store = openRedisStore({ url: redis.url, keyPrefix, timeoutMs: 500 });
  await waitFor("the store to reach redis", () => store.ping().then(() => true), { timeoutMs: 5000 });
  return store;
}

describeProjectStoreContract(
  "Redis",
  {
    open: () => openConnected(newPrefix()),
    openPair: async () => {
      const prefix = newPrefix();
      return [await openConnected(prefix), await openConnected(prefix)];
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
    });
    expect(
      loadConfig({ STORE: "redis", REDIS_URL: "rediss://r:6380", REDIS_KEY_PREFIX: "x:", REDIS_TIMEOUT_MS: "50" })
        .redis,
    ).toEqual({ url: "rediss://r:6380", keyPrefix: "x:", timeoutMs: 50 });
    expect(() => loadConfig({ STORE: "redis", REDIS_URL: "redis://redis:6379", REDIS_TIMEOUT_MS: "soon" })).toThrow(
      'REDIS_TIMEOUT_MS="soon" is not an integer in [1, 60000]',
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
