/**
 * The one place that turns `STORE` into a ProjectStore: `sqlite` (one file, shared by the
 * processes of one machine) or `redis` (shared by every replica, wherever it runs).
 */
import pino from "pino";
import { EnvError } from "../../../lib/env.ts";
import type { Logger } from "../../../lib/log.ts";
import { redactUrl } from "../../../lib/redis.ts";
import { openRedisStore, type RedisStoreConfig } from "./redis.ts";
import { openSqliteStore } from "./sqlite.ts";
import type { ProjectStore } from "./store.ts";

export type { ListOptions, Project, ProjectStore } from "./store.ts";

export const STORE_KINDS = ["sqlite", "redis"] as const;

export interface StoreConfig {
  /** The value of `STORE`. */
  kind: string;
  /** `DB_PATH`: the SQLite file, or `:memory:`. */
  sqlitePath: string;
  /** `REDIS_URL`, `REDIS_KEY_PREFIX`, `REDIS_TIMEOUT_MS`, the Sentinels; undefined without REDIS_URL. */
  redis?: RedisStoreConfig;
  /** `MAX_PROJECTS`: a create beyond it is refused (507); unlimited when absent. */
  maxProjects?: number;
}

export function openStore(config: StoreConfig, log: Logger = pino({ level: "silent" })): ProjectStore {
  switch (config.kind) {
    case "sqlite":
      return openSqliteStore(config.sqlitePath, { maxProjects: config.maxProjects });
    case "redis":
      if (!config.redis) throw new EnvError("STORE=redis needs REDIS_URL, e.g. REDIS_URL=redis://127.0.0.1:6379");
      try {
        return openRedisStore({ ...config.redis, maxProjects: config.maxProjects }, log);
      } catch (err) {
        throw new EnvError(`REDIS_URL=${redactUrl(config.redis.url)}: ${(err as Error).message}`);
      }
    default:
      throw new EnvError(
        `STORE=${JSON.stringify(config.kind)} is not a store webapp knows; use one of: ${STORE_KINDS.join(", ")}`,
      );
  }
}
