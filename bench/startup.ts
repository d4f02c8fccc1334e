/**
 * Start-up time and memory of the compiled gateway (dist/gateway, `make build`), lean config:
 *   start    exec → first proxied 2xx (POST /projects polled every 2 ms), median of `trials`
 *   idle     RSS 1 s after that first 2xx, median of the same starts (it moves by ~2 MiB between
 *            starts of one binary)
 *   load     highest RSS sampled every 100 ms during a 64-connection wrk run
 *   after    RSS 2 s and 5 s after the load ends (GC_WHEN_IDLE collects garbage ~0.5 s after it;
 *            what that frees leaves the process over the next seconds), and 32 s after, once 30 s
 *            of quiet made it drop its compiled code and free pages too (lib/idle-gc.ts)
 */
import { relative } from "node:path";
import type { Subprocess } from "bun";
import { postJson, PROJECT_BODY, preparePortico, spawnPortico } from "./portico.ts";
import { LOAD_CPU, median, PROXY_CPU, rssMiB, stop } from "./procs.ts";
import { runWrk, type WrkResult } from "./wrk.ts";

export interface StartupResult {
  binary: string;
  startMs: number[];
  medianStartMs: number;
  /** Each start's idle RSS. */
  idleRssEachMiB: number[];
  /** Their median. */
  idleRssMiB: number;
  loadRssMiB: number;
  afterRssMiB: number;
  after5sRssMiB: number;
  /** After GC_WHEN_IDLE's shrink (30 s of quiet). */
  afterQuietRssMiB: number;
  load: WrkResult;
}

async function firstProxied2xx(url: string, proc: Subprocess, timeoutMs = 15_000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`the compiled gateway exited (${proc.exitCode}) before answering`);
    try {
      if ((await fetch(`${url}/projects`, { ...postJson(PROJECT_BODY), signal: AbortSignal.timeout(500) })).ok) return;
    } catch {}
    await Bun.sleep(2);
  }
  throw new Error(`the compiled gateway did not proxy a request within ${timeoutMs} ms`);
}

export async function benchStartup(opts: {
  binary: string;
  upstreams: string[];
  durationS: number;
  trials?: number;
}): Promise<StartupResult> {
  const startMs: number[] = [];
  const idleRssEachMiB: number[] = [];
  const trials = opts.trials ?? 3;
  for (let trial = 1; trial <= trials; trial++) {
    const prepared = await preparePortico({
      flavour: { kind: "lean" },
      upstreams: opts.upstreams,
      binary: opts.binary,
      cpu: PROXY_CPU,
    });
    const t0 = performance.now();
    const proc = spawnPortico(prepared);
    try {
      await firstProxied2xx(prepared.url, proc);
      startMs.push(performance.now() - t0);
      await Bun.sleep(1000);
      idleRssEachMiB.push(rssMiB(proc.pid));
      if (trial < trials) continue;
      // The load, on the last start only.
      const idleRssMiB = median(idleRssEachMiB);
      let loadRssMiB = idleRssEachMiB.at(-1)!;
      const sampler = setInterval(() => {
        loadRssMiB = Math.max(loadRssMiB, rssMiB(proc.pid) || 0);
      }, 100);
      const load = await runWrk({
        url: `${prepared.url}/projects`,
        method: "POST",
        body: PROJECT_BODY,
        connections: 64,
        threads: 1,
        durationS: opts.durationS,
        cpu: LOAD_CPU,
      }).finally(() => clearInterval(sampler));
      await Bun.sleep(2000);
      const afterRssMiB = rssMiB(proc.pid);
      await Bun.sleep(3000);
      const after5sRssMiB = rssMiB(proc.pid);
      await Bun.sleep(27_000);
      return {
        // Relative to where the bench runs (the checkout): a result file names no machine's paths.
        binary: relative(process.cwd(), opts.binary),
        startMs,
        medianStartMs: median(startMs),
        idleRssEachMiB,
        idleRssMiB,
        loadRssMiB,
        afterRssMiB,
        after5sRssMiB,
        afterQuietRssMiB: rssMiB(proc.pid),
        load,
      };
    } finally {
      await stop(proc);
    }
  }
  throw new Error("no trials");
}
