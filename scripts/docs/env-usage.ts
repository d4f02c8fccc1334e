/**
 * Environment variables the code reads, found in its text: `process.env.X`, `Bun.env.X`,
 * `env.X` / `env["X"]` (an environment record passed down, as gateway/src/settings.ts does), the
 * lib/env.ts helpers (`envInt("X", …)`, `envString("X", …)` and the like), small local helpers of
 * the same shape (`int("X", 3)`), helpers handed a name with the environment record
 * (`dnsServer("DNS_SERVER", env)`), and `${X}` / `${X:-default}` references in routes.yaml.
 */
import { commentStyle, splitComments } from "./comments.ts";

const CODE_PATTERNS: readonly RegExp[] = [
  /\b(?:process|Bun|import\.meta)\.env\.([A-Z][A-Z0-9_]*)\b/g,
  /\b(?:process|Bun|import\.meta)\.env\[\s*["'`]([A-Z][A-Z0-9_]*)["'`]\s*\]/g,
  /\benv\.([A-Z][A-Z0-9_]*)\b/g,
  /\benv\[\s*["'`]([A-Z][A-Z0-9_]*)["'`]\s*\]/g,
  /\b(?:env[A-Z]\w*|int|num|str|bool|port)\(\s*["'`]([A-Z][A-Z0-9_]*)["'`]\s*,/g,
  // Other helpers handed a variable's name with the environment record (`dnsServer("DNS_SERVER",
  // env)`, `chosen(env, "X")`), and `replicas("GATEWAY_REPLICAS")`.
  /\b\w+\(\s*["'`]([A-Z][A-Z0-9_]*)["'`]\s*,\s*env\b/g,
  /\b\w+\(\s*env\s*,\s*["'`]([A-Z][A-Z0-9_]*)["'`]/g,
  /\breplicas\(\s*["'`]([A-Z][A-Z0-9_]*)["'`]\s*[,)]/g,
];
const YAML_PATTERN = /\$\{([A-Z_][A-Z0-9_]*)(?::?-[^}]*)?\}/g;

/** Variables every process inherits and none of ours configures: not for docs/configuration.md. */
export const INHERITED = new Set(["HOME", "PATH"]);

export function envVarsRead(file: string, source: string): Set<string> {
  const found = new Set<string>();
  const style = commentStyle(file);
  // Only code reads the environment: a comment that names `process.env.X` does not.
  const code = style
    ? splitComments(source, style)
        .map((l) => l.code)
        .join("\n")
    : source;
  const patterns = /\.ya?ml$/.test(file) ? [YAML_PATTERN] : CODE_PATTERNS;
  for (const pattern of patterns) for (const m of code.matchAll(pattern)) found.add(m[1]!);
  for (const name of INHERITED) found.delete(name);
  return found;
}

/**
 * Files whose environment reads are a user's settings: the services' code, lib/, the scripts behind
 * the Makefile and the benchmarks, and routes.yaml. Not tests, and not a service's own one-off
 * measurement scripts (`<service>/scripts/`), whose knobs their header comment lists.
 */
export function readsSettings(file: string): boolean {
  if (/(^|\/)test\/|\.test\.ts$/.test(file)) return false;
  if (file === "gateway/routes.yaml") return true;
  return /^((gateway|webapp|rpcapp)\/src|lib|scripts|bench)\/.*\.(ts|js)$/.test(file);
}
