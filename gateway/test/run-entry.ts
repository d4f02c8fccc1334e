/**
 * The gateway's real entry point (gateway/src/main.ts) run once with `args` and only `env` (plus
 * PATH): what a user typing `gateway …` gets — its exit code and output. A run that started a
 * gateway instead of exiting is killed after `timeoutMs`.
 */
import { resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "../..");

export async function runGateway(
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 20_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const proc = Bun.spawn([process.execPath, "gateway/src/main.ts", ...args], {
    cwd: ROOT,
    // Nothing from this shell may decide the outcome: ${VAR} references take their defaults.
    env: { PATH: process.env.PATH ?? "", ...env },
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), timeoutMs);
  const [code, stdout, stderr] = await Promise.all([
    proc.exited,
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
  ]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}
