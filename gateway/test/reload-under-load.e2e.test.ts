/**
 * A config reload every 200 ms under a steady load: not one request may fail. Each reload
 * rewrites routes.yaml with a harmless change and sends SIGHUP (main.ts reloads on SIGHUP and on
 * a change of the file; SIGHUP makes each reload happen now rather than after the watch's
 * debounce). The changes alternate between a route's timeout (the upstream is kept across the
 * reload) and the upstream's default timeout (the upstream is rebuilt: new endpoints, new
 * connection pool, the old one retired after the longest route timeout — config/reload.ts,
 * Gateway.reload). Reloads applied are read from the admin API (/config → reload.reloads) and
 * the gateway's "config reloaded" log lines.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { stopAll, testTempDir, waitFor } from "../../scripts/stack/testing/processes.ts";
import { ensureLocalPki } from "../../scripts/tls/pki.ts";
import type { ReloadStatus } from "../src/config/reload.ts";
import { removeTempFiles } from "./resilience-harness.ts";
import { type SpyGateway, spyRoutesYaml, startSpyGateway } from "./spy/spy-gateway.ts";
import { UpstreamSpy } from "./spy/upstream-spy.ts";

const LOAD_MS = 5_000;
const RELOAD_EVERY_MS = 200;
const WORKERS = 4;
/** Each worker sends one request per slot: WORKERS × 1000 / SLOT_MS ≈ 200 requests/s. */
const SLOT_MS = 20;

let spy: UpstreamSpy;
let gw: SpyGateway;

beforeAll(async () => {
  spy = await UpstreamSpy.start();
  gw = await startSpyGateway("gateway-reload-load", spy, { timeoutMs: 2_000 });
}, 30_000);

afterAll(async () => {
  await stopAll();
  spy?.stop();
  removeTempFiles();
});

/** The n-th config: route timeout and upstream timeout moved by turns (both harmless here). */
function configFor(n: number): string {
  const routeTimeout = 2_000 + (n % 2);
  const upstreamTimeout = 10_000 + (Math.floor(n / 2) % 2);
  return spyRoutesYaml(spy, { timeoutMs: routeTimeout }).replace(
    "    protocol: http\n",
    `    protocol: http\n    timeoutMs: ${upstreamTimeout}\n`,
  );
}

async function reloadStatus(): Promise<ReloadStatus> {
  return ((await (await fetch(`${gw.adminUrl}/config`)).json()) as { reload: ReloadStatus }).reload;
}

interface Result {
  ok: boolean;
  status: number;
  error?: string;
}

test("a reload every 200 ms during 5 s of ~200 req/s keep-alive load: 0 failed requests", async () => {
  const before = await reloadStatus();
  const results: Result[] = [];
  const until = performance.now() + LOAD_MS;

  const worker = async (w: number) => {
    let slot = performance.now();
    for (let i = 0; performance.now() < until; i++) {
      const post = (i + w) % 2 === 0;
      try {
        const res = await fetch(`${gw.url}/spy/load/${w}/${i}`, {
          method: post ? "POST" : "GET",
          ...(post ? { body: JSON.stringify({ w, i }), headers: { "content-type": "application/json" } } : {}),
          signal: AbortSignal.timeout(5_000),
        });
        const body = (await res.json()) as { target?: string };
        const ok = res.status === 200 && body.target === `/spy/load/${w}/${i}`;
        results.push({ ok, status: res.status, ...(ok ? {} : { error: JSON.stringify(body).slice(0, 200) }) });
      } catch (err) {
        results.push({ ok: false, status: 0, error: (err as Error).message });
      }
      slot += SLOT_MS;
      const wait = slot - performance.now();
      if (wait > 0) await Bun.sleep(wait);
    }
  };

  let written = 0;
  const reloader = (async () => {
    while (performance.now() < until) {
      await Bun.sleep(RELOAD_EVERY_MS);
      written++;
      // Written aside and renamed over (as editors and the kubelet do): a reload never reads half a file.
      writeFileSync(`${gw.routesFile}.next`, configFor(written));
      renameSync(`${gw.routesFile}.next`, gw.routesFile);
      gw.proc.proc.kill("SIGHUP");
    }
  })();

  const started = performance.now();
  await Promise.all([...Array.from({ length: WORKERS }, (_, w) => worker(w)), reloader]);
  const seconds = (performance.now() - started) / 1000;
  // The last reload settles (SIGHUP is handled at once; the watch's debounce is 150 ms).
  await Bun.sleep(400);
  const after = await reloadStatus();
  const applied = after.reloads - before.reloads;
  const logged = gw.proc.lines.filter((l) => l.includes('"msg":"config reloaded"')).length;
  const inForce = (await (await fetch(`${gw.adminUrl}/config/source`)).text()) === configFor(written);

  const failed = results.filter((r) => !r.ok);
  const byStatus: Record<string, number> = {};
  for (const r of results) byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
  console.log(
    `reload under load: ${results.length} requests in ${seconds.toFixed(1)} s (${(results.length / seconds).toFixed(0)} req/s), ` +
      `${failed.length} failed, by status ${JSON.stringify(byStatus)}; ${written} config writes + SIGHUP, ` +
      `${applied} reloads applied (admin API), ${logged} "config reloaded" log lines, ${after.failures - before.failures} rejected; last config in force: ${inForce}`,
  );
  if (failed.length) console.log("first failures:", failed.slice(0, 5));

  expect(failed).toEqual([]);
  expect(results.length).toBeGreaterThan((0.6 * (WORKERS * LOAD_MS)) / SLOT_MS);
  // Each SIGHUP applies the file (a forced reload); the watch then finds nothing new. None is rejected.
  expect(applied).toBeGreaterThanOrEqual(written - 1);
  expect(after.failures - before.failures).toBe(0);
  expect(inForce).toBe(true);
  expect(gw.proc.proc.exitCode).toBeNull();
}, 30_000);

test("a reload that adds a tls block to a gateway started without one is refused: no redirect to a port nothing serves", async () => {
  const pkiDir = join(testTempDir("reload-tls"), "pki");
  const pki = await ensureLocalPki(pkiDir);
  try {
    const before = await reloadStatus();
    const withTls = `${configFor(0)}tls:\n  redirectHttp: true\n  certificates:\n    - { cert: ${pki.dir}/edge.crt, key: ${pki.dir}/edge.key }\n`;
    writeFileSync(`${gw.routesFile}.next`, withTls);
    renameSync(`${gw.routesFile}.next`, gw.routesFile);
    gw.proc.proc.kill("SIGHUP");
    await waitFor(
      "the reload to be refused",
      async () => (await reloadStatus()).lastError?.at !== before.lastError?.at,
      {
        timeoutMs: 5_000,
        intervalMs: 50,
      },
    );
    const after = await reloadStatus();
    expect(after.lastError?.message).toContain("restart the gateway to serve HTTPS");
    expect(after.reloads).toBe(before.reloads);
    // Still plain HTTP, no 308 to the HTTPS port.
    const res = await fetch(`http://127.0.0.1:${gw.port}/spy/after-tls`, { redirect: "manual" });
    expect(res.status).toBe(200);
  } finally {
    writeFileSync(gw.routesFile, configFor(0));
  }
});
