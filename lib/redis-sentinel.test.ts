/**
 * The parts of lib/redis-sentinel.ts that need no server: Sentinel addresses and the master's
 * URL. Following a real failover: webapp/test/redis-failover.e2e.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { dataUrl, parseHostPort, SentinelRedis } from "./redis-sentinel.ts";

describe("Sentinel addresses and the master's URL", () => {
  test("host:port, [v6]:port; anything else is refused with an example", () => {
    expect(parseHostPort("redis-store-sentinel:26379")).toEqual({ host: "redis-store-sentinel", port: 26379 });
    expect(parseHostPort(" 10.0.0.7:26379 ")).toEqual({ host: "10.0.0.7", port: 26379 });
    expect(parseHostPort("[::1]:26380")).toEqual({ host: "::1", port: 26380 });
    for (const bad of ["sentinel", "sentinel:", ":26379", "::1:26379", "s:0", "s:65536", "s:26379x"])
      expect(() => parseHostPort(bad)).toThrow(`"${bad}" is not host:port (e.g. redis-sentinel:26379, [::1]:26379)`);
  });

  test("the master's URL keeps REDIS_URL's scheme, user, password and database; only host and port change", () => {
    expect(dataUrl("redis://webapp:p%40ss@redis-store-0.redis-store:6379/2", "redis-store-1.redis-store", 6380)).toBe(
      "redis://webapp:p%40ss@redis-store-1.redis-store:6380/2",
    );
    expect(dataUrl("rediss://u:p@old:6379", "::1", 7000)).toBe("rediss://u:p@[::1]:7000");
  });

  test("a client without Sentinels, or with a bad one, is refused at construction", () => {
    const base = { masterName: "portico", url: "redis://u:p@x:6379", timeoutMs: 100 };
    expect(() => new SentinelRedis({ ...base, sentinels: [] })).toThrow("no Sentinel address given");
    expect(() => new SentinelRedis({ ...base, sentinels: ["nope"] })).toThrow('"nope" is not host:port');
  });

  test("before any Sentinel answered, calls fail at once as unavailable, naming the Sentinels", async () => {
    const redis = new SentinelRedis({
      masterName: "portico",
      url: "redis://u:p@x:6379",
      timeoutMs: 100,
      sentinels: ["127.0.0.1:1"],
    });
    await expect(redis.call("GET", ["k"])).rejects.toThrow(
      'no master of "portico" known yet: asking the Sentinels at 127.0.0.1:1',
    );
    expect(redis.isUp).toBe(false);
    expect(redis.displayUrl).toBe('sentinel master "portico" via 127.0.0.1:1 (no master known yet)');
    redis.close();
  });
});
