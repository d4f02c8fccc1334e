/**
 * `make bench`: what the gateway costs as a proxy, next to nginx, HAProxy and the leanest Bun
 * proxy, all in one run against the same trivial upstreams (bench/upstream.ts), so that the
 * upstream is never the bottleneck and every row measures the proxy. Targets are interleaved over
 * rounds (A B C … A B C …) so that load from other users of the machine hits all of them alike.
 * Per target: req/s, p50/p99 at 64 connections, p99 at 8, errors, throughput relative to nginx, CPU
 * µs per request of the proxy and of the upstreams, and upstream connections opened during a run.
 * Then the compiled gateway's start-up time and memory. bench/README.md explains every column.
 *
 * Env: BENCH_SECONDS (5) per run, BENCH_ROUNDS (2), BENCH_ONLY (comma-separated target keys, see
 * TARGET_KEYS), BENCH_BUILD=1 (build dist/gateway first), BENCH_STACK=1 (then the full-stack run,
 * bench/stack.ts), BENCH_SERVICE_ROOT (run gateway and rpcapp from another checkout, portico.ts).
 */
import { mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { redisServerArgv } from "../scripts/stack/redis.ts";
import { ensureLocalPki } from "../scripts/tls/pki.ts";
import { freePort } from "../scripts/stack/testing/ports.ts";
import { runH2loadGrpc } from "./h2load.ts";
import { startHaproxy } from "./haproxy.ts";
import { type BenchTls, startNginx } from "./nginx.ts";
import {
  postJson,
  PROJECT_BODY,
  SERVICE_ROOT,
  startOtlpSink,
  startPortico,
  startRpcapp,
  VERIFY_BODY,
} from "./portico.ts";
import {
  cpuSeconds,
  holdStill,
  LOAD_CPU,
  PROXY_CPU,
  pinned,
  pinningNote,
  spawn,
  stopAll,
  stopAllOnSignals,
  tempDir,
  waitHttp,
  waitUntil,
} from "./procs.ts";
import {
  comparable,
  formatMeta,
  formatStartup,
  formatTable,
  markdown,
  type Meta,
  type Row,
  type Run,
  summarize,
} from "./report.ts";
import { benchStartup, type StartupResult } from "./startup.ts";
import { runWrk, type WrkResult } from "./wrk.ts";

const REPO_ROOT = resolve(import.meta.dir, "..");
const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const rounds = Number(process.env.BENCH_ROUNDS ?? 2);
const HIGH = 64;
/** The "full-ratio" row's head sampling: a share of traces a busy production gateway might record. */
const TRACE_RATIO = 0.1;
const LOW = 8;
const TARGET_KEYS = [
  "direct",
  "bare",
  "pool",
  "raw",
  "nginx",
  "haproxy",
  "lean",
  "full",
  "full-redis",
  "full-ratio",
  "nginx-tls",
  "raw-tls",
  "lean-tls",
  "grpc-direct",
  "verify",
  "compiled",
] as const;
type TargetKey = (typeof TARGET_KEYS)[number];
/** The rows driven against rpcapp; every other row's upstreams are the trivial HTTP ones. */
const GRPC_KEYS: ReadonlySet<TargetKey> = new Set(["grpc-direct", "verify"]);
const only = process.env.BENCH_ONLY?.split(",").map((s) => s.trim());
const unknown = only?.filter((k) => !(TARGET_KEYS as readonly string[]).includes(k)) ?? [];
if (unknown.length) {
  console.error(`BENCH_ONLY: unknown target(s) ${unknown.join(", ")}; choose from ${TARGET_KEYS.join(", ")}`);
  process.exit(2);
}
const wanted = (key: TargetKey) => !only || only.includes(key);
const progress = (line: string) => console.error(line);

if (!Bun.which("wrk")) {
  console.error("make bench needs wrk (Debian: apt-get install wrk)");
  process.exit(2);
}
stopAllOnSignals();

/** A process serving the trivial upstream on several ports; `stats()` asks it over IPC. */
interface UpstreamProcess {
  proc: Subprocess;
  stats(): Promise<Record<number, { accepted: number; requests: number }>>;
}

async function startUpstreamProcess(ports: number[]): Promise<UpstreamProcess> {
  const waiting: ((stats: Record<number, { accepted: number; requests: number }>) => void)[] = [];
  const proc = spawn(`upstream ${ports.join(",")}`, [process.execPath, "bench/upstream.ts", ...ports.map(String)], {
    cwd: REPO_ROOT,
    stdout: "inherit",
    stderr: "inherit",
    ipc(message) {
      waiting.shift()?.(message);
    },
  });
  for (const port of ports) await waitHttp(`http://127.0.0.1:${port}/readyz`, proc);
  return {
    proc,
    stats: () =>
      new Promise((resolve) => {
        waiting.push(resolve);
        proc.send("stats");
      }),
  };
}

/** What a row drives and whose CPU and connections it reads. */
interface Target {
  key: TargetKey;
  name: string;
  protocol: "http" | "grpc";
  url: string;
  body: string;
  /** The proxy's processes (children included by cpuSeconds); empty for direct rows. */
  proxyPids: number[];
  upstreamPids: number[];
  /** Ports on the trivial upstreams that only this target uses: their accepted connections are its own. */
  upstreamPorts: number[];
}

const rows: Row[] = [];
const targets = new Map<string, Target>();
function add(key: TargetKey, name: string, target: Omit<Target, "key" | "name"> | { unavailable: string }) {
  rows.push({ key, name, runs: [], ...("unavailable" in target ? { unavailable: target.unavailable } : {}) });
  if (!("unavailable" in target)) targets.set(key, { key, name, ...target });
}

async function tryStart<T>(what: string, start: () => Promise<T>): Promise<T | { unavailable: string }> {
  try {
    return await start();
  } catch (err) {
    const message = (err as Error).message;
    progress(`  ${what} did not start: ${message}`);
    notes.push(`${what} did not start: ${message.split("\n")[0]}`);
    return { unavailable: "did not start" };
  }
}

const loadAverageBefore = loadavg()
  .map((l) => l.toFixed(2))
  .join(" ");
const notes: string[] = [];
// Nothing of ours runs yet: a 1-minute load above half the CPUs is other work, which competes with
// the targets for the same CPUs and makes absolute figures (less so the ratios) unreliable.
if (loadavg()[0]! > navigator.hardwareConcurrency / 2) {
  const warning = `the machine was busy before the run (load average ${loadAverageBefore}): figures are noisy`;
  progress(`warning: ${warning}`);
  notes.push(warning);
}
if (SERVICE_ROOT !== REPO_ROOT) notes.push(`gateway and rpcapp run from BENCH_SERVICE_ROOT=${SERVICE_ROOT}`);
let startup: StartupResult | string | undefined;
const accessLogs: { name: string; file: string }[] = [];

const otlp = await startOtlpSink();

try {
  // Three upstream processes; each serves one port per HTTP target (and one for the compiled gateway).
  // The lean gateway also serves /verify, so it is started (with its upstream ports) for either row.
  const httpKeys = TARGET_KEYS.filter((key) => !GRPC_KEYS.has(key)).filter(
    (key) => wanted(key) || (key === "lean" && wanted("verify")),
  );
  const portsOf = new Map<string, number[]>();
  for (const key of httpKeys) portsOf.set(key, [await freePort(), await freePort(), await freePort()]);
  const upstreamProcs: UpstreamProcess[] = [];
  if (httpKeys.length) {
    progress(`starting 3 trivial upstreams (${httpKeys.length} ports each)…`);
    for (let i = 0; i < 3; i++)
      upstreamProcs.push(await startUpstreamProcess(httpKeys.map((k) => portsOf.get(k)![i]!)));
  }
  const upstreamPids = upstreamProcs.map((u) => u.proc.pid);
  const hostPorts = (key: string) => portsOf.get(key)!.map((p) => `127.0.0.1:${p}`);
  const http = (key: TargetKey, url: string, proxyPids: number[]) => ({
    protocol: "http" as const,
    url,
    body: PROJECT_BODY,
    proxyPids,
    upstreamPids,
    upstreamPorts: portsOf.get(key)!,
  });

  if (wanted("direct"))
    add("direct", "direct (wrk → 1 upstream)", http("direct", `http://${hostPorts("direct")[0]}/projects`, []));
  for (const [key, name] of [
    ["bare", "Bun.serve + fetch (bare-proxy.ts)"],
    ["pool", "Bun.serve + Portico's upstream pool (pool-proxy.ts)"],
    ["raw", "Bun.listen + Bun.connect, bytes only (raw-proxy.ts)"],
  ] as const) {
    if (!wanted(key)) continue;
    const port = await freePort();
    const started = await tryStart(`${key} Bun proxy`, () => startBunProxy(key, port, hostPorts(key)));
    add(key, name, "unavailable" in started ? started : http(key, `http://127.0.0.1:${port}/projects`, [started.pid]));
  }
  for (const [key, name, binary, start] of [
    ["nginx", "nginx (1 worker)", "nginx", startNginx],
    ["haproxy", "HAProxy (1 thread)", "haproxy", startHaproxy],
  ] as const) {
    if (!wanted(key)) continue;
    if (!Bun.which(binary)) {
      add(key, name, { unavailable: "not installed" });
      continue;
    }
    const port = await freePort();
    const started = await tryStart(name, () => start(port, hostPorts(key), PROXY_CPU));
    add(key, name, "unavailable" in started ? started : http(key, `http://127.0.0.1:${port}/projects`, [started.pid]));
  }

  // rpcapp for the gRPC rows: the real service, tracing off, logs at warn.
  let rpcapp: { hostPort: string; pid: number } | undefined;
  if (wanted("grpc-direct") || wanted("verify")) {
    const started = await tryStart("rpcapp", () => startRpcapp());
    if (!("unavailable" in started)) rpcapp = { hostPort: started.hostPort, pid: started.proc.pid };
    else {
      if (wanted("grpc-direct")) add("grpc-direct", "gRPC direct (h2load → rpcapp)", started);
      if (wanted("verify")) add("verify", "Portico lean /verify → rpcapp", started);
    }
  }
  if (rpcapp && wanted("grpc-direct")) {
    add(
      "grpc-direct",
      "gRPC direct (h2load → rpcapp)",
      Bun.which("h2load")
        ? {
            protocol: "grpc",
            url: `http://${rpcapp.hostPort}/userverify.UserVerify/VerifyUser`,
            body: "",
            proxyPids: [],
            upstreamPids: [rpcapp.pid],
            upstreamPorts: [],
          }
        : { unavailable: "h2load not installed" },
    );
  }

  if (wanted("lean") || (wanted("verify") && rpcapp)) {
    const lean = await tryStart("Portico lean", () =>
      startPortico({
        flavour: { kind: "lean" },
        upstreams: hostPorts("lean"),
        ...(rpcapp ? { rpcapp: rpcapp.hostPort } : {}),
        cpu: PROXY_CPU,
      }),
    );
    if (wanted("lean")) {
      add(
        "lean",
        "Portico lean /projects",
        "unavailable" in lean ? lean : http("lean", `${lean.url}/projects`, [lean.proc.pid]),
      );
    }
    if (rpcapp && wanted("verify")) {
      add(
        "verify",
        "Portico lean /verify → rpcapp",
        "unavailable" in lean
          ? lean
          : {
              protocol: "http",
              url: `${lean.url}/verify`,
              body: VERIFY_BODY,
              proxyPids: [lean.proc.pid],
              upstreamPids: [rpcapp.pid],
              upstreamPorts: [],
            },
      );
    }
  }

  // Every feature on, limit in memory: every trace recorded, or a share of them (head sampling).
  for (const [key, name, traceRatio] of [
    ["full", "Portico full, limit in memory", undefined],
    ["full-ratio", `Portico full, ${TRACE_RATIO * 100} % of traces recorded`, TRACE_RATIO],
  ] as const) {
    if (!wanted(key)) continue;
    const started = await tryStart(name, () =>
      startPortico({
        flavour: {
          kind: "full",
          otlpEndpoint: otlp.endpoint,
          ...(traceRatio === undefined ? {} : { traceRatio }),
        },
        upstreams: hostPorts(key),
        cpu: PROXY_CPU,
      }),
    );
    add(key, name, "unavailable" in started ? started : http(key, `${started.url}/projects`, [started.proc.pid]));
    if (!("unavailable" in started) && started.logFile)
      accessLogs.push({ name: name.replace(/^Portico /, ""), file: started.logFile });
  }
  if (wanted("full-redis")) {
    const name = "Portico full, limit in Redis";
    if (!Bun.which("redis-server")) add("full-redis", name, { unavailable: "redis-server not installed" });
    else {
      const redisPort = await freePort();
      const started = await tryStart(name, async () => {
        const redis = spawn("redis-server", redisServerArgv(redisPort), { stdout: "ignore", stderr: "inherit" });
        await waitUntil("redis-server", () => tcpAccepts(redisPort), { proc: redis });
        return startPortico({
          flavour: {
            kind: "full",
            otlpEndpoint: otlp.endpoint,
            redisUrl: `redis://127.0.0.1:${redisPort}`,
          },
          upstreams: hostPorts("full-redis"),
          cpu: PROXY_CPU,
        });
      });
      add(
        "full-redis",
        name,
        "unavailable" in started ? started : http("full-redis", `${started.url}/projects`, [started.proc.pid]),
      );
      if (!("unavailable" in started) && started.logFile) {
        accessLogs.push({ name: "full, limit in Redis", file: started.logFile });
      }
    }
  }
  // TLS terminated by the proxy, same certificate (ECDSA P-256 from the local CA), keep-alive
  // clients: what the record layer costs each. wrk does not verify certificates.
  if (wanted("nginx-tls") || wanted("raw-tls") || wanted("lean-tls")) {
    const pki = await ensureLocalPki(join(tempDir("bench-tls"), "pki"));
    const tls = { cert: pki.certFile("edge"), key: pki.keyFile("edge"), ca: pki.caFile };
    if (wanted("nginx-tls")) {
      const name = "nginx (1 worker), TLS";
      if (!Bun.which("nginx")) add("nginx-tls", name, { unavailable: "not installed" });
      else {
        const port = await freePort();
        const started = await tryStart(name, () => startNginx(port, hostPorts("nginx-tls"), PROXY_CPU, tls));
        add(
          "nginx-tls",
          name,
          "unavailable" in started ? started : http("nginx-tls", `https://127.0.0.1:${port}/projects`, [started.pid]),
        );
      }
    }
    if (wanted("raw-tls")) {
      const port = await freePort();
      const started = await tryStart("raw Bun proxy, TLS", () => startBunProxy("raw", port, hostPorts("raw-tls"), tls));
      add(
        "raw-tls",
        "Bun.listen + Bun.connect, bytes only, TLS",
        "unavailable" in started ? started : http("raw-tls", `https://127.0.0.1:${port}/projects`, [started.pid]),
      );
    }
    if (wanted("lean-tls")) {
      const started = await tryStart("Portico lean, TLS", () =>
        startPortico({ flavour: { kind: "lean" }, upstreams: hostPorts("lean-tls"), cpu: PROXY_CPU, tls }),
      );
      add(
        "lean-tls",
        "Portico lean, TLS",
        "unavailable" in started ? started : http("lean-tls", `${started.url}/projects`, [started.proc.pid]),
      );
    }
  }
  // Table order: the HTTP rows, then the gRPC ones.
  rows.sort((a, b) => TARGET_KEYS.indexOf(a.key as TargetKey) - TARGET_KEYS.indexOf(b.key as TargetKey));

  const load = (t: Target, connections: number, durationS: number): Promise<WrkResult> =>
    t.protocol === "grpc"
      ? runH2loadGrpc({ url: t.url, connections, durationS, cpu: LOAD_CPU })
      : runWrk({ url: t.url, method: "POST", body: t.body, connections, threads: 1, durationS, cpu: LOAD_CPU });
  const acceptedOn = async (ports: number[]) => {
    if (ports.length === 0) return undefined;
    const all = await Promise.all(upstreamProcs.map((u) => u.stats()));
    return all.reduce((n, stats) => n + ports.reduce((m, p) => m + (stats[p]?.accepted ?? 0), 0), 0);
  };
  const measure = async (t: Target, connections: number, round: number): Promise<Run> => {
    const before = { proxy: cpuSeconds(t.proxyPids), upstream: cpuSeconds(t.upstreamPids) };
    const acceptedBefore = await acceptedOn(t.upstreamPorts);
    const result = await load(t, connections, seconds);
    const [proxy, upstream] = [cpuSeconds(t.proxyPids), cpuSeconds(t.upstreamPids)];
    const acceptedAfter = await acceptedOn(t.upstreamPorts);
    return {
      round,
      connections,
      result,
      ...(t.proxyPids.length ? { proxyCpuS: proxy - before.proxy } : {}),
      upstreamCpuS: upstream - before.upstream,
      ...(acceptedBefore !== undefined && acceptedAfter !== undefined
        ? { newUpstreamConnections: acceptedAfter - acceptedBefore }
        : {}),
    };
  };

  const active = rows.filter((r) => targets.has(r.key));
  for (let round = 1; round <= rounds; round++) {
    progress(`round ${round}/${rounds}: ${active.length} targets × ${HIGH} and ${LOW} connections, ${seconds} s each`);
    for (const row of active) {
      const target = targets.get(row.key)!;
      // The other proxies stop while this one runs (procs.ts holdStill): it has its CPU to itself,
      // as in service. Upstreams keep running: a gateway whose rpcapp stopped would fail its
      // health checks while measured, and find it unhealthy at its own turn.
      const own = new Set(target.proxyPids);
      const release = holdStill(
        active.flatMap((other) => targets.get(other.key)!.proxyPids).filter((pid) => !own.has(pid)),
      );
      try {
        // 2 s unmeasured right before the target's runs: JIT in the first round, and in every
        // round what the proxy let go while it was held — its idle upstream connections (HAProxy
        // purges idle server connections after 5 s, nginx after 60 s; their clocks ran on), so
        // that "new upstream conns" counts what a proxy opens under steady load, not its
        // reconnects after a pause, and a Bun service's compiled code, which it drops after 30 s
        // of quiet (GC_WHEN_IDLE, lib/idle-gc.ts): the rows compare proxies in service, not their
        // first second after a rest.
        await load(target, HIGH, 2).catch((err) => progress(`  ${row.name}: warm-up failed: ${err}`));
        for (const connections of [HIGH, LOW]) {
          try {
            const run = await measure(target, connections, round);
            row.runs.push(run);
            progress(
              `  ${row.name} @${connections}: ${run.result.requestsPerSecond.toFixed(0)} req/s, p99 ${run.result.p99Ms.toFixed(2)} ms${run.result.errors ? `, ${run.result.errors} errors` : ""}`,
            );
          } catch (err) {
            const error = (err as Error).message.split("\n")[0]!;
            progress(`  ${row.name} @${connections}: ${error}`);
            (row.failed ??= []).push({ round, connections, error });
            notes.push(`${row.name} @${connections}, round ${round}: no figures (${error})`);
          }
        }
      } finally {
        release();
      }
    }
  }

  if (wanted("compiled")) {
    const binary = join(SERVICE_ROOT, "dist/gateway");
    if (process.env.BENCH_BUILD === "1") {
      progress("building dist/gateway (BENCH_BUILD=1)…");
      const build = spawn("build", [process.execPath, "scripts/build.ts", "gateway"], {
        cwd: SERVICE_ROOT,
        stdout: "ignore",
        stderr: "inherit",
      });
      if ((await build.exited) !== 0) startup = "`bun scripts/build.ts gateway` failed";
    }
    if (startup === undefined) {
      if (!existsFile(binary)) startup = "dist/gateway not built: run `make build` first, or BENCH_BUILD=1 make bench";
      else {
        progress("compiled gateway: start-up time and memory…");
        startup = await benchStartup({ binary, upstreams: hostPorts("compiled"), durationS: seconds }).catch(
          (err: Error) => `failed: ${err.message}`,
        );
      }
    }
  }

  // The comparisons the issue asks about, spelled out.
  // A row whose runs had failed requests is left out of the comparisons (as of its table cells).
  const summaries = rows.map((row) => ({ row, s: summarize(row, HIGH, LOW) }));
  const notComparable = summaries.filter(({ s }) => s !== undefined && !comparable(s));
  if (notComparable.length)
    notes.push(
      `not comparable: ${notComparable.map(({ row, s }) => `${row.name} (${s!.errors} errors)`).join(", ")} — a failed request is answered faster than a proxied one, so their ratios and CPU per request are not shown`,
    );
  const summary = (key: TargetKey) => {
    const s = summaries.find(({ row }) => row.key === key)?.s;
    return s && comparable(s) ? s : undefined;
  };
  const [lean, bare, pool, nginx, verify, grpcDirect, nginxTls, leanTls] = (
    ["lean", "bare", "pool", "nginx", "verify", "grpc-direct", "nginx-tls", "lean-tls"] as const
  ).map(summary);
  const times = (a?: number, b?: number) => (a && b ? `${(a / b).toFixed(2)}×` : "–");
  if (lean?.proxyUsPerReq) {
    notes.push(
      `Portico lean: CPU per request ${times(lean.proxyUsPerReq, bare?.proxyUsPerReq)} the bare Bun proxy's, ${times(lean.proxyUsPerReq, pool?.proxyUsPerReq)} Bun.serve + its own upstream pool's (the request path's share), ${times(lean.proxyUsPerReq, nginx?.proxyUsPerReq)} nginx's`,
    );
  }
  if (leanTls) {
    notes.push(
      `TLS at the proxy: Portico lean ${times(leanTls.rps, nginxTls?.rps)} nginx's req/s, CPU per request ${times(leanTls.proxyUsPerReq, nginxTls?.proxyUsPerReq)} nginx's; TLS costs Portico ${times(leanTls.proxyUsPerReq, lean?.proxyUsPerReq)} its plain CPU per request, nginx ${times(nginxTls?.proxyUsPerReq, nginx?.proxyUsPerReq)}`,
    );
  }
  if (verify) {
    notes.push(
      `/verify (gRPC): ${times(verify.rps, lean?.rps)} the req/s of /projects on the same gateway, ${times(verify.rps, grpcDirect?.rps)} of gRPC direct; gateway CPU per request ${times(verify.proxyUsPerReq, lean?.proxyUsPerReq)} that of /projects`,
    );
  }

  // Evidence that "full" did pay for its features: spans exported, access-log lines written.
  if (accessLogs.length) {
    notes.push(
      `tracing: the OTLP sink received ${otlp.requests} export requests (${(otlp.bytes / 1e6).toFixed(1)} MB) from the "full" gateways`,
    );
    for (const { name, file } of accessLogs) {
      const text = readFileSync(file, "utf8");
      notes.push(
        `access log of "${name}": ${text.split("\n").length - 1} lines (${(text.length / 1e6).toFixed(1)} MB)`,
      );
    }
  }
} finally {
  await stopAll();
  otlp.stop();
}

/**
 * bench/bare-proxy.ts (Bun.serve + fetch), bench/pool-proxy.ts (Bun.serve + the gateway's upstream
 * pool) or bench/raw-proxy.ts (bytes only, the least a proxy on Bun can cost; `tls` terminates
 * TLS), pinned like every proxy row; ready when a POST goes through.
 */
async function startBunProxy(
  kind: "bare" | "pool" | "raw",
  port: number,
  upstreams: string[],
  tls?: BenchTls & { ca: string },
): Promise<Subprocess> {
  const argv = [process.execPath, `bench/${kind}-proxy.ts`, String(port), upstreams.join(",")];
  if (tls) argv.push(tls.cert, tls.key);
  const proc = spawn(`${kind} proxy`, pinned(argv, PROXY_CPU), {
    cwd: REPO_ROOT,
    stdout: "inherit",
    stderr: "inherit",
  });
  await waitHttp(
    `${tls ? "https" : "http"}://127.0.0.1:${port}/projects`,
    proc,
    tls ? { ...postJson(PROJECT_BODY), tls: { ca: readFileSync(tls.ca, "utf8") } } : postJson(PROJECT_BODY),
  );
  return proc;
}

function existsFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

function tcpAccepts(port: number): Promise<boolean> {
  return Bun.connect({ hostname: "127.0.0.1", port, socket: { data() {} } }).then(
    (s) => {
      s.end();
      return true;
    },
    () => false,
  );
}

function git(args: string[]): string {
  const r = Bun.spawnSync(["git", ...args], { cwd: REPO_ROOT });
  return r.exitCode === 0 ? r.stdout.toString().trim() : "";
}

function version(argv: string[], pattern: RegExp): string | undefined {
  if (!Bun.which(argv[0]!)) return undefined;
  const r = Bun.spawnSync(argv);
  return pattern.exec(`${r.stdout.toString()}${r.stderr.toString()}`)?.[1];
}

// "+dirty": the tree differs from the commit — results files (the bench's own output) aside.
const commit = `${git(["rev-parse", "--short", "HEAD"]) || "unknown"}${git(["status", "--porcelain", "--", ".", ":!bench/results"]) ? "+dirty" : ""}`;
const tools: Record<string, string> = {};
for (const [name, argv, pattern] of [
  ["wrk", ["wrk", "-v"], /wrk (\S+)/],
  ["nginx", ["nginx", "-v"], /nginx\/(\S+)/],
  ["HAProxy", ["haproxy", "-v"], /version (\S+)/],
  ["h2load", ["h2load", "--version"], /nghttp2\/(\S+)/],
  ["redis", ["redis-server", "--version"], /v=(\S+)/],
] as const) {
  const v = version([...argv], pattern);
  if (v) tools[name] = v;
}
const meta: Meta = {
  date: new Date().toISOString().slice(0, 10),
  commit,
  cores: navigator.hardwareConcurrency,
  bun: Bun.version,
  tools,
  seconds,
  rounds,
  high: HIGH,
  low: LOW,
  pinning: pinningNote(),
  loadAverageBefore,
  loadAverageAfter: loadavg()
    .map((l) => l.toFixed(2))
    .join(" "),
  notes,
};

console.log(`\nPortico proxy benchmark — ${formatMeta(meta)}\n`);
if (rows.length) console.log(formatTable(rows, meta));
for (const note of notes) console.log(`- ${note}`);
if (startup !== undefined)
  console.log(`\n${typeof startup === "string" ? `compiled gateway: ${startup}` : formatStartup(startup)}`);

const resultsDir = join(REPO_ROOT, "bench/results");
mkdirSync(resultsDir, { recursive: true });
// A second run on the same day and commit gets its own file (-2, -3 …) instead of replacing the first.
let base = join(resultsDir, `${meta.date}-${commit}`);
for (let n = 2; existsFile(`${base}.md`) || existsFile(`${base}.json`); n++)
  base = join(resultsDir, `${meta.date}-${commit}-${n}`);
writeFileSync(`${base}.md`, markdown(rows, meta, startup));
writeFileSync(`${base}.json`, `${JSON.stringify({ meta, rows, startup }, null, 2)}\n`);
console.log(`\nwritten: ${base}.md, ${base}.json`);

if (process.env.BENCH_STACK === "1") {
  console.log("\nfull-stack benchmark (BENCH_STACK=1): bench/stack.ts");
  const stack = spawn("stack bench", [process.execPath, "bench/stack.ts"], {
    cwd: REPO_ROOT,
    stdout: "inherit",
    stderr: "inherit",
  });
  process.exitCode = await stack.exited;
}
