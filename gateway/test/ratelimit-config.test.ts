/**
 * The `rateLimit` keys of routes.yaml (defaults, both spellings of a period, errors that name
 * file:line and field) and the peer count the `local` fallback divides by.
 */
import { afterAll, describe, expect, test } from "bun:test";
import pino from "pino";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { requireBinary } from "../../scripts/stack/testing/processes.ts";
import { isListening, startLocalRedis } from "../../scripts/stack/redis.ts";
import { ConfigError, parseConfig } from "../src/config/load.ts";
import { PeerDirectory } from "../src/peers.ts";
import { PeerCounter } from "../src/ratelimit/peers.ts";

const base = `upstreams:
  stub:
    protocol: http
    endpoints: 127.0.0.1:9
routes:
  - name: api
    path: /api
    upstream: stub
`;

const load = (extra: string) => parseConfig(base + extra, "routes.yaml", {});
function problemsOf(extra: string) {
  try {
    load(extra);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("expected the config to be rejected");
}
const lineOf = (extra: string, needle: string) => (base + extra).split("\n").findIndex((l) => l.includes(needle)) + 1;

describe("rateLimit in routes.yaml", () => {
  test("one policy: burst defaults to the rate, the key to the client IP, and the name to the key type", () => {
    const config = load("    rateLimit: { rate: 100, period: 1m }\n");
    expect(config.routes[0]!.rateLimit).toEqual({
      policies: [
        {
          name: "ip",
          rate: 100,
          periodMs: 60_000,
          burst: 100,
          key: { type: "ip" },
          intervalUs: 600_000,
          headerItem: '"ip";q=100;w=60',
          quotedName: '"ip"',
        },
      ],
      policyHeader: '"ip";q=100;w=60',
    });
  });

  test("a list of policies, periods in either spelling, header keys matched case-insensitively", () => {
    const config = load(`    rateLimit:
      - { name: burst, rate: 10, periodMs: 500, burst: 3 }
      - { name: daily, rate: 1000, period: 24h, key: { type: header, header: X-API-Key } }
      - { rate: 5, period: 1s, key: { type: global } }
`);
    const policies = config.routes[0]!.rateLimit!.policies;
    expect(policies.map((p) => [p.name, p.periodMs, p.burst, p.key])).toEqual([
      ["burst", 500, 3, { type: "ip" }],
      ["daily", 86_400_000, 1000, { type: "header", header: "x-api-key" }],
      ["global", 1000, 5, { type: "global" }],
    ]);
    // A sub-second period is stated per whole second: 10 per 500 ms is 20 per 1 s.
    expect(config.routes[0]!.rateLimit!.policyHeader).toBe(
      '"burst";q=20;w=1, "daily";q=1000;w=86400, "global";q=5;w=1',
    );
  });

  test("a period of fractional seconds is stated over whole seconds, rounded down: never more than is admitted", () => {
    const header = (rate: number, periodMs: number) =>
      load(`    rateLimit: { rate: ${rate}, periodMs: ${periodMs} }\n`).routes[0]!.rateLimit!.policyHeader;
    expect(header(1, 400)).toBe('"ip";q=2;w=1'); // 2.5 per second admitted
    expect(header(7, 1500)).toBe('"ip";q=9;w=2'); // 9.33 per 2 s
    expect(header(1, 1400)).toBe('"ip";q=1;w=2'); // 1.43 per 2 s; q=1;w=1 would claim more
    expect(header(3, 3000)).toBe('"ip";q=3;w=3');
  });

  test("routes without rateLimit are unlimited, and the top-level section has its defaults", () => {
    const config = load("");
    expect(config.routes[0]!.rateLimit).toBeUndefined();
    expect(config.rateLimit).toEqual({
      fallback: "local",
      redisTimeoutMs: 100,
      keyPrefix: "portico:rl:",
      replicas: "auto",
    });
    expect(load("rateLimit: { fallback: closed, replicas: 3 }\n").rateLimit).toMatchObject({
      fallback: "closed",
      replicas: 3,
    });
  });

  test("a misspelt key inside a policy list is named with its line and a suggestion", () => {
    const extra = "    rateLimit:\n      - rate: 10\n        period: 1m\n        burts: 5\n";
    expect(problemsOf(extra)).toEqual([
      expect.objectContaining({
        line: lineOf(extra, "burts"),
        field: "routes[0].rateLimit[0].burts",
        message: expect.stringContaining('did you mean "burst"'),
      }),
    ]);
  });

  test("a bad period, an unknown fallback and a header key without its header are each reported at their line", () => {
    expect(problemsOf("    rateLimit: { rate: 10, period: 1 minute }\n")[0]).toMatchObject({
      field: "routes[0].rateLimit.period",
    });
    expect(problemsOf("rateLimit:\n  fallback: opne\n")[0]).toMatchObject({
      line: 10,
      field: "rateLimit.fallback",
      message: 'must be one of "local", "open", "closed"; got "opne"',
    });
    const extra = "    rateLimit:\n      rate: 10\n      period: 1m\n      key: { type: header }\n";
    expect(problemsOf(extra)).toEqual([
      expect.objectContaining({
        line: lineOf(extra, "key:"),
        field: "routes[0].rateLimit.key",
        message: expect.stringContaining('needs "header"'),
      }),
    ]);
  });

  test("a policy needs exactly one period, and distinct names", () => {
    expect(problemsOf("    rateLimit: { rate: 10 }\n")[0]!.message).toContain('needs "period"');
    expect(problemsOf("    rateLimit: { rate: 10, period: 1s, periodMs: 1000 }\n")[0]!.message).toContain("not both");
    expect(problemsOf("    rateLimit: [{ rate: 10, period: 1s }, { rate: 100, period: 1m }]\n")[0]).toMatchObject({
      field: "routes[0].rateLimit[1].key",
      message: expect.stringContaining('already named "ip"'),
    });
  });
});

describe("live gateway replicas for the local fallback", () => {
  const log = pino({ level: "silent" });
  const servers: ReturnType<typeof Bun.serve>[] = [];
  afterAll(() =>
    servers.forEach((s) => {
      s.stop(true);
    }),
  );

  test("counts the peers whose /readyz answers 200, and at least 1", async () => {
    let readyB = true;
    const serve = async (ready: () => boolean) => {
      const server = Bun.serve({
        hostname: "127.0.0.1",
        port: await freePort(),
        fetch: () => new Response(null, { status: ready() ? 200 : 503 }),
      });
      servers.push(server);
      return `http://127.0.0.1:${server.port}`;
    };
    const urls = [await serve(() => true), await serve(() => readyB), `http://127.0.0.1:${await freePort()}`];
    const peers = new PeerCounter({ directory: new PeerDirectory({ urls }), log, intervalMs: 60_000 });
    expect(await peers.refresh()).toBe(2);
    readyB = false; // draining
    expect(await peers.refresh()).toBe(1);
    peers.close();

    const nobody = new PeerCounter({
      directory: new PeerDirectory({ urls: [`http://127.0.0.1:${await freePort()}`] }),
      log,
      intervalMs: 60_000,
    });
    expect(await nobody.refresh()).toBe(1);
    nobody.close();
  });

  test("counts the addresses a DNS name resolves to (a headless Service's ready pods)", async () => {
    const peers = new PeerCounter({ directory: new PeerDirectory({ dnsName: "localhost" }), log });
    expect(await peers.refresh()).toBeGreaterThanOrEqual(1);
    peers.close();
    expect(new PeerCounter({ directory: new PeerDirectory({}), log }).count).toBe(1);
  });
});

describe.skipIf(!requireBinary("redis-server"))("the redis-server `make dev` starts", () => {
  test("listens on the port it is given, stops with the stack, and refuses a port already in use", async () => {
    const port = await freePort();
    const redis = await startLocalRedis({ port });
    try {
      expect(redis.url).toBe(`redis://127.0.0.1:${port}`);
      expect(await isListening(port)).toBe(true);
      await expect(startLocalRedis({ port })).rejects.toThrow(`port ${port} is already in use`);
    } finally {
      await redis.stop();
    }
    expect(await isListening(port)).toBe(false);
  });
});
