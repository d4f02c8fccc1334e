/**
 * What one unary call costs rpcapp in CPU, against a bare grpc-js server measured in the same run.
 *
 *   bun rpcapp/scripts/cost.ts [--calls 4000] [--warmup 30000] [--rounds 21]
 *                              [--connections 4] [--streams 16] [--sampled]
 *                              [--env K=V[,K=V…]]… [--variant K=V[,K=V…]]… [--compare-tree DIR]…
 *
 * Starts rpcapp (`bun rpcapp/src/main.ts`) and rpcapp/scripts/bare-server.ts (same handler and
 * server options, no interceptor) as processes on free ports and warms each up with `--warmup`
 * calls (the JIT keeps compiling for tens of thousands of calls). Then, for `--rounds` rounds, it
 * drives each in turn with h2load from its own process: `--calls` VerifyUser calls on
 * `--connections` HTTP/2 connections with `--streams` concurrent streams each, the request
 * pre-encoded as a gRPC message with the metadata the gateway sends (x-request-id,
 * x-forwarded-for, traceparent, grpc-timeout).
 *
 * A call's cost is the CPU time of all the server's threads across a round (see `threadTimes`),
 * divided by the calls answered; the main (JavaScript) thread's share is shown beside it, the
 * rest being JIT and GC threads. Each server's median and lowest round are reported, with the
 * ratio to the baseline's median: on a shared machine absolute figures drift with everyone else's
 * load (rounds alternate servers so they see the same), the ratio much less, and the lowest round
 * is the closest to an idle machine.
 *
 *   --sampled        a sampled traceparent (flags 01), as from a gateway that exports traces;
 *                    by default unsampled, as under `make dev` without an OTLP endpoint
 *   --env            extra environment for every rpcapp, e.g. `--env OTEL_TRACES_SAMPLER=always_on`
 *   --variant        one more rpcapp with this environment on top, measured in the same rounds
 *   --compare-tree   one more rpcapp run from another checkout, e.g. the last commit:
 *                    `git archive HEAD rpcapp lib proto scripts package.json | tar -x -C /tmp/before
 *                    && ln -s "$PWD/node_modules" /tmp/before/`, then `--compare-tree /tmp/before`
 *
 * rpcapp's answers are checked, not assumed: grpc_server_handled_total{grpc_code="OK"} on its
 * /metrics must grow by the calls h2load saw succeed, and its stdout by one access line per call
 * (unless `--env LOG_LEVEL=warn`, as `make bench` runs rpcapp: no access lines then).
 * Prerequisite: h2load (Debian package nghttp2-client).
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { createServer } from "node:net";
import { RpcappClients } from "../test/clients.ts";

const { values: args } = parseArgs({
  options: {
    calls: { type: "string", default: "4000" },
    warmup: { type: "string", default: "30000" },
    rounds: { type: "string", default: "21" },
    connections: { type: "string", default: "4" },
    streams: { type: "string", default: "16" },
    sampled: { type: "boolean", default: false },
    env: { type: "string", multiple: true, default: [] },
    variant: { type: "string", multiple: true, default: [] },
    "compare-tree": { type: "string", multiple: true, default: [] },
  },
});

function positiveInt(name: string, raw: string | undefined): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name} must be a positive integer, got ${raw}`);
  return n;
}

function envPairs(list: string): Record<string, string> {
  return Object.fromEntries(
    list.split(",").map((pair) => {
      const eq = pair.indexOf("=");
      if (eq <= 0) throw new Error(`expected KEY=VALUE, got ${JSON.stringify(pair)}`);
      return [pair.slice(0, eq), pair.slice(eq + 1)];
    }),
  );
}

const CALLS = positiveInt("calls", args.calls);
const WARMUP = positiveInt("warmup", args.warmup);
const ROUNDS = positiveInt("rounds", args.rounds);
const CONNECTIONS = positiveInt("connections", args.connections);
const STREAMS = positiveInt("streams", args.streams);
const EXTRA_ENV: Record<string, string> = Object.assign({}, ...(args.env ?? []).map(envPairs));
const REPO_ROOT = resolve(import.meta.dir, "../..");

if (!Bun.which("h2load")) {
  console.error("h2load is required: apt-get install nghttp2-client");
  process.exit(2);
}

// Service code may not import the test harness in scripts/ (scripts/test/imports.test.ts): the
// two helpers this script needs from it, pared down.

/** Free ports below 32768, where the kernel never hands out client source ports. */
async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  const canListen = (port: number) =>
    new Promise<boolean>((done) => {
      const server = createServer();
      server.once("error", () => done(false));
      server.listen({ port, host: "127.0.0.1", exclusive: true }, () => server.close(() => done(true)));
    });
  while (ports.length < n) {
    const port = 20000 + Math.floor(Math.random() * 12000);
    if (!ports.includes(port) && (await canListen(port))) ports.push(port);
  }
  return ports;
}

/** Polls `check` every 25 ms until it holds, or throws naming `what` after `timeoutMs`. */
async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await Promise.resolve(check()).catch(() => false)) return;
    await Bun.sleep(25);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/** Time a thread has spent on a CPU, in seconds (/proc/…/schedstat counts nanoseconds); 0 once it ended. */
function threadSeconds(pid: number, tid: string): number {
  try {
    return Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]) / 1e9;
  } catch {
    return 0;
  }
}

/**
 * CPU seconds of each thread of a process. Read from each thread's schedstat rather than from
 * /proc/<pid>/stat (utime + stime), whose 10 ms ticks would need rounds ten times longer for the
 * same resolution.
 */
function threadTimes(pid: number): Map<string, number> {
  const times = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) times.set(tid, threadSeconds(pid, tid));
  return times;
}

/** CPU seconds spent between two readings: by every thread (one that ended in between is lost), and by the main one. */
function cpuBetween(pid: number, before: Map<string, number>, after: Map<string, number>) {
  let total = 0;
  for (const [tid, seconds] of after) total += Math.max(0, seconds - (before.get(tid) ?? 0));
  const main = String(pid);
  return { total, main: (after.get(main) ?? 0) - (before.get(main) ?? 0) };
}

/** `VerifyRequest{id: 121, token: "a$$"}` as one length-prefixed gRPC message. */
function grpcBody(): Uint8Array {
  const message = Uint8Array.of(0x08, 121, 0x12, 3, ...new TextEncoder().encode("a$$"));
  const frame = new Uint8Array(5 + message.length);
  new DataView(frame.buffer).setUint32(1, message.length);
  frame.set(message, 5);
  return frame;
}

interface Sample {
  usPerCall: number;
  mainUsPerCall: number;
  reqPerSec: number;
}

interface Server {
  label: string;
  pid: number;
  port: number;
  /** Lines written to stdout so far. */
  lines(): number;
  stop(): void;
  /** For rpcapp: its /metrics port, to check the calls were answered OK. */
  metricsPort?: number;
  /** Writes an access line per call (LOG_LEVEL info or lower), checked like the OK count. */
  logsCalls: boolean;
  samples: Sample[];
}

function spawn(label: string, argv: string[], env: Record<string, string>, metricsPort?: number): Server {
  const proc = Bun.spawn(argv, {
    cwd: REPO_ROOT,
    env: { ...process.env, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "inherit",
  });
  let newlines = 0;
  // Drained as cheaply as possible: this process shares the machine with the ones measured.
  void (async () => {
    const reader = (proc.stdout as ReadableStream<Uint8Array>).getReader();
    for (let read = await reader.read(); !read.done; read = await reader.read()) {
      const chunk = read.value;
      for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, i + 1)) newlines++;
    }
  })();
  return {
    label,
    pid: proc.pid,
    port: Number(env.PORT),
    lines: () => newlines,
    stop: () => proc.kill("SIGKILL"),
    metricsPort,
    logsCalls: ["info", "debug", "trace"].includes(env.LOG_LEVEL ?? "info"),
    samples: [],
  };
}

async function startRpcapp(label: string, env: Record<string, string>, root = REPO_ROOT): Promise<Server> {
  const [port, metricsPort] = (await freePorts(2)) as [number, number];
  const argv = [process.execPath, join(resolve(root), "rpcapp/src/main.ts")];
  return spawn(
    label,
    argv,
    {
      HOST: "127.0.0.1",
      PORT: String(port),
      METRICS_PORT: String(metricsPort),
      INSTANCE_ID: "rpcapp-cost",
      LOG_LEVEL: "info",
      // Connection age would reconnect h2load mid-run; the gateway's reconnects are rare by comparison.
      GRPC_MAX_CONNECTION_AGE_MS: "0",
      ...env,
    },
    metricsPort,
  );
}

async function verifyOnce(server: Server): Promise<void> {
  const clients = new RpcappClients(`127.0.0.1:${server.port}`);
  try {
    const { reply, error } = await clients.verifyUser({ id: 121, token: "a$$" });
    if (error || reply?.message !== "Verified: 121") {
      const answer = error ? `${grpc.status[error.code]} ${error.details}` : JSON.stringify(reply);
      throw new Error(`${server.label} answered ${answer}`);
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

async function h2load(
  port: number,
  calls: number,
  bodyFile: string,
): Promise<{ succeeded: number; reqPerSec: number }> {
  const flags = args.sampled ? "01" : "00";
  const headers = [
    "content-type: application/grpc",
    "te: trailers",
    "grpc-timeout: 10000m",
    "x-request-id: cost-run-1",
    "x-forwarded-for: 127.0.0.1",
    `traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-${flags}`,
  ];
  const argv = [
    "h2load",
    `-n${calls}`,
    `-c${CONNECTIONS}`,
    `-m${STREAMS}`,
    "-t1",
    "-d",
    bodyFile,
    ...headers.flatMap((h) => ["-H", h]),
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
  if (succeeded !== calls) throw new Error(`h2load: ${succeeded} of ${calls} calls succeeded:\n${out}`);
  return { succeeded, reqPerSec };
}

/** One round on `server`; for an rpcapp, checks every call was answered OK and logged once. */
async function measure(server: Server, bodyFile: string): Promise<Sample> {
  const okBefore = server.metricsPort ? await okCount(server.metricsPort) : 0;
  const linesBefore = server.lines();
  const before = threadTimes(server.pid);
  const load = await h2load(server.port, CALLS, bodyFile);
  const cpu = cpuBetween(server.pid, before, threadTimes(server.pid));
  if (server.metricsPort) {
    const ok = (await okCount(server.metricsPort)) - okBefore;
    if (ok !== load.succeeded) throw new Error(`${server.label} counted ${ok} OK calls, h2load ${load.succeeded}`);
    if (server.logsCalls)
      await waitFor(`${server.label}'s access lines`, () => server.lines() - linesBefore >= load.succeeded, 5_000);
  }
  return {
    usPerCall: (cpu.total * 1e6) / load.succeeded,
    mainUsPerCall: (cpu.main * 1e6) / load.succeeded,
    reqPerSec: load.reqPerSec,
  };
}

function median(xs: number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const dir = mkdtempSync(join(tmpdir(), "rpcapp-cost-"));
const bodyFile = join(dir, "verify.grpc");
writeFileSync(bodyFile, grpcBody());

const [barePort] = (await freePorts(1)) as [number];
const bare = spawn("bare grpc-js", [process.execPath, "rpcapp/scripts/bare-server.ts"], { PORT: String(barePort) });
const servers = [bare, await startRpcapp("rpcapp", EXTRA_ENV)];
for (const variant of args.variant ?? []) {
  servers.push(await startRpcapp(`rpcapp ${variant}`, { ...EXTRA_ENV, ...envPairs(variant) }));
}
for (const tree of args["compare-tree"] ?? []) servers.push(await startRpcapp(`rpcapp in ${tree}`, EXTRA_ENV, tree));

try {
  await waitFor("the bare server", () => bare.lines() > 0);
  for (const server of servers) {
    const ready = `http://127.0.0.1:${server.metricsPort}/readyz`;
    if (server.metricsPort) await waitFor(ready, async () => (await fetch(ready)).status === 200);
    await verifyOnce(server);
    await h2load(server.port, WARMUP, bodyFile);
  }

  for (let round = 1; round <= ROUNDS; round++) {
    const parts: string[] = [];
    for (const server of servers) {
      const sample = await measure(server, bodyFile);
      server.samples.push(sample);
      parts.push(`${server.label} ${sample.usPerCall.toFixed(1)}`);
    }
    console.log(`round ${round} (µs/call): ${parts.join(", ")}`);
  }

  const extra = Object.keys(EXTRA_ENV).length ? `, rpcapp env ${JSON.stringify(EXTRA_ENV)}` : "";
  console.log(
    `\n${CALLS} VerifyUser calls × ${ROUNDS} rounds after ${WARMUP} warm-up calls, ${CONNECTIONS} connections × ` +
      `${STREAMS} streams, traceparent ${args.sampled ? "sampled" : "unsampled"}${extra}`,
  );
  const width = Math.max(...servers.map((s) => s.label.length));
  const baseline = median(bare.samples.map((s) => s.usPerCall));
  console.log(`${"".padEnd(width)}  µs CPU/call: median (main thread), lowest; req/s median; vs bare`);
  for (const server of servers) {
    const total = median(server.samples.map((s) => s.usPerCall));
    const main = median(server.samples.map((s) => s.mainUsPerCall));
    const lowest = Math.min(...server.samples.map((s) => s.usPerCall));
    const rate = median(server.samples.map((s) => s.reqPerSec));
    const vs = server === bare ? "" : `   ${(total / baseline).toFixed(2)}× (+${(total - baseline).toFixed(1)} µs)`;
    console.log(
      `${server.label.padEnd(width)}  ${total.toFixed(1).padStart(6)} (${main.toFixed(1)}), ${lowest.toFixed(1)}; ` +
        `${rate.toFixed(0)} req/s${vs}`,
    );
  }
} finally {
  for (const server of servers) server.stop();
  rmSync(dir, { recursive: true, force: true });
}
