/**
 * `gateway --check <routes.yaml>`, like `nginx -t`: validates a routes file exactly as start-up
 * and reload would (parse, `${VAR}` interpolation from this environment, schema, cross-checks,
 * protos) without starting anything. Prints "ok" and returns 0, or prints every problem as
 * `file:line:column field: message` and returns 78 (EX_CONFIG, as a gateway refusing to start).
 */
import { ConfigError } from "./config/load.ts";
import { loadConfigFile } from "./config/reload.ts";

/** EX_USAGE and EX_CONFIG (sysexits.h). */
const EX_USAGE = 64;
export const EX_CONFIG = 78;

const USAGE = "usage: gateway [--check <routes.yaml>]  (settings come from the environment: docs/configuration.md)";

/**
 * The gateway's command line: nothing (start), `--check FILE` or `--check=FILE`. Anything else —
 * a mistyped flag, a file without `--check` — is refused with the usage line and 64 rather than
 * ignored: a config check that started a gateway instead would bind ports and never end.
 */
export function parseArgs(
  args: readonly string[],
): { kind: "start" } | { kind: "check"; file: string | undefined } | { kind: "usage" } {
  if (args.length === 0) return { kind: "start" };
  const [first, ...rest] = args;
  if (first === "--check" && rest.length <= 1) return { kind: "check", file: rest[0] };
  if (first?.startsWith("--check=") && rest.length === 0) return { kind: "check", file: first.slice(8) || undefined };
  return { kind: "usage" };
}

/** Prints the usage line; the exit code for a command line the gateway does not take. */
export function usage(): number {
  console.error(USAGE);
  return EX_USAGE;
}

export function checkRoutesFile(file: string | undefined, env: Readonly<Record<string, string | undefined>>): number {
  if (!file) return usage();
  try {
    loadConfigFile(file, env);
    console.log("ok");
    return 0;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(err.message);
    return EX_CONFIG;
  }
}
