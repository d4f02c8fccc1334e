/**
 * webapp's settings, read once from the environment at start-up. A bad value stops the process
 * with a message that names the variable (lib/env.ts).
 */
import { EnvError, envBool, envInt, envPort, envString } from "../../lib/env.ts";
import { redactUrl } from "../../lib/redis.ts";
import { DEFAULT_REDIS_KEY_PREFIX, type RedisStoreConfig } from "./store/redis.ts";

export interface WebappConfig {
  host: string;
  port: number;
  /** `sqlite` (default) or `redis`; see store/index.ts. */
  store: string;
  /** Only with STORE=redis, which requires REDIS_URL. */
  redis: RedisStoreConfig | undefined;
  /** SQLite file (its folder is created) or `:memory:`. */
  dbPath: string;
  /** Largest request body accepted, in bytes; larger ones get 413. */
  maxBodyBytes: number;
  /** Deepest JSON nesting accepted in a body; deeper ones get 400 before they are parsed. */
  maxJsonDepth: number;
  drainDelayMs: number;
  shutdownTimeoutMs: number;
  /** LOG_PROBES: access-log /healthz and /readyz too (off: the gateways' health checks would fill the log). */
  logProbes: boolean;
}

type Env = Record<string, string | undefined>;

export function loadConfig(env: Env = process.env): WebappConfig {
  const store = envString("STORE", "sqlite", env);
  return {
    host: envString("HOST", "0.0.0.0", env),
    port: envPort("PORT", 8080, env),
    store,
    redis: store === "redis" ? redisConfig(env) : undefined,
    dbPath: envString("DB_PATH", ".data/webapp.sqlite", env),
    maxBodyBytes: envInt("MAX_BODY_BYTES", 65_536, { min: 1, max: 64 * 1024 * 1024 }, env),
    // A project is one level deep; the cap only has to stay far below what overflows a stack.
    maxJsonDepth: envInt("MAX_JSON_DEPTH", 32, { min: 1, max: 1000 }, env),
    drainDelayMs: envInt("DRAIN_DELAY_MS", 0, { min: 0 }, env),
    shutdownTimeoutMs: envInt("SHUTDOWN_TIMEOUT_MS", 10_000, { min: 100 }, env),
    logProbes: envBool("LOG_PROBES", false, env),
  };
}

/** The URL schemes Bun's RedisClient accepts. */
const REDIS_URL_SCHEME = /^(redis|rediss|valkey|valkeys|redis\+tls|redis\+unix|redis\+tls\+unix):\/\//;

function redisConfig(env: Env): RedisStoreConfig {
  const url = envString("REDIS_URL", "", env);
  if (!url) throw new EnvError("STORE=redis needs REDIS_URL, e.g. REDIS_URL=redis://127.0.0.1:6379");
  if (!REDIS_URL_SCHEME.test(url))
    throw new EnvError(
      `REDIS_URL=${redactUrl(url)} is not a Redis URL; expected redis://host:port (or rediss://, valkey://)`,
    );
  return {
    url,
    keyPrefix: envString("REDIS_KEY_PREFIX", DEFAULT_REDIS_KEY_PREFIX, env),
    timeoutMs: envInt("REDIS_TIMEOUT_MS", 500, { min: 1, max: 60_000 }, env),
  };
}
