/**
 * Real processes for end-to-end tests: spawn a service, wait until it is ready, collect its
 * output, and kill everything by PID when the test ends.
 */
import type { Subprocess } from "bun";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { lines } from "../../../lib/lines.ts";

export const REPO_ROOT = resolve(import.meta.dir, "../../..");

export interface Spawned {
  name: string;
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** Every stdout/stderr line so far (JSON log lines stay strings; parse them in the test). */
  lines: string[];
  pid: number;
  /** Resolves with the exit code. */
  exited: Promise<number>;
}

const running = new Set<Spawned>();

async function pump(stream: ReadableStream<Uint8Array>, into: string[], name: string) {
  for await (const line of lines(stream)) {
    into.push(line);
    if (process.env.TEST_VERBOSE) console.error(`[${name}] ${line}`);
  }
}

/** Starts `bun <entry>` (or any argv) with the given env, from the repository root. */
export function spawnProcess(name: string, argv: string[], env: Record<string, string | undefined> = {}): Spawned {
  const proc = Bun.spawn(argv, {
    cwd: REPO_ROOT,
    env: { ...process.env, LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "info", ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const lines: string[] = [];
  void pump(proc.stdout, lines, name);
  void pump(proc.stderr, lines, name);
  const spawned: Spawned = { name, proc, lines, pid: proc.pid, exited: proc.exited };
  running.add(spawned);
  void proc.exited.then(() => running.delete(spawned));
  return spawned;
}

/** Starts one of the services (`gateway`, `webapp`, `rpcapp`) from source. */
export function spawnService(
  service: "gateway" | "webapp" | "rpcapp",
  env: Record<string, string | undefined>,
  name: string = service,
): Spawned {
  return spawnProcess(name, [process.execPath, `${service}/src/main.ts`], env);
}

/** Polls `check` until it returns true, or fails with `what` and the process output. */
export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  opts: { timeoutMs?: number; intervalMs?: number; proc?: Spawned } = {},
): Promise<void> {
  const { timeoutMs = 15_000, intervalMs = 25 } = opts;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (opts.proc && opts.proc.proc.exitCode !== null) {
      throw new Error(
        `${opts.proc.name} exited (${opts.proc.proc.exitCode}) while waiting for ${what}:\n${opts.proc.lines.slice(-30).join("\n")}`,
      );
    }
    try {
      if (await check()) return;
    } catch {
      // not yet
    }
    await Bun.sleep(intervalMs);
  }
  const tail = opts.proc ? `\n${opts.proc.name} output:\n${opts.proc.lines.slice(-30).join("\n")}` : "";
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${tail}`);
}

/** Waits until GET `url` answers 200. */
export function waitForHttp(url: string, proc?: Spawned, timeoutMs?: number): Promise<void> {
  return waitFor(
    `${url} to answer 200`,
    async () => (await fetch(url, { signal: AbortSignal.timeout(1000) })).status === 200,
    { proc, timeoutMs },
  );
}

/** Sends `signal` and waits for the exit (SIGKILL after `graceMs`). */
export async function stopProcess(p: Spawned, signal: NodeJS.Signals = "SIGTERM", graceMs = 10_000): Promise<number> {
  if (p.proc.exitCode !== null) return p.proc.exitCode;
  p.proc.kill(signal);
  const timer = setTimeout(() => p.proc.kill("SIGKILL"), graceMs);
  const code = await p.exited;
  clearTimeout(timer);
  return code;
}

const tempDirs: string[] = [];

/**
 * A fresh folder under the system temp dir (`portico-<prefix>-…`) for a test's files — configs,
 * keys, databases; stopAll() removes it once the processes that used it have stopped.
 */
export function testTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `portico-${prefix}-`));
  tempDirs.push(dir);
  return dir;
}

/**
 * Kills every process this test file started (use in afterAll), resuming stopped ones first,
 * then removes the folders testTempDir() made.
 */
export async function stopAll(): Promise<void> {
  const all = [...running];
  for (const p of all) {
    try {
      process.kill(p.pid, "SIGCONT");
    } catch {}
  }
  await Promise.all(all.map((p) => stopProcess(p, "SIGKILL", 2000)));
  for (const dir of tempDirs.splice(0)) rmSync(dir, { recursive: true, force: true });
}

/** Whether a prerequisite binary is installed; under CI a missing one is an error, not a skip. */
export function requireBinary(name: string): boolean {
  const found = Bun.which(name) !== null;
  if (!found && process.env.CI === "true") {
    throw new Error(`${name} is required under CI but is not installed (see .ci/run)`);
  }
  return found;
}
