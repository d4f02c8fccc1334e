/**
 * What the request path costs in CPU with the network left out: each proxy runs with
 * bench/request-path-hook.ts preloaded, which answers every upstream try at once and calls the
 * listener's handler directly, 64 requests in flight (no socket, no load generator, no upstream):
 *
 *   bun bench/request-path.ts [pool|lean|full|full-ratio …] [--env K=V …] [--passes N] [--profile DIR]
 *   (default: pool lean full)
 *
 * `pool` is bench/pool-proxy.ts — `Bun.serve` and the gateway's upstream client, nothing else —
 * and the baseline of the ratios; the others are the gateway from source with `make bench`'s
 * configs (bench/portico.ts). `--env` sets a variable for every gateway measured (an ablation by
 * setting, e.g. `--env LOG_LEVEL=warn` on `full`). Flavours alternate over `--passes` (default 3),
 * each a fresh process pinned to one CPU, so that a busy spell of the host falls on all of them;
 * the table gives the median and the lowest of their rounds. `--profile DIR`: each process also
 * writes a CPU profile (`bun --cpu-prof-md`, warm-up round included) into DIR, named after its
 * flavour and pass — what the request path's own JavaScript spends, with no socket work around it.
 *
 * The figures are far steadier than `make bench`'s CPU per request (±0.3 µs against ±5–20) and
 * smaller: they leave out the system calls, the socket reads and writes, and the answer written
 * back — what the request path costs under load comes on top of Bun's own work per request, and
 * grows with it (bench/README.md, 2026-12-07 fourth stop). A change to the request path can be
 * judged by them in a minute; `make bench` says what it is worth end to end.
 */
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { freePort } from "../scripts/stack/testing/ports.ts";
import { type PorticoFlavour, PROJECT_BODY, postJson, preparePortico, SERVICE_ROOT, startOtlpSink } from "./portico.ts";
import {
  envPairs,
  median,
  PROXY_CPU,
  pinned,
  spawn,
  stopAll,
  stopAllOnSignals,
  tempDir,
  waitHttp,
  waitUntil,
} from "./procs.ts";

const REPO_ROOT = resolve(import.meta.dir, "..");
const FLAVOURS = ["pool", "lean", "full", "full-ratio"];
const { values: options, positionals } = parseArgs({
  args: process.argv.slice(2),
  options: { env: { type: "string", multiple: true }, passes: { type: "string" }, profile: { type: "string" } },
  allowPositionals: true,
});
const flavours = positionals.length ? positionals : ["pool", "lean", "full"];
for (const f of flavours)
  if (!FLAVOURS.includes(f)) {
    console.error(`bench/request-path.ts: unknown flavour ${f}; choose from ${FLAVOURS.join(", ")}`);
    process.exit(2);
  }
const passes = Number(options.passes ?? 3);
if (!Number.isInteger(passes) || passes < 1) {
  console.error(`bench/request-path.ts: --passes ${options.passes}: expected a whole number ≥ 1`);
  process.exit(2);
}
const extraEnv = envPairs(options.env, "bench/request-path.ts");
stopAllOnSignals();

/** The upstreams are never dialled (the hook answers for them); the addresses only fill the config. */
const UPSTREAMS = ["127.0.0.1:9", "127.0.0.1:9", "127.0.0.1:9"];

const profileDir = options.profile === undefined ? undefined : resolve(options.profile);
if (profileDir !== undefined) mkdirSync(profileDir, { recursive: true });

async function measure(flavourName: string, otlpEndpoint: string, pass: number): Promise<number[]> {
  const out = join(tempDir("request-path"), "result.json");
  const hook = join(REPO_ROOT, "bench/request-path-hook.ts");
  let argv: string[];
  let env: Record<string, string | undefined>;
  let url: string;
  let port: number;
  if (flavourName === "pool") {
    port = await freePort();
    argv = [process.execPath, "--preload", hook, "bench/pool-proxy.ts", String(port), UPSTREAMS.join(",")];
    env = { ...process.env };
    url = `http://127.0.0.1:${port}`;
  } else {
    const flavour: PorticoFlavour =
      flavourName === "lean"
        ? { kind: "lean" }
        : { kind: "full", otlpEndpoint, ...(flavourName === "full-ratio" ? { traceRatio: 0.1 } : {}) };
    const prepared = await preparePortico({ flavour, upstreams: UPSTREAMS });
    argv = [process.execPath, "--preload", hook, "gateway/src/main.ts"];
    env = { ...prepared.env, ...extraEnv };
    url = prepared.url;
    port = Number(new URL(url).port);
  }
  if (profileDir !== undefined)
    argv.splice(1, 0, "--cpu-prof-md", `--cpu-prof-dir=${profileDir}`, `--cpu-prof-name=${flavourName}-${pass}.md`);
  const proc = spawn(`${flavourName} (request path)`, pinned(argv, PROXY_CPU), {
    // The hook stubs the client of the tree the process runs from: the pool proxy is this checkout's.
    cwd: flavourName === "pool" ? REPO_ROOT : SERVICE_ROOT,
    env: {
      ...env,
      GC_WHEN_IDLE: "false",
      REQUEST_PATH_OUT: out,
      REQUEST_PATH_PORT: String(port),
      REQUEST_PATH_BODY: PROJECT_BODY,
    },
    // "full" writes its access log to stdout: discarded here, as the cost of the write is the log's.
    stdout: "ignore",
    stderr: "inherit",
  });
  try {
    await waitHttp(`${url}/projects`, proc, postJson(PROJECT_BODY));
    rmSync(out, { force: true });
    proc.kill("SIGUSR2");
    let result: { usPerRequest?: number[]; error?: string } = {};
    // Until the hook has written its file (the read throws before: waitUntil takes that as not yet).
    const written = () => {
      result = JSON.parse(readFileSync(out, "utf8"));
      return true;
    };
    await waitUntil(`${flavourName}: the request path's rounds`, written, {
      proc,
      timeoutMs: 120_000,
      intervalMs: 100,
    });
    if (result.error || !result.usPerRequest) throw new Error(`${flavourName}: ${result.error ?? "no figures"}`);
    if (profileDir !== undefined) {
      // The profile is written as the process exits: a drain and a normal exit, not a kill.
      proc.kill("SIGTERM");
      await Promise.race([proc.exited, Bun.sleep(30_000)]);
    }
    return result.usPerRequest;
  } finally {
    proc.kill("SIGKILL");
    await proc.exited;
  }
}

try {
  // "full" exports its spans: a sink that takes them and discards them, as in make bench.
  const otlp = await startOtlpSink();
  const rounds = new Map<string, number[]>(flavours.map((f) => [f, []]));
  for (let pass = 1; pass <= passes; pass++)
    for (const flavour of flavours) {
      console.error(`pass ${pass}/${passes}: ${flavour}…`);
      rounds.get(flavour)!.push(...(await measure(flavour, otlp.endpoint, pass)));
    }
  otlp.stop();
  const baseline = rounds.has("pool") ? median(rounds.get("pool")!) : undefined;
  const envNote = Object.entries(extraEnv)
    .map(([k, v]) => ` ${k}=${v}`)
    .join("");
  console.log(
    `\nCPU per request of the request path, network left out — POST /projects, 64 in flight, ${passes} passes${envNote ? `;${envNote}` : ""}\n`,
  );
  console.log(`${"flavour".padEnd(12)}${"median µs".padStart(11)}${"lowest µs".padStart(11)}${"× pool".padStart(9)}`);
  for (const [flavour, xs] of rounds) {
    const m = median(xs);
    console.log(
      `${flavour.padEnd(12)}${m.toFixed(2).padStart(11)}${Math.min(...xs)
        .toFixed(2)
        .padStart(11)}${(baseline ? `${(m / baseline).toFixed(2)}×` : "–").padStart(9)}`,
    );
  }
} finally {
  await stopAll();
}
