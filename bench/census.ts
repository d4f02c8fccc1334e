/**
 * What one proxied request allocates on the gateway's JavaScript heap, by object type:
 *
 *   bun bench/census.ts [lean|full|full-ratio|verify …] [--env K=V …]   (default: lean full)
 *
 * `verify`: the lean gateway's `POST /verify`, transcoded to gRPC, against an rpcapp it starts
 * (logs at warn, tracing off, as in `make bench`); the others proxy `POST /projects`.
 *
 * `--env` sets a variable for every gateway measured, on top of its flavour's: an ablation by
 * allocation, e.g. `bun bench/census.ts full-ratio --env LOG_LEVEL=warn` for what the access log
 * allocates.
 *
 * The gateway (from source, the `make bench` configs of bench/portico.ts, GC_WHEN_IDLE off) runs
 * with bench/census-hook.ts preloaded; after a warm-up, the hook counts the heap's objects by
 * type, `REQUESTS` sequential `POST /projects` go through on one keep-alive connection, and it
 * counts again. A collection inside the window would hide garbage, so a window where any type's
 * count fell, or with fewer `Request` objects than requests (Bun.serve makes one per request and
 * nothing keeps it), is measured again. Unlike CPU time the figures do not depend on the machine's load:
 * the same tree gives the same counts run after run (±0.1 per request), so a change to the request
 * path can be judged by them in seconds. bench/README.md has what they showed.
 */
import { readFileSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { freePort } from "../scripts/stack/testing/ports.ts";
import {
  type PorticoFlavour,
  postJson,
  PROJECT_BODY,
  preparePortico,
  SERVICE_ROOT,
  startOtlpSink,
  startRpcapp,
  VERIFY_BODY,
} from "./portico.ts";
import { envPairs, spawn, stopAll, stopAllOnSignals, tempDir, waitHttp, waitUntil } from "./procs.ts";
import { censusWindowIsClean } from "./report.ts";
import { runWrk } from "./wrk.ts";

const REPO_ROOT = resolve(import.meta.dir, "..");
const REQUESTS = 400;
const ATTEMPTS = 10;
const { values: options, positionals } = parseArgs({
  args: process.argv.slice(2),
  options: { env: { type: "string", multiple: true } },
  allowPositionals: true,
});
const flavours = positionals.length ? positionals : ["lean", "full"];
const extraEnv = envPairs(options.env, "bench/census.ts");
/** The `make bench` rows of the same names (bench/portico.ts); full-ratio records one trace in ten. */
const FLAVOURS = ["lean", "full", "full-ratio", "verify"];
for (const f of flavours)
  if (!FLAVOURS.includes(f)) {
    console.error(`bench/census.ts: unknown flavour ${f}; choose from ${FLAVOURS.join(", ")}`);
    process.exit(2);
  }
stopAllOnSignals();

interface Census {
  objects: number;
  heapBytes: number;
  counts: Record<string, number>;
}

async function censusOf(
  flavourName: string,
  upstreams: string[],
  otlpEndpoint: string,
  rpcapp: string | undefined,
): Promise<Census> {
  const flavour: PorticoFlavour =
    flavourName === "lean" || flavourName === "verify"
      ? { kind: "lean" }
      : { kind: "full", otlpEndpoint, ...(flavourName === "full-ratio" ? { traceRatio: 0.1 } : {}) };
  const prepared = await preparePortico({ flavour, upstreams, ...(rpcapp ? { rpcapp } : {}) });
  const out = join(tempDir("census"), "census.json");
  const proc = spawn(
    `gateway (${flavourName}, census)`,
    [process.execPath, "--preload", join(REPO_ROOT, "bench/census-hook.ts"), "gateway/src/main.ts"],
    {
      cwd: SERVICE_ROOT,
      env: { ...prepared.env, ...extraEnv, GC_WHEN_IDLE: "false", CENSUS_OUT: out },
      stdout: "ignore",
      stderr: "inherit",
    },
  );
  const [path, body] = flavourName === "verify" ? ["/verify", VERIFY_BODY] : ["/projects", PROJECT_BODY];
  const expected = flavourName === "verify" ? 200 : 201;
  const url = `${prepared.url}${path}`;
  await waitHttp(url, proc, postJson(body));
  // Warm: the JIT's tiers, the upstream pool, lazily built state.
  await runWrk({ url, method: "POST", body, connections: 8, threads: 1, durationS: 2 });
  const read = (): Record<string, unknown> | undefined => {
    try {
      return JSON.parse(readFileSync(out, "utf8"));
    } catch {
      return undefined;
    }
  };
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    rmSync(out, { force: true });
    proc.kill("SIGUSR2");
    await waitUntil("the census to start", () => read()?.started === true, { proc });
    rmSync(out, { force: true });
    for (let i = 0; i < REQUESTS; i++) {
      const res = await fetch(url, postJson(body));
      await res.arrayBuffer();
      if (res.status !== expected) throw new Error(`POST ${path} answered ${res.status}`);
    }
    // Let the last answers' work (access log, span end) finish inside the window.
    await Bun.sleep(50);
    proc.kill("SIGUSR2");
    await waitUntil("the census", () => read()?.counts !== undefined, { proc });
    const census = read() as unknown as Census;
    if (censusWindowIsClean(census.counts, REQUESTS)) return census;
    console.error(`  ${flavourName}: a collection ran inside the window; measuring again (${attempt}/${ATTEMPTS})`);
  }
  throw new Error(`${flavourName}: every window saw a collection`);
}

try {
  const ports = [await freePort(), await freePort(), await freePort()];
  const upstream = spawn("upstreams", [process.execPath, "bench/upstream.ts", ...ports.map(String)], {
    cwd: REPO_ROOT,
    stdout: "ignore",
    stderr: "inherit",
  });
  for (const port of ports) await waitHttp(`http://127.0.0.1:${port}/readyz`, upstream);
  const otlp = await startOtlpSink();
  // rpcapp for `verify`: the real service, as make bench runs it.
  let rpcapp: string | undefined;
  if (flavours.includes("verify")) rpcapp = (await startRpcapp("ignore")).hostPort;
  const results = new Map<string, Census>();
  for (const flavour of flavours) {
    console.error(`census of ${flavour}…`);
    results.set(
      flavour,
      await censusOf(
        flavour,
        ports.map((p) => `127.0.0.1:${p}`),
        otlp.endpoint,
        flavour === "verify" ? rpcapp : undefined,
      ),
    );
  }
  otlp.stop();
  const types = new Set<string>();
  for (const c of results.values())
    for (const [t, n] of Object.entries(c.counts)) if (n / REQUESTS >= 0.5) types.add(t);
  const perRequest = (c: Census, t: string) => (c.counts[t] ?? 0) / REQUESTS;
  const first = [...results.values()][0]!;
  const rows = [...types].sort((a, b) => perRequest(first, b) - perRequest(first, a));
  const width = Math.max(...rows.map((t) => t.length), 22);
  const envNote = Object.entries(extraEnv)
    .map(([k, v]) => ` ${k}=${v}`)
    .join("");
  console.log(
    `\nobjects allocated per proxied request — POST /projects, or /verify for verify — (${REQUESTS} in a row, one connection${envNote ? `;${envNote}` : ""})\n`,
  );
  console.log(`${"type".padEnd(width)}${flavours.map((f) => f.padStart(12)).join("")}`);
  for (const t of rows)
    console.log(
      `${t.padEnd(width)}${[...results.values()].map((c) => perRequest(c, t).toFixed(1).padStart(12)).join("")}`,
    );
  const totals = [...results.values()].map((c) => Object.values(c.counts).reduce((a, n) => a + n, 0) / REQUESTS);
  console.log(`${"all objects".padEnd(width)}${totals.map((n) => n.toFixed(1).padStart(12)).join("")}`);
} finally {
  await stopAll();
}
