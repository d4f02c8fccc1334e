/**
 * Two real webapp processes with STORE=redis on one redis-server, as the replicas run in the
 * cluster: they share projects and ids, and a Redis outage gives quick 503s (never a hang, never
 * a 500) and a failing /readyz, until Redis is back — which they notice by themselves.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import {
  requireBinary,
  spawnService,
  stopAll,
  waitFor,
  waitForHttp,
  type Spawned,
} from "../../scripts/stack/testing/processes.ts";
import { TestRedis } from "../../scripts/stack/testing/redis.ts";
import { expectProblem } from "./fixture.ts";
import { postProject as post, type Replica, startReplicas } from "./replicas.ts";

const hasRedis = requireBinary("redis-server");
/**
 * Long enough that "answered at once" (a few ms) and "waited out the timeout" stay apart on a
 * loaded machine: a request that must not wait on Redis is bounded by it, and a 250 ms stall of
 * this process once failed such a bound.
 */
const REDIS_TIMEOUT_MS = 1_000;
/** Slack on a busy 2-core machine between "Redis timed out" and the response arriving here. */
const SLACK_MS = 750;
let redis: TestRedis;
let replicas: Replica[] = [];

const redisEnv = (redisUrl: string) => ({
  STORE: "redis",
  REDIS_URL: redisUrl,
  REDIS_KEY_PREFIX: "e2e:",
  REDIS_TIMEOUT_MS: String(REDIS_TIMEOUT_MS),
});

function startWebapp(instance: string, port: number, redisUrl: string): Spawned {
  return spawnService(
    "webapp",
    { HOST: "127.0.0.1", PORT: String(port), INSTANCE_ID: instance, ...redisEnv(redisUrl) },
    instance,
  );
}

beforeAll(async () => {
  if (!hasRedis) return;
  redis = await TestRedis.start();
  replicas = await startReplicas("webapp-redis", redisEnv(redis.url));
}, 30_000); // processes start slowly on a busy 2-core machine

afterAll(() => stopAll());

/** The answer and how long it took; a hang shows up as a 5 s client timeout. */
async function timedFetch(url: string, init?: RequestInit): Promise<{ res: Response; ms: number }> {
  const start = performance.now();
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(5000) });
  return { res, ms: performance.now() - start };
}

/** create, get and list on one replica: each must be a 503 problem with Retry-After; returns the slowest. */
async function expectStoreUnavailable(url: string, knownId: number): Promise<number> {
  const calls = [
    timedFetch(`${url}/projects`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"title":"during the outage"}',
    }),
    timedFetch(`${url}/projects/${knownId}`),
    timedFetch(`${url}/projects?limit=5`),
  ];
  let slowest = 0;
  for (const { res, ms } of await Promise.all(calls)) {
    expect(res.headers.get("retry-after")).toBe("1");
    expect((await expectProblem(res, 503)).detail).toBe("the project store is unavailable; retry shortly");
    slowest = Math.max(slowest, ms);
  }
  return slowest;
}

describe.skipIf(!hasRedis)("two webapp replicas with STORE=redis on one Redis", () => {
  test("a project created through one replica is read and listed through the other", async () => {
    const [a, b] = replicas as [Replica, Replica];
    const created = await post(a.url, "An awesome project");
    expect(created.status).toBe(201);
    expect(created.headers.get("x-served-by")).toBe(a.instance);
    const project = await created.json();
    expect(project).toMatchObject({ url: "Project-An awesome project", title: "An awesome project" });

    const read = await fetch(`${b.url}/projects/${project.id}`);
    expect(read.headers.get("x-served-by")).toBe(b.instance);
    expect(await read.json()).toEqual(project);
    const listed = await (await fetch(`${b.url}/projects?after=${project.id - 1}&limit=1`)).json();
    expect(listed.items).toEqual([project]);
  });

  test("100 concurrent creates split across both replicas get 100 distinct ids, all listed in order", async () => {
    const responses = await Promise.all(
      Array.from({ length: 100 }, (_, i) => post(replicas[i % 2]!.url, `concurrent ${i}`)),
    );
    expect(responses.map((r) => r.status)).toEqual(Array(100).fill(201));
    const ids = await Promise.all(responses.map(async (r) => ((await r.json()) as { id: number }).id));
    expect(new Set(ids).size).toBe(100);
    const listed = await (await fetch(`${replicas[0]!.url}/projects?limit=100&after=${Math.min(...ids) - 1}`)).json();
    expect(listed.items.map((p: { id: number }) => p.id)).toEqual([...ids].sort((x, y) => x - y));
  });

  test("Redis stopped: create, get and list answer 503 with Retry-After within the timeout, /readyz 503; resumed, both serve again with every project", async () => {
    const kept = await (await post(replicas[0]!.url, "kept through the outage")).json();
    redis.pause(); // connections stay open, nothing answers: each replica's first call waits out the timeout
    try {
      const first = await Promise.all(replicas.map((r) => expectStoreUnavailable(r.url, kept.id)));
      expect(first).toHaveLength(2);
      // Against REDIS_TIMEOUT_MS: the timeout, plus the grace turn BoundedRedis gives a late timer
      // (a quarter of it), plus SLACK_MS.
      for (const ms of first) expect(ms).toBeLessThan(REDIS_TIMEOUT_MS * 1.25 + SLACK_MS);
      // Now known down: answered without waiting on Redis, so under the timeout a wait would cost
      // (the whole REDIS_TIMEOUT_MS is the margin for the requests on a busy machine).
      for (const r of replicas) expect(await expectStoreUnavailable(r.url, kept.id)).toBeLessThan(REDIS_TIMEOUT_MS);
      for (const r of replicas) {
        const { res, ms } = await timedFetch(`${r.url}/readyz`);
        expect((await expectProblem(res, 503)).detail).toBe("the project store does not answer");
        expect(ms).toBeLessThan(REDIS_TIMEOUT_MS);
        expect((await fetch(`${r.url}/healthz`)).status).toBe(200); // alive: no restart for a Redis outage
      }
    } finally {
      redis.resume();
    }
    for (const r of replicas) await waitForHttp(`${r.url}/readyz`, r.proc, 5000);
    for (const r of replicas) expect(await (await fetch(`${r.url}/projects/${kept.id}`)).json()).toEqual(kept);
    expect((await post(replicas[1]!.url, "after the outage")).status).toBe(201);
    expect(
      replicas[0]!.proc.lines.some((l) => l.includes('"msg":"project store: redis unavailable, answering 503"')),
    ).toBe(true);
  });

  test("Redis killed: 503 at once; restarted on its port, both replicas serve again by themselves", async () => {
    await redis.kill();
    try {
      for (const r of replicas) {
        // The reset connection may reach a replica a moment after the kill; no answer may wait on Redis.
        await waitFor(`${r.instance} to answer 503`, async () => (await fetch(`${r.url}/readyz`)).status === 503, {
          timeoutMs: 2000,
        });
        expect(await expectStoreUnavailable(r.url, 1)).toBeLessThan(REDIS_TIMEOUT_MS);
      }
    } finally {
      await redis.restart(); // empty: this test's Redis keeps nothing on disk
    }
    for (const r of replicas) await waitForHttp(`${r.url}/readyz`, r.proc, 5000);
    const res = await post(replicas[0]!.url, "after the restart");
    expect(res.status).toBe(201);
    expect(await (await fetch(`${replicas[1]!.url}/projects/${(await res.json()).id}`)).json()).toMatchObject({
      title: "after the restart",
    });
  });
});

describe.skipIf(!hasRedis)("start-up with STORE=redis", () => {
  test("started before Redis: /readyz 503 (alive) until Redis appears, then ready without a restart", async () => {
    const [port, redisPort] = [await freePort(), await freePort()];
    const proc = startWebapp("webapp-redis-early", port, `redis://127.0.0.1:${redisPort}`);
    const url = `http://127.0.0.1:${port}`;
    await waitFor("the webapp to listen", async () => (await fetch(`${url}/healthz`)).status === 200, { proc });
    expect((await fetch(`${url}/readyz`)).status).toBe(503);
    expect((await post(url, "too early")).status).toBe(503);
    const late = await TestRedis.start(redisPort);
    await waitForHttp(`${url}/readyz`, proc, 5000);
    expect((await post(url, "in time")).status).toBe(201);
    await late.kill();
  });

  test("STORE=redis without REDIS_URL stops the process with exit 1 and a message naming REDIS_URL", async () => {
    const proc = spawnService("webapp", { PORT: "0", STORE: "redis", REDIS_URL: "" }, "webapp-no-redis-url");
    expect(await proc.exited).toBe(1);
    await waitFor("the start-up error line", () => proc.lines.some((l) => l.includes("STORE=redis needs REDIS_URL")), {
      timeoutMs: 2000,
    });
  });
});
