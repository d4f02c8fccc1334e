/**
 * The acceptance test of the Sentinel-following store, with real processes on 127.0.0.1: three
 * redis-server (master + 2 replicas) and three Sentinels as in k8s/redis-store.yaml (its ACL users
 * included), and a real webapp with STORE=redis and REDIS_SENTINELS. A bounded load of POST
 * /projects runs while the master is killed with SIGKILL; the Sentinels promote a replica and the
 * webapp follows by itself. Every project whose create was acknowledged (201) must be readable
 * afterwards: the create WAITs for a replica, so an acknowledged project is on two nodes and
 * survives the loss of one. The figures are printed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import {
  requireBinary,
  type Spawned,
  spawnService,
  stopAll,
  waitFor,
  waitForHttp,
} from "../../scripts/stack/testing/processes.ts";
import { TestSentinelSet } from "./redis-sentinels.ts";

const hasRedis = requireBinary("redis-server");
const DOWN_AFTER_MS = 1000;
let set: TestSentinelSet;
let webapp: { proc: Spawned; url: string };

beforeAll(async () => {
  if (!hasRedis) return;
  set = await TestSentinelSet.start({ downAfterMs: DOWN_AFTER_MS, failoverTimeoutMs: 3000 });
  const port = await freePort();
  const proc = spawnService(
    "webapp",
    {
      HOST: "127.0.0.1",
      PORT: String(port),
      INSTANCE_ID: "webapp-sentinel",
      STORE: "redis",
      REDIS_URL: set.webappUrl,
      REDIS_SENTINELS: set.sentinelList,
      REDIS_SENTINEL_MASTER: set.masterName,
      REDIS_SENTINEL_PASSWORD: set.secret["sentinel-password"],
      REDIS_TIMEOUT_MS: "500",
    },
    "webapp-sentinel",
  );
  webapp = { proc, url: `http://127.0.0.1:${port}` };
  await waitForHttp(`${webapp.url}/readyz`, proc, 15_000);
}, 60_000); // a Sentinel set takes a few seconds to discover itself

afterAll(() => stopAll());

interface LoadResult {
  acknowledged: { id: number; title: string; at: number }[];
  /** Status → count of the creates that were not acknowledged. */
  failed: Map<number, number>;
  /** Time of each failed create. */
  failedAt: number[];
}

/**
 * `workers` loops of POST /projects until `stop()` says so (or `maxMs`), each request bounded
 * by a 3 s client timeout; a short pause after a failure keeps the loop from spinning.
 */
async function createLoad(
  url: string,
  label: string,
  opts: { workers: number; maxMs: number; stop: (r: LoadResult) => boolean },
): Promise<LoadResult> {
  const result: LoadResult = { acknowledged: [], failed: new Map(), failedAt: [] };
  const deadline = performance.now() + opts.maxMs;
  let n = 0;
  await Promise.all(
    Array.from({ length: opts.workers }, async () => {
      while (performance.now() < deadline && !opts.stop(result)) {
        const title = `${label} ${++n}`;
        let status = 0;
        try {
          const res = await fetch(`${url}/projects`, {
            method: "POST",
            headers: { "content-type": "application/json" },
            body: JSON.stringify({ title }),
            signal: AbortSignal.timeout(3000),
          });
          status = res.status;
          const body = (await res.json()) as { id?: number };
          if (status === 201) {
            result.acknowledged.push({ id: body.id!, title, at: performance.now() });
            continue;
          }
        } catch {
          // no answer: status 0
        }
        result.failed.set(status, (result.failed.get(status) ?? 0) + 1);
        result.failedAt.push(performance.now());
        await Bun.sleep(20);
      }
    }),
  );
  return result;
}

/** GETs every acknowledged project; returns those missing or different. */
async function lostProjects(url: string, projects: LoadResult["acknowledged"]): Promise<string[]> {
  const lost: string[] = [];
  for (let i = 0; i < projects.length; i += 16) {
    await Promise.all(
      projects.slice(i, i + 16).map(async ({ id, title }) => {
        // A 503 says the store could not answer then (the failover may still be settling), not
        // that the project is gone: asked again, as its Retry-After says, for up to 10 s.
        let res: Response;
        const until = performance.now() + 10_000;
        for (;;) {
          res = await fetch(`${url}/projects/${id}`, { signal: AbortSignal.timeout(3000) });
          if (res.status !== 503 || performance.now() > until) break;
          await res.body?.cancel();
          await Bun.sleep(250);
        }
        const body = (await res.json()) as { title?: string };
        if (res.status !== 200 || body.title !== title) lost.push(`${id} (${res.status}, ${body.title ?? "-"})`);
      }),
    );
  }
  return lost;
}

const counts = (m: Map<number, number>) =>
  [...m].map(([status, n]) => `${n}×${status === 0 ? "no answer" : status}`).join(", ") || "none";

describe.skipIf(!hasRedis)("webapp behind Redis Sentinels (3 redis-server, 3 sentinels, quorum 2)", () => {
  test("master killed mid-load: the webapp follows the promoted replica by itself and every acknowledged project is readable", async () => {
    const oldMaster = await set.masterPort();
    let killedAt = Infinity;
    let promotedAt = Infinity;
    let acknowledged = 0;
    // Kill once 150 creates went through; stop 2 s after the first create acknowledged once the
    // sentinels name a new master. (Not merely after the kill: an answer the old master wrote just
    // before SIGKILL can reach the webapp after it, and the load then stopped before any failover.)
    const killing = (async () => {
      const deadline = performance.now() + 10_000;
      while (acknowledged < 150 && performance.now() < deadline) await Bun.sleep(10);
      await set.kill(oldMaster);
      killedAt = performance.now();
      const promotionDeadline = killedAt + 20_000;
      while (performance.now() < promotionDeadline) {
        if ((await set.masterPort().catch(() => oldMaster)) !== oldMaster) {
          promotedAt = performance.now();
          break;
        }
        await Bun.sleep(50);
      }
    })();
    const result = await createLoad(webapp.url, "failover", {
      workers: 4,
      maxMs: 30_000,
      stop: (r) => {
        acknowledged = r.acknowledged.length;
        const after = r.acknowledged.find((p) => p.at > promotedAt);
        return after !== undefined && performance.now() - after.at > 2000;
      },
    });
    await killing;

    const newMaster = await set.masterPort();
    // Acknowledged once the sentinels named the new master: written there, not an answer the old
    // master sent just before the kill.
    const firstAfter = result.acknowledged.find((p) => p.at > promotedAt);
    const failoverMs = firstAfter ? firstAfter.at - killedAt : Number.NaN;
    const lost = await lostProjects(webapp.url, result.acknowledged);
    const failedTotal = result.failedAt.length;
    console.log(
      `redis failover (SIGKILL master ${oldMaster} → ${newMaster}, down-after ${DOWN_AFTER_MS} ms, WAIT 1 replica): ` +
        `acknowledged ${result.acknowledged.length}, failed during failover ${failedTotal} (${counts(result.failed)}), ` +
        `lost ${lost.length}; the sentinels named the new master ${(promotedAt - killedAt).toFixed(0)} ms after the kill, ` +
        `creates acknowledged again after ${failoverMs.toFixed(0)} ms`,
    );
    expect(newMaster).not.toBe(oldMaster);
    expect(firstAfter).toBeDefined();
    expect(lost).toEqual([]);
    // The failures are the store being unavailable (503), never an error or a hang.
    expect([...result.failed.keys()].filter((s) => s !== 503)).toEqual([]);
    // Ids stay unique: the promoted replica's counter holds every acknowledged id.
    const ids = result.acknowledged.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    // The line comes through the webapp's stdout pipe, which a busy machine may deliver late.
    const followed = () =>
      webapp.proc.lines.some(
        (l) =>
          l.includes('"msg":"project store: following the master the Sentinels name"') && l.includes(`:${newMaster}"`),
      );
    await waitFor("the webapp's log to say it follows the new master", followed, { timeoutMs: 5_000 }).catch(() => {});
    // On failure, what it did say about masters, to tell a late line from a missing one.
    const said = webapp.proc.lines.filter((l) => l.includes("master"));
    expect({ newMaster, followed: followed(), said: followed() ? [] : said }).toEqual({
      newMaster,
      followed: true,
      said: [],
    });
  }, 60_000);
});
