/**
 * What rate limiting costs on the request path: the same gateway process serves an unlimited
 * route and a rate-limited one (a limit too high to refuse anything, so every request does the
 * full check), measured with wrk in the same run and printed as ratios to the unlimited route.
 * Rows: the limit kept in Redis (one EVALSHA per request) and, from a second gateway without
 * REDIS_URL, in memory.
 *
 * `bun bench/ratelimit.ts` runs it standalone (BENCH_DURATION_S, default 3; BENCH_CONNECTIONS 64;
 * BENCH_THREADS 2; BENCH_ROUNDS 2); `make bench` (bench/run.ts) can call `benchRateLimit()`.
 */
import { writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { freePort } from "../scripts/stack/testing/ports.ts";
import { isRedisInstalled, startLocalRedis } from "../scripts/stack/redis.ts";
import { spawn, stop, stopAll, stopAllOnSignals, tempDir } from "./procs.ts";
import { runWrk, type WrkResult } from "./wrk.ts";

const REPO_ROOT = resolve(import.meta.dir, "..");

export interface RateLimitBenchOptions {
  durationS: number;
  connections: number;
  threads: number;
  /** Runs per row, interleaved (unlimited, limited, unlimited, …) so that background load drifting during the run hits both alike; the figures are averaged. Default 2. */
  rounds?: number;
  /** Progress lines (stderr by default). */
  progress?: (line: string) => void;
}

export interface RateLimitBenchRow {
  name: string;
  result: WrkResult;
  /** Throughput relative to the unlimited route of the same gateway. */
  ratio: number;
}

export async function benchRateLimit(opts: RateLimitBenchOptions): Promise<RateLimitBenchRow[]> {
  const progress = opts.progress ?? ((line: string) => console.error(line));
  if (!Bun.which("wrk")) throw new Error("the rate-limit benchmark needs wrk (Debian: apt-get install wrk)");
  const stub = Bun.serve({ hostname: "127.0.0.1", port: await freePort(), fetch: () => new Response("ok") });
  // Removed with the gateways by procs.ts's stopAll() (the caller's, or the standalone run's below).
  const routesFile = join(tempDir("ratelimit"), "routes.yaml");
  // 1,000,000 per second is the most a policy may say: nothing is refused, everything is checked.
  writeFileSync(
    routesFile,
    `upstreams:
  stub: { protocol: http, endpoints: "127.0.0.1:${stub.port}" }
routes:
  - { name: unlimited, path: /unlimited, upstream: stub }
  - { name: limited, path: /limited, upstream: stub, rateLimit: { rate: 1000000, period: 1s, key: { type: ip } } }
`,
  );
  const processes: Subprocess[] = [];
  const redis = isRedisInstalled() ? await startLocalRedis({ port: await freePort() }) : undefined;
  const rows: { name: string; result: WrkResult }[] = [];
  try {
    /** Measures the pair of routes of one gateway, alternating, `rounds` times each. */
    const measure = async (pair: [name: string, url: string][]) => {
      const wrk = (url: string, durationS: number) =>
        runWrk({ url, connections: opts.connections, threads: opts.threads, durationS });
      for (const [, url] of pair) await wrk(url, 1); // warm-up: JIT, connection pools
      const runs = pair.map((): WrkResult[] => []);
      for (let round = 0; round < (opts.rounds ?? 2); round++) {
        for (const [i, [name, url]] of pair.entries()) {
          const result = await wrk(url, opts.durationS);
          runs[i]!.push(result);
          progress(`  ${name}: ${result.requestsPerSecond.toFixed(0)} req/s`);
        }
      }
      pair.forEach(([name], i) => {
        rows.push({ name, result: average(runs[i]!) });
      });
    };
    const start = async (redisUrl?: string) => {
      const [port, adminPort] = [await freePort(), await freePort()];
      const proc = spawn("gateway (rate-limit bench)", [process.execPath, "gateway/src/main.ts"], {
        cwd: REPO_ROOT,
        env: {
          ...process.env,
          HOST: "127.0.0.1",
          PORT: String(port),
          ADMIN_PORT: String(adminPort),
          ROUTES_FILE: routesFile,
          LOG_LEVEL: "warn",
          REDIS_URL: redisUrl ?? "",
        },
        stdout: "ignore",
        stderr: "inherit",
      });
      processes.push(proc);
      await waitReady(`http://127.0.0.1:${adminPort}/readyz`, proc);
      return `http://127.0.0.1:${port}`;
    };

    if (redis) {
      progress(
        `rate-limit benchmark: gateway with REDIS_URL; ${opts.durationS}s per run, ${opts.connections} connections…`,
      );
      const gateway = await start(redis.url);
      await measure([
        ["unlimited route", `${gateway}/unlimited`],
        ["limited route (Redis)", `${gateway}/limited`],
      ]);
    } else {
      progress("redis-server is not installed: measuring the in-memory limiter only");
    }
    const memoryGateway = await start();
    await measure([
      [redis ? "unlimited route (2nd gateway)" : "unlimited route", `${memoryGateway}/unlimited`],
      ["limited route (in memory)", `${memoryGateway}/limited`],
    ]);
  } finally {
    await Promise.all(processes.map((p) => stop(p)));
    await redis?.stop();
    stub.stop(true);
  }
  // Each limited row against the unlimited row of its own gateway process.
  let baseline = rows[0]!.result.requestsPerSecond;
  return rows.map(({ name, result }) => {
    if (name.startsWith("unlimited")) baseline = result.requestsPerSecond;
    return { name, result, ratio: result.requestsPerSecond / baseline };
  });
}

function average(results: WrkResult[]): WrkResult {
  const mean = (pick: (r: WrkResult) => number) => results.reduce((sum, r) => sum + pick(r), 0) / results.length;
  const sum = (pick: (r: WrkResult) => number) => results.reduce((total, r) => total + pick(r), 0);
  return {
    requestsPerSecond: mean((r) => r.requestsPerSecond),
    p50Ms: mean((r) => r.p50Ms),
    p99Ms: mean((r) => r.p99Ms),
    requests: sum((r) => r.requests),
    errors: sum((r) => r.errors),
  };
}

async function waitReady(url: string, proc: Subprocess, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.exitCode !== null) throw new Error(`the gateway exited (${proc.exitCode}) before it was ready`);
    try {
      if ((await fetch(url, { signal: AbortSignal.timeout(500) })).status === 200) return;
    } catch {}
    await Bun.sleep(50);
  }
  throw new Error(`${url} was not ready within ${timeoutMs} ms`);
}

export function formatRateLimitBench(rows: RateLimitBenchRow[]): string {
  const pad = (s: string, n: number) => s.padEnd(n);
  const lines = [
    `${pad("scenario", 32)} ${pad("req/s", 9)} ${pad("p50 ms", 8)} ${pad("p99 ms", 8)} ${pad("errors", 7)} ratio to unlimited`,
  ];
  for (const { name, result, ratio } of rows) {
    lines.push(
      `${pad(name, 32)} ${pad(result.requestsPerSecond.toFixed(0), 9)} ${pad(result.p50Ms.toFixed(2), 8)} ${pad(result.p99Ms.toFixed(2), 8)} ${pad(String(result.errors), 7)} ${ratio.toFixed(2)}x`,
    );
  }
  return lines.join("\n");
}

if (import.meta.main) {
  stopAllOnSignals();
  const rows = await benchRateLimit({
    durationS: Number(process.env.BENCH_DURATION_S ?? 3),
    connections: Number(process.env.BENCH_CONNECTIONS ?? 64),
    threads: Number(process.env.BENCH_THREADS ?? 2),
    rounds: Number(process.env.BENCH_ROUNDS ?? 2),
  }).finally(stopAll);
  console.log(`\nPortico rate-limit benchmark — ${navigator.hardwareConcurrency} cores, Bun ${Bun.version}`);
  console.log(formatRateLimitBench(rows));
}
