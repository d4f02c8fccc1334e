/**
 * What the zx scripts behind the Makefile share: every command is printed before it runs, a
 * failure becomes one readable message and an exit code, and missing tools are named up front.
 */
import { $, chalk, type ProcessOutput, quote, which } from "zx";
import { EnvError } from "../lib/env.ts";

/** A failure to report to the user as it is: `message` on stderr, then exit with `exitCode`. */
export class ScriptError extends Error {
  override name = "ScriptError";
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

/** Exit code for "a prerequisite is missing" (distinct from a failed step). */
export const EXIT_MISSING_TOOL = 2;

export interface RunOptions {
  /** Added to this process's environment. */
  env?: Record<string, string>;
  /** Show the command's output as it comes (long steps); otherwise it is only captured. */
  stream?: boolean;
  /** Return a non-zero exit instead of throwing (the caller reads `exitCode`). */
  nothrow?: boolean;
}

/** `$ kubectl -n portico rollout status deployment/webapp` on stdout. */
export function printCommand(argv: readonly string[], note?: string): void {
  const line = argv.map((a) => quote(a)).join(" ");
  console.log(`${chalk.dim("$")} ${chalk.bold(line)}${note ? chalk.dim(`  # ${note}`) : ""}`);
}

/** A section heading, so a long run reads as a list of steps. */
export function step(title: string): void {
  console.log(`\n${chalk.cyan("==>")} ${chalk.bold(title)}`);
}

export class CommandFailed extends ScriptError {
  constructor(
    readonly argv: readonly string[],
    readonly output: ProcessOutput,
  ) {
    const tail = `${output.stderr}${output.stdout}`.trim().split("\n").slice(-15).join("\n");
    super(`\`${argv.join(" ")}\` failed (exit ${output.exitCode})${tail ? `:\n${tail}` : ""}`);
  }
}

/** Prints `argv`, runs it (no shell parsing: each element is one argument) and returns its output. */
export async function run(argv: readonly string[], opts: RunOptions = {}): Promise<ProcessOutput> {
  printCommand(
    argv,
    opts.env && Object.keys(opts.env).length > 0 ? `with ${Object.keys(opts.env).join(", ")} set` : undefined,
  );
  const p = $({ env: { ...process.env, ...opts.env }, nothrow: true, quiet: true, verbose: false })`${argv}`;
  if (opts.stream) {
    p.stdout.pipe(process.stdout, { end: false });
    p.stderr.pipe(process.stderr, { end: false });
  }
  const output = await p;
  if (output.exitCode !== 0 && !opts.nothrow) throw new CommandFailed(argv, output);
  return output;
}

/** Fails with EXIT_MISSING_TOOL, naming every tool in `tools` that is not on PATH. */
export function requireTools(tools: readonly string[], why: string): void {
  const missing = tools.filter((t) => !which.sync(t, { nothrow: true }));
  if (missing.length === 0) return;
  throw new ScriptError(
    `${missing.join(", ")} ${missing.length === 1 ? "is" : "are"} not installed (not found on PATH). ${why}\n` +
      `Install ${missing.join(" and ")}, or run the whole stack locally without a cluster: make dev`,
    EXIT_MISSING_TOOL,
  );
}

/** Runs a script's body; a ScriptError ends it with its message and exit code, anything else with 1. */
export async function main(name: string, body: () => Promise<void>): Promise<never> {
  try {
    await body();
    process.exit(0);
  } catch (err) {
    if (err instanceof ScriptError || err instanceof EnvError) {
      console.error(`\n${chalk.red(`${name}:`)} ${err.message}`);
      process.exit(err instanceof ScriptError ? err.exitCode : 2);
    }
    console.error(`\n${chalk.red(`${name}: unexpected error`)}`, err);
    process.exit(1);
  }
}
