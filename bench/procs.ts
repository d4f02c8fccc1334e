/**
 * Processes the benchmark starts, and what it reads about them from /proc. Every process is
 * registered here and killed by PID when the run ends, fails or is interrupted (Ctrl-C), so a
 * broken run leaves no nginx, gateway or upstream behind.
 */
import type { Subprocess } from "bun";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const running = new Map<number, { name: string; proc: Subprocess }>();

/** CPU to pin the load generator to, and the one the proxy under test gets (when taskset exists). */
export const LOAD_CPU = 0;
export const PROXY_CPU = 1;
const canPin = Bun.which("taskset") !== null && navigator.hardwareConcurrency >= 2;

/** argv prefixed with `taskset -c <cpu>` when pinning is possible; taskset execs, so the PID stays the program's. */
export function pinned(argv: string[], cpu: number | undefined): string[] {
  return cpu !== undefined && canPin ? ["taskset", "-c", String(cpu), ...argv] : argv;
}

export function pinningNote(): string {
  return canPin
    ? `load generator on CPU ${LOAD_CPU}, proxy on CPU ${PROXY_CPU} (taskset); upstreams unpinned`
    : "not pinned (taskset missing or a single CPU): load generator and proxy share the CPUs";
}

/**
 * A benchmark's `--env NAME=value` options as an environment; a pair without a name exits 2,
 * naming `program`.
 */
export function envPairs(pairs: string[] | undefined, program: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs ?? []) {
    const eq = pair.indexOf("=");
    if (eq < 1) {
      console.error(`${program}: --env ${pair}: expected NAME=value`);
      process.exit(2);
    }
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return env;
}

/** The middle value (of an even count, the upper of the two middle ones). */
export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

export type SpawnOptions = Parameters<typeof Bun.spawn>[1];

/** Set once the benchmark is being stopped (a signal): nothing new may start after that. */
let stopping = false;

/**
 * Whether each process starts in a session of its own (`setsid`, which execs: the PID stays the
 * program's). holdStill() stops proxies; were they in the benchmark's own process group, the
 * kernel would send the whole group SIGHUP (then SIGCONT) as soon as the group was orphaned with
 * a stopped member in it — when the shell that started the benchmark in the background exits.
 * A process with no SIGHUP handler dies of it: every Bun proxy row of one `make bench` did, nginx
 * reloaded and HAProxy dumped its state (bench/README.md, 2026-12-08 third stop). Ctrl-C now
 * reaches the benchmark alone, which stops everything it started by PID (stopAllOnSignals).
 */
const ownSession = Bun.which("setsid") !== null;

/** Bun.spawn in a session of its own (see ownSession), registered for clean-up; refused once the benchmark is stopping. */
export function spawn(name: string, argv: string[], opts: SpawnOptions = {}): Subprocess {
  if (stopping) throw new Error(`${name}: not started, the benchmark is stopping`);
  const options = { stdin: "ignore", ...opts } as SpawnOptions;
  const proc = Bun.spawn(ownSession ? ["setsid", ...argv] : argv, options);
  running.set(proc.pid, { name, proc });
  void proc.exited.then(() => running.delete(proc.pid));
  return proc;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
export async function stop(proc: Subprocess, graceMs = 3000): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  proc.kill("SIGTERM");
  const timer = setTimeout(() => proc.kill("SIGKILL"), graceMs);
  await proc.exited;
  clearTimeout(timer);
}

const tempDirs: string[] = [];

/** A fresh directory under the system temp dir, removed by stopAll() (configs, scripts, logs). */
export function tempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `portico-bench-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

/**
 * Stops every process started here, then removes the temp dirs they used. Loops until none is
 * left: the run's own code may have started one while the first ones stopped.
 */
export async function stopAll(): Promise<void> {
  // A stopped process keeps SIGTERM pending: continue what holdStill() stopped first.
  for (const pid of held) signal(pid, "SIGCONT");
  held.clear();
  while (running.size > 0) await Promise.all([...running.values()].map(({ proc }) => stop(proc)));
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

let handlersInstalled = false;
/** Ctrl-C or a kill of the benchmark stops everything it started before it exits. */
export function stopAllOnSignals(): void {
  if (handlersInstalled) return;
  handlersInstalled = true;
  for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.on(signal, () => {
      stopping = true;
      console.error(`\n${signal}: stopping ${running.size} process(es) the benchmark started…`);
      void stopAll().finally(() => process.exit(130));
    });
  }
}

/** PIDs stopped by holdStill() and not yet continued. */
const held = new Set<number>();

function signal(pid: number, name: "SIGSTOP" | "SIGCONT"): void {
  try {
    process.kill(pid, name);
  } catch {} // gone: nothing to hold
}

/**
 * Stops (SIGSTOP) every process of `pids` and their children until the returned function is
 * called, which continues them (SIGCONT). The benchmark holds every proxy but the one it
 * measures, so that no other proxy — not even its timers and collector, waking on the same
 * CPU — runs beside the one being measured (bench/README.md, "Pinning").
 */
export function holdStill(pids: number[]): () => void {
  const tree = [...new Set(pids.flatMap(processTree))];
  for (const pid of tree) {
    signal(pid, "SIGSTOP");
    held.add(pid);
  }
  return () => {
    for (const pid of tree) {
      signal(pid, "SIGCONT");
      held.delete(pid);
    }
  };
}

/** Clock ticks per second of /proc/<pid>/stat's utime and stime (USER_HZ; 100 on every Linux port in use). */
const CLK_TCK = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

/** A PID and every descendant (nginx and HAProxy fork workers), from /proc/<pid>/task/<tid>/children. */
export function processTree(pid: number): number[] {
  const all: number[] = [];
  const visit = (p: number) => {
    all.push(p);
    let tids: string[] = [];
    try {
      tids = readdirSync(`/proc/${p}/task`);
    } catch {
      return; // gone
    }
    for (const tid of tids) {
      let children = "";
      try {
        children = readFileSync(`/proc/${p}/task/${tid}/children`, "utf8");
      } catch {}
      for (const c of children.split(" ").filter(Boolean)) visit(Number(c));
    }
  };
  visit(pid);
  return all;
}

/**
 * CPU seconds (user + system) used so far by these processes and their descendants, all threads:
 * /proc/<pid>/stat counts the whole thread group. A descendant that exits between two readings
 * loses its share (the benchmark's targets do not fork during a run); one of `pids` that is gone
 * (or a zombie) throws, so that a proxy that died during a run drops the run instead of making
 * its CPU per request negative.
 */
export function cpuSeconds(pids: number[]): number {
  let ticks = 0;
  const top = new Set(pids);
  for (const pid of pids.flatMap(processTree)) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      if (top.has(pid)) throw new Error(`process ${pid} exited during the run`);
      continue;
    }
    // Fields after the parenthesised command name (which may contain spaces): state is field 3.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (top.has(pid) && (fields[0] === "Z" || fields[0] === "X"))
      throw new Error(`process ${pid} exited during the run`);
    ticks += Number(fields[11]) + Number(fields[12]); // utime (14), stime (15)
  }
  return ticks / CLK_TCK;
}

/** Resident set size in MiB of one process (VmRSS), or NaN once it is gone. */
export function rssMiB(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/** Polls `check` until true; fails naming `what`, or at once when `proc` exits. */
export async function waitUntil(
  what: string,
  check: () => Promise<boolean> | boolean,
  opts: { timeoutMs?: number; proc?: Subprocess; intervalMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + (opts.timeoutMs ?? 15_000);
  while (Date.now() < deadline) {
    if (opts.proc && opts.proc.exitCode !== null)
      throw new Error(`${what}: the process exited (${opts.proc.exitCode})`);
    try {
      if (await check()) return;
    } catch {}
    await Bun.sleep(opts.intervalMs ?? 25);
  }
  throw new Error(`${what}: not ready within ${opts.timeoutMs ?? 15_000} ms`);
}

/** Waits until `url` answers a 2xx to `init` (GET by default). */
export function waitHttp(url: string, proc?: Subprocess, init: BunFetchRequestInit = {}): Promise<void> {
  return waitUntil(
    url,
    async () => (await fetch(url, { ...init, signal: AbortSignal.timeout(1000) })).ok,
    proc ? { proc } : {},
  );
}
