/**
 * webapp's settings, read once from the environment at start-up. A bad value stops the process
 * with a message that names the variable (lib/env.ts).
 */
import { envInt, envPort, envString } from "../../lib/env.ts";

export interface WebappConfig {
  host: string;
  port: number;
  /** `sqlite` (default); see store/index.ts. */
  store: string;
  /** SQLite file (its folder is created) or `:memory:`. */
  dbPath: string;
  /** Largest request body accepted, in bytes; larger ones get 413. */
  maxBodyBytes: number;
  drainDelayMs: number;
  shutdownTimeoutMs: number;
}

type Env = Record<string, string | undefined>;

export function loadConfig(env: Env = process.env): WebappConfig {
  return {
    host: envString("HOST", "0.0.0.0", env),
    port: envPort("PORT", 8080, env),
    store: envString("STORE", "sqlite", env),
    dbPath: envString("DB_PATH", ".data/webapp.sqlite", env),
    maxBodyBytes: envInt("MAX_BODY_BYTES", 65_536, { min: 1, max: 64 * 1024 * 1024 }, env),
    drainDelayMs: envInt("DRAIN_DELAY_MS", 0, { min: 0 }, env),
    shutdownTimeoutMs: envInt("SHUTDOWN_TIMEOUT_MS", 10_000, { min: 100 }, env),
  };
}
