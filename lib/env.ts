/**
 * Typed access to environment variables, parsed once at start-up. A bad value stops the process
 * with a message that names the variable, the value and what was expected.
 */
export class EnvError extends Error {
  override name = "EnvError";
}

type Env = Record<string, string | undefined>;

export function envString(name: string, fallback: string, env: Env = process.env): string {
  const raw = env[name];
  return raw === undefined || raw === "" ? fallback : raw;
}

/** The longest delay a timer takes (2³¹ − 1 ms, ~24.8 days): past it, setTimeout fires after 1 ms. */
export const MAX_TIMER_MS = 2_147_483_647;

/**
 * An integer within `opts`' bounds. A duration in milliseconds (a name ending in `_MS`) is also
 * capped at MAX_TIMER_MS unless `opts.max` says otherwise: a larger one would fire at once.
 */
export function envInt(
  name: string,
  fallback: number,
  opts: { min?: number; max?: number } = {},
  env: Env = process.env,
): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  const { min = Number.MIN_SAFE_INTEGER, max = name.endsWith("_MS") ? MAX_TIMER_MS : Number.MAX_SAFE_INTEGER } = opts;
  if (!/^-?\d+$/.test(raw.trim()) || value < min || value > max) {
    throw new EnvError(`${name}=${JSON.stringify(raw)} is not an integer in [${min}, ${max}]`);
  }
  return value;
}

export function envPort(name: string, fallback: number, env: Env = process.env): number {
  return envInt(name, fallback, { min: 0, max: 65535 }, env);
}

export function envBool(name: string, fallback: boolean, env: Env = process.env): boolean {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return fallback;
  const value = parseBool(raw);
  if (value === undefined) throw new EnvError(`${name}=${JSON.stringify(raw)} is not a boolean (true/false)`);
  return value;
}

/**
 * A boolean as every boolean variable is read: 1/0, true/false, yes/no, on/off, in any case and
 * with spaces around; undefined for anything else (an empty value included: the caller's default).
 */
export function parseBool(raw: string): boolean | undefined {
  const value = raw.trim().toLowerCase();
  if (value === "1" || value === "true" || value === "yes" || value === "on") return true;
  if (value === "0" || value === "false" || value === "no" || value === "off") return false;
  return undefined;
}

export function envEnum<T extends string>(name: string, allowed: readonly T[], fallback: T, env: Env = process.env): T {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  if ((allowed as readonly string[]).includes(raw)) return raw as T;
  throw new EnvError(`${name}=${JSON.stringify(raw)} must be one of: ${allowed.join(", ")}`);
}

/** Identity every service reports: in headers, /version, logs and metric labels. */
export interface ServiceIdentity {
  service: string;
  version: string;
  /** Which replica this process is: the pod name in Kubernetes, `webapp-2` under `make dev`. */
  instance: string;
}

export function serviceIdentity(service: string, env: Env = process.env): ServiceIdentity {
  const instanceVariable = env.INSTANCE_ID ? "INSTANCE_ID" : "HOSTNAME";
  return {
    service,
    version: headerWord("SERVICE_VERSION", envString("SERVICE_VERSION", "dev", env)),
    instance: headerWord(
      instanceVariable,
      envString("INSTANCE_ID", envString("HOSTNAME", `${service}-${process.pid}`, env), env),
    ),
  };
}

/**
 * The identity travels in headers (X-Gateway, Via, X-Served-By): printable ASCII, no spaces —
 * what a pod name and a version label are. Checked here, at start-up: otherwise every request
 * would fail where a header is set from it, and a space would split Via's `1.1 <name>`.
 */
function headerWord(name: string, value: string): string {
  if (!/^[\x21-\x7e]+$/.test(value))
    throw new EnvError(
      `${name}=${JSON.stringify(value)} must be printable ASCII without spaces: it is sent in headers`,
    );
  return value;
}

/**
 * What a service reads from the environment before it has a logger (its identity, LOG_LEVEL):
 * a bad value stops the start with one plain line naming the variable, not a stack trace.
 */
export function startupEnv<T>(service: string, read: () => T): T {
  try {
    return read();
  } catch (err) {
    if (!(err instanceof EnvError)) throw err;
    console.error(`${service}: ${err.message}`);
    process.exit(1);
  }
}
