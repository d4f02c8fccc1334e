/**
 * The one place that turns `STORE` into a ProjectStore. A Redis store joins here later, behind
 * the same interface; until then `STORE=redis` fails at start-up instead of silently using SQLite.
 */
import { EnvError } from "../../../lib/env.ts";
import { openSqliteStore } from "./sqlite.ts";
import type { ProjectStore } from "./store.ts";

export type { ListOptions, Project, ProjectStore } from "./store.ts";

export const STORE_KINDS = ["sqlite"] as const;

export interface StoreConfig {
  /** The value of `STORE`. */
  kind: string;
  /** `DB_PATH`: the SQLite file, or `:memory:`. */
  sqlitePath: string;
}

export function openStore(config: StoreConfig): ProjectStore {
  switch (config.kind) {
    case "sqlite":
      return openSqliteStore(config.sqlitePath);
    default:
      throw new EnvError(`STORE=${JSON.stringify(config.kind)} is not a store webapp knows; use one of: ${STORE_KINDS.join(", ")}`);
  }
}
