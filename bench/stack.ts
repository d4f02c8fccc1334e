/**
 * The full-stack benchmark (`BENCH_STACK=1 make bench`, or `bun bench/stack.ts`): the same request
 * sent direct to one webapp, through the gateway, and through nginx (when installed) — the whole
 * local stack as `make dev` runs it (3 gateways, 3 webapps with SQLite, 3 rpcapps), printed as
 * ratios to the direct figure; then the rate-limit rows (ratelimit.ts). The proxy comparison with
 * trivial upstreams, CPU per request and pinning is bench/run.ts.
 *
 * Env: BENCH_DURATION_S (default 8), BENCH_CONNECTIONS (64), BENCH_THREADS (2).
 */
import { freePort } from "../scripts/stack/testing/ports.ts";
import { Stack, stackOptionsFromEnv } from "../scripts/stack/stack.ts";
import { startNginx } from "./nginx.ts";
import { stop, stopAll, tempDir } from "./procs.ts";
import { benchRateLimit, formatRateLimitBench } from "./ratelimit.ts";
import { runWrk, type WrkResult } from "./wrk.ts";
import { join } from "node:path";

const durationS = Number(process.env.BENCH_DURATION_S ?? 8);
const connections = Number(process.env.BENCH_CONNECTIONS ?? 64);
const threads = Number(process.env.BENCH_THREADS ?? 2);

if (!Bun.which("wrk")) {
  console.error("make bench needs wrk (Debian: apt-get install wrk)");
  process.exit(2);
}

const base = await freePort();
const stack = new Stack({
  ...stackOptionsFromEnv({}),
  gatewayPort: await freePort(),
  adminBasePort: base,
  webappBasePort: base + 10,
  rpcappBasePort: base + 20,
  rpcappHttpBasePort: base + 30,
  // Removed by stopAll() at the end (it grows by ~10k projects a second under load).
  dbPath: join(tempDir("stack"), "bench.sqlite"),
  // The benchmark measures the proxy path, not the shipped per-client limits on /verify and /projects,
  // nor the store's cap: at ~10k creates/s the default MAX_PROJECTS (100,000) is reached within the
  // first runs, and every later create would be a fast 507.
  env: {
    LOG_LEVEL: "warn",
    MAX_PROJECTS: "1000000000",
    VERIFY_RATE_LIMIT: "1000000",
    VERIFY_RATE_BURST: "1000000",
    PROJECTS_RATE_LIMIT: "1000000",
    PROJECTS_RATE_BURST: "1000000",
  },
  onLine: (name, line) => {
    if (process.env.BENCH_VERBOSE) console.error(`[${name}] ${line}`);
  },
});

// Ctrl-C: stop the stack and whatever wrk or nginx is running, by PID.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => void Promise.all([stack.stop(), stopAll()]).finally(() => process.exit(130)));
}

const rows: { name: string; result: WrkResult }[] = [];
const project = JSON.stringify({ title: "An awesome project" });
async function measure(name: string, url: string, body: string) {
  // A short warm-up so JIT and connection pools are in steady state.
  await runWrk({ url, method: "POST", body, connections, threads, durationS: 1 });
  const result = await runWrk({ url, method: "POST", body, connections, threads, durationS });
  rows.push({ name, result });
  console.error(`  ${name}: ${result.requestsPerSecond.toFixed(0)} req/s`);
}

try {
  console.error(
    `starting the stack (3 webapps, 3 rpcapps, 3 gateways); ${durationS}s per run, ${connections} connections…`,
  );
  await stack.start();
  const webapps = stack.endpoints("webapp").split(",");
  await measure("POST /projects direct (1 webapp)", `http://${webapps[0]}/projects`, project);
  await measure("POST /projects via gateway", `${stack.gatewayUrl}/projects`, project);
  if (Bun.which("nginx")) {
    const nginxPort = await freePort();
    const nginx = await startNginx(nginxPort, webapps);
    try {
      await measure("POST /projects via nginx", `http://127.0.0.1:${nginxPort}/projects`, project);
    } finally {
      await stop(nginx);
    }
  } else {
    console.error("  nginx not installed: skipping the nginx row");
  }
  await measure(
    "POST /verify/ via gateway (gRPC)",
    `${stack.gatewayUrl}/verify/`,
    JSON.stringify({ id: 121, token: "a$$" }),
  );
} finally {
  await stack.stop();
  await stopAll(); // nothing else runs now: this removes the store's folder
}

const direct = rows[0]!.result;
const pad = (s: string, n: number) => s.padEnd(n);
console.log(
  `\nPortico benchmark — ${new Date().toISOString().slice(0, 10)}, ${navigator.hardwareConcurrency} cores, Bun ${Bun.version}, wrk -c${connections} -t${threads} -d${durationS}s`,
);
console.log(
  `${pad("scenario", 36)} ${pad("req/s", 9)} ${pad("p50 ms", 8)} ${pad("p99 ms", 8)} ${pad("errors", 7)} ratio to direct`,
);
for (const { name, result } of rows) {
  console.log(
    `${pad(name, 36)} ${pad(result.requestsPerSecond.toFixed(0), 9)} ${pad(result.p50Ms.toFixed(2), 8)} ${pad(result.p99Ms.toFixed(2), 8)} ${pad(String(result.errors), 7)} ${(result.requestsPerSecond / direct.requestsPerSecond).toFixed(2)}x`,
  );
}

const failing = rows.filter((r) => r.result.errors > 0);
if (failing.length > 0)
  console.log(
    `- not comparable: ${failing.map((r) => `${r.name} (${r.result.errors} errors)`).join(", ")} — ` +
      "a failed request is answered faster than a served one; rerun with BENCH_VERBOSE=1 to see why",
  );

// Rate limiting: a Redis-limited route against an unlimited one, same gateway, same run.
if (process.env.BENCH_SKIP_RATELIMIT !== "1") {
  console.error("\nrate limiting: limited (Redis) vs unlimited route…");
  console.log(`\n${formatRateLimitBench(await benchRateLimit({ durationS, connections, threads }).finally(stopAll))}`);
}
