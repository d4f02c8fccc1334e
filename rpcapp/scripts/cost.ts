/**
 * What one unary call costs rpcapp in CPU, against a bare grpc-js server measured in the same run.
 *
 *   bun rpcapp/scripts/cost.ts [--calls 20000] [--connections 4] [--streams 16] [--rounds 5]
 *                              [--sampled] [--env KEY=VALUE]…
 *
 * Starts rpcapp (`bun rpcapp/src/main.ts`) and rpcapp/scripts/bare-server.ts (same handler and
 * options, no interceptor) as processes on free ports, then drives each in turn with h2load from
 * its own process: `--calls` VerifyUser calls on `--connections` HTTP/2 connections with
 * `--streams` concurrent streams each, the request pre-encoded as a gRPC message and the metadata
 * the gateway sends (x-request-id, x-forwarded-for, traceparent, grpc-timeout). A call's cost is
 * the server's utime + stime over all its threads (/proc/<pid>/stat) across the run, divided by
 * the calls answered. Rounds alternate baseline and rpcapp; the median of each is reported, and
 * their ratio — on a shared machine the absolute figures drift between runs, the ratio much less.
 *
 * `--sampled` sends a sampled traceparent (flags 01), as a gateway that exports traces does;
 * without it the traceparent is unsampled, as under `make dev` without an OTLP endpoint.
 * `--env` passes extra variables to rpcapp (e.g. `--env LOG_PROBES=true`).
 *
 * rpcapp's answers are checked, not assumed: grpc_server_handled_total{grpc_code="OK"} on its
 * /metrics must grow by the number of calls h2load saw succeed, and its stdout by one access line
 * per call. Prerequisite: h2load (Debian package nghttp2-client).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { freePorts } from "../../scripts/stack/testing/ports.ts";
import { waitFor, waitForHttp } from "../../scripts/stack/testing/processes.ts";
import { RpcappClients } from "../test/clients.ts";

const { values: args } = parseArgs({
  options: {
    calls: { type: "string", default: "20000" },
    connections: { type: "string", default: "4" },
    streams: { type: "string", default: "16" },
    rounds: { type: "string", default: "5" },
    sampled: { type: "boolean", default: false },
    env: { type: "string", multiple: true, default: [] },
    variant: { type: "string", multiple: true, default: [] },
    "compare-tree": { type: "string", multiple: true, default: [] },
  },
});

function positiveInt(name: string, raw: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got ${raw}`);
  return n;
}

const CALLS = positiveInt("calls", args.calls!);
const CONNECTIONS = positiveInt("connections", args.connections!);
const STREAMS = positiveInt("streams", args.streams!);
const ROUNDS = positiveInt("rounds", args.rounds!);
function envPairs(list: string): Record<string, string> {
  return Object.fromEntries(
    list.split(",").map((kv) => {
      const eq = kv.indexOf("=");
      if (eq <= 0) throw new Error(`expected KEY=VALUE, got ${JSON.stringify(kv)}`);
      return [kv.slice(0, eq), kv.slice(eq + 1)];
    }),
  );
}

const EXTRA_ENV: Record<string, string> = Object.assign({}, ...(args.env ?? []).map(envPairs));
const VARIANTS = args.variant ?? [];

if (!Bun.which("h2load")) {
  console.error("h2load is required: apt-get install nghttp2-client");
  process.exit(2);
}

const REPO_ROOT = resolve(import.meta.dir, "../..");
const CLOCK_TICKS = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

/** utime + stime of every thread of `pid`, in seconds. */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name, which is in parentheses and may hold spaces: state is [0].
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** `VerifyRequest{id: 121, token: "a$$"}` as one length-prefixed gRPC message. */
function grpcBody(): Uint8Array {
  const message = Uint8Array.of(0x08, 121, 0x12, 3, ...new TextEncoder().encode("a$$"));
  const frame = new Uint8Array(5 + message.length);
  new DataView(frame.buffer).setUint32(1, message.length);
  frame.set(message, 5);
  return frame;
}

interface Server {
  name: string;
  pid: number;
  port: number;
  /** Lines written to stdout so far. */
  lines(): number;
  stop(): void;
}

function spawn(name: string, argv: string[], env: Record<string, string>): Server {
  const proc = Bun.spawn(argv, {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "inherit",
  });
  let newlines = 0;
  // Drained as cheaply as possible: this process shares the machine with the one measured.
  void (async () => {
    const reader = (proc.stdout as ReadableStream<Uint8Array>).getReader();
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      const chunk = read.value;
      for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) newlines++;
    }
  })();
  return {
    name,
    pid: proc.pid,
    port: Number(env.PORT),
    lines: () => newlines,
    stop: () => proc.kill("SIGKILL"),
  };
}

async function verifyOnce(target: string): Promise<void> {
  const clients = new RpcappClients(target);
  try {
    const { reply, error } = await clients.verifyUser({ id: 121, token: "a$$" });
    if (error || reply?.message !== "Verified: 121") {
      throw new Error(
        `${target} answered ${error ? `${grpc.status[error.code]} ${error.details}` : JSON.stringify(reply)}`,
      );
    }
  } finally {
    clients.close();
  }
}

async function okCount(metricsPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const line = text
    .split("\n")
    .find(
      (l) =>
        l.startsWith("grpc_server_handled_total{") &&
        l.includes('grpc_method="userverify.UserVerify/VerifyUser"') &&
        l.includes('grpc_code="OK"'),
    );
  return line ? Number(line.slice(line.lastIndexOf(" ") + 1)) : 0;
}

interface Load {
  succeeded: number;
  reqPerSec: number;
}

async function h2load(port: number, calls: number, bodyFile: string): Promise<Load> {
  const flags = args.sampled ? "01" : "00";
  const argv = [
    "h2load",
    `-n${calls}`,
    `-c${CONNECTIONS}`,
    `-m${STREAMS}`,
    "-t1",
    "-d",
    bodyFile,
    "-H",
    "content-type: application/grpc",
    "-H",
    "te: trailers",
    "-H",
    "grpc-timeout: 10000m",
    "-H",
    "x-request-id: cost-run-1",
    "-H",
    "x-forwarded-for: 127.0.0.1",
    "-H",
    `traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-${flags}`,
    `http://127.0.0.1:${port}/userverify.UserVerify/VerifyUser`,
  ];
  const run = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([
    new Response(run.stdout).text(),
    new Response(run.stderr).text(),
    run.exited,
  ]);
  if (code !== 0) throw new Error(`h2load exited ${code}: ${err || out}`);
  const succeeded = Number(/(\d+) succeeded/.exec(out)?.[1] ?? Number.NaN);
  const reqPerSec = Number(/finished in [\d.]+\w*, ([\d.]+) req\/s/.exec(out)?.[1] ?? Number.NaN);
  if (!(succeeded > 0)) throw new Error(`h2load reported no successful call:\n${out}`);
  return { succeeded, reqPerSec };
}

interface Sample {
  usPerCall: number;
  reqPerSec: number;
}

/**
 * One measured run after a warm-up (JIT, connection setup). `checked` is given the calls h2load
 * saw succeed and the server's stdout line count before the run, and may throw.
 */
async function measure(
  server: Server,
  bodyFile: string,
  checked?: () => Promise<(succeeded: number, linesBefore: number) => Promise<void>>,
): Promise<Sample> {
  await h2load(server.port, Math.ceil(CALLS / 2), bodyFile);
  const check = await checked?.();
  const linesBefore = server.lines();
  const before = cpuSeconds(server.pid);
  const load = await h2load(server.port, CALLS, bodyFile);
  const cpu = cpuSeconds(server.pid) - before;
  await check?.(load.succeeded, linesBefore);
  return { usPerCall: (cpu * 1e6) / load.succeeded, reqPerSec: load.reqPerSec };
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const dir = mkdtempSync(join(tmpdir(), "rpcapp-cost-"));
const bodyFile = join(dir, "verify.grpc");
writeFileSync(bodyFile, grpcBody());

interface Rpcapp {
  label: string;
  server: Server;
  metricsPort: number;
  samples: Sample[];
}

async function startRpcapp(label: string, env: Record<string, string>, root = REPO_ROOT): Promise<Rpcapp> {
  const [port, metricsPort] = (await freePorts(2)) as [number, number];
  const server = spawn(label, [process.execPath, join(resolve(root), "rpcapp/src/main.ts")], {
    HOST: "127.0.0.1",
    PORT: String(port),
    METRICS_PORT: String(metricsPort),
    INSTANCE_ID: "rpcapp-cost",
    LOG_LEVEL: "info",
    // Connection age would reconnect h2load mid-run; the gateway's reconnects are rare by comparison.
    GRPC_MAX_CONNECTION_AGE_MS: "0",
    ...env,
  });
  return { label, server, metricsPort, samples: [] };
}

/** Measures one rpcapp, checking that every call was answered OK by the handler and logged once. */
function measureRpcapp(app: Rpcapp): Promise<Sample> {
  if (process.env.COST_NOCHECK) return measure(app.server, bodyFile);
  return measure(app.server, bodyFile, async () => {
    const okBefore = await okCount(app.metricsPort);
    return async (succeeded, linesBefore) => {
      const ok = (await okCount(app.metricsPort)) - okBefore;
      if (ok !== succeeded) throw new Error(`${app.label} counted ${ok} OK calls, h2load ${succeeded} successes`);
      await waitFor(`${app.label}'s access lines`, () => app.server.lines() - linesBefore >= succeeded, {
        timeoutMs: 5_000,
      });
    };
  });
}

const [barePort] = (await freePorts(1)) as [number];
const bare = spawn("bare grpc-js", [process.execPath, "rpcapp/scripts/bare-server.ts"], { PORT: String(barePort) });
const bareSamples: Sample[] = [];
const apps = [await startRpcapp("rpcapp", EXTRA_ENV)];
for (const variant of VARIANTS)
  apps.push(await startRpcapp(`rpcapp ${variant}`, { ...EXTRA_ENV, ...envPairs(variant) }));
for (const tree of args["compare-tree"] ?? []) apps.push(await startRpcapp(`rpcapp in ${tree}`, EXTRA_ENV, tree));

const describe = (xs: Sample[]) => {
  const us = xs.map((s) => s.usPerCall);
  return { median: median(us), lowest: Math.min(...us) };
};

try {
  await waitFor("the bare server", () => bare.lines() > 0);
  await verifyOnce(`127.0.0.1:${barePort}`);
  for (const app of apps) {
    await waitForHttp(`http://127.0.0.1:${app.metricsPort}/readyz`);
    await verifyOnce(`127.0.0.1:${app.server.port}`);
  }

  for (let round = 1; round <= ROUNDS; round++) {
    const b = await measure(bare, bodyFile);
    bareSamples.push(b);
    const parts = [`bare ${b.usPerCall.toFixed(1)} µs/call (${b.reqPerSec.toFixed(0)} req/s)`];
    for (const app of apps) {
      const r = await measureRpcapp(app);
      app.samples.push(r);
      parts.push(`${app.label} ${r.usPerCall.toFixed(1)} µs/call (${r.reqPerSec.toFixed(0)} req/s)`);
    }
    console.log(`round ${round}: ${parts.join(", ")}`);
  }

  const extra = Object.keys(EXTRA_ENV).length ? `, rpcapp env ${JSON.stringify(EXTRA_ENV)}` : "";
  console.log(
    `\n${CALLS} VerifyUser calls × ${ROUNDS} rounds, ${CONNECTIONS} connections × ${STREAMS} streams, ` +
      `traceparent ${args.sampled ? "sampled" : "unsampled"}${extra}`,
  );
  const base = describe(bareSamples);
  const width = Math.max(...apps.map((a) => a.label.length), 12);
  console.log(
    `${"bare grpc-js".padEnd(width)}  ${base.median.toFixed(1)} µs CPU/call (median; lowest ${base.lowest.toFixed(1)})`,
  );
  for (const app of apps) {
    const own = describe(app.samples);
    console.log(
      `${app.label.padEnd(width)}  ${own.median.toFixed(1)} µs CPU/call (median; lowest ${own.lowest.toFixed(1)}), ` +
        `${(own.median / base.median).toFixed(2)}× bare (+${(own.median - base.median).toFixed(1)} µs)`,
    );
  }
} finally {
  bare.stop();
  for (const app of apps) app.server.stop();
  rmSync(dir, { recursive: true, force: true });
}
