/**
 * ProjectStore on Redis (lib/redis.ts): one store for every webapp replica, so a project created
 * through one pod is read through any other and survives pod restarts. Keys, under a prefix
 * (`REDIS_KEY_PREFIX`, default `portico:webapp:`):
 *
 *   <prefix>id            the id counter (INCR): ids unique across replicas, never reused
 *   <prefix>project:<id>  the project as JSON {id, title, createdAt}
 *   <prefix>index         sorted set of every id, score = id: keyset pages with ZRANGEBYSCORE
 *
 * No key has a TTL, and the store's Redis runs with `maxmemory-policy noeviction`
 * (k8s/redis-store.yaml): a full Redis refuses new projects (OOM → 503) rather than dropping old
 * ones. The gateway's rate-limit buckets live in another Redis (k8s/redis-limiter.yaml).
 *
 * While Redis is down, slow or refusing writes, every call fails within `timeoutMs` — at once
 * while the connection is known to be down — with StoreUnavailableError: the routes answer 503
 * with Retry-After and /readyz answers 503, until the connection's probe finds Redis again.
 */
import pino from "pino";
import type { Logger } from "../../../lib/log.ts";
import { BoundedRedis, isRedisUnavailable } from "../../../lib/redis.ts";
import { type ListOptions, type Project, type ProjectStore, StoreUnavailableError } from "./store.ts";

export interface RedisStoreConfig {
  /** `REDIS_URL`, e.g. `redis://redis:6379`. */
  url: string;
  /** `REDIS_KEY_PREFIX`: every key this store writes starts with it. */
  keyPrefix: string;
  /** `REDIS_TIMEOUT_MS`: bound on each Redis call. */
  timeoutMs: number;
}

export const DEFAULT_REDIS_KEY_PREFIX = "portico:webapp:";

/**
 * One script, so that a create is atomic and one round trip: the id is taken, the project written
 * and indexed together, or not at all — no id without its project, no project missing from the
 * index. (MULTI/EXEC would need the id first, in a round trip of its own, and a transaction on
 * the connection every request of this process shares.) Plain EVAL, not EVALSHA: creates are
 * rare next to reads, Redis caches the compiled script by its hash either way, and a restarted
 * Redis needs no NOSCRIPT reload. The project key is built in the script, which is fine on a
 * single Redis (Redis Cluster would need every key in KEYS).
 *
 * KEYS[1] the id counter, KEYS[2] the index; ARGV[1] the project key prefix, ARGV[2] the title,
 * ARGV[3] createdAt.
 */
const CREATE_SCRIPT = `
local id = redis.call('INCR', KEYS[1])
redis.call('SET', ARGV[1] .. id, cjson.encode({ id = id, title = ARGV[2], createdAt = ARGV[3] }))
redis.call('ZADD', KEYS[2], id, id)
return id
`;

/** Opens the store; it connects in the background (readiness reports when it has). Throws on a URL Bun rejects. */
export function openRedisStore(config: RedisStoreConfig, log: Logger = pino({ level: "silent" })): ProjectStore {
  const redis = new BoundedRedis(config.url, {
    timeoutMs: config.timeoutMs,
    onStateChange: (change) => {
      if (change.up)
        log.info({ redis: redis.displayUrl, after_ms: Math.round(change.downMs) }, "project store: using redis");
      else
        log.warn({ redis: redis.displayUrl, reason: change.reason }, "project store: redis unavailable, answering 503");
    },
    log,
    name: "project store",
  });
  void redis.probe();

  const idKey = `${config.keyPrefix}id`;
  const indexKey = `${config.keyPrefix}index`;
  const projectKeyPrefix = `${config.keyPrefix}project:`;

  /** A Redis call whose outage errors become StoreUnavailableError; anything else stays a bug (500). */
  const call = async (command: string, args: string[]): Promise<unknown> => {
    try {
      return await redis.call(command, args);
    } catch (err) {
      if (isRedisUnavailable(err))
        throw new StoreUnavailableError(`redis ${command}: ${(err as Error).message}`, { cause: err });
      throw err;
    }
  };

  return {
    async create(title: string): Promise<Project> {
      const createdAt = new Date().toISOString();
      const id = await call("EVAL", [CREATE_SCRIPT, "2", idKey, indexKey, projectKeyPrefix, title, createdAt]);
      if (typeof id !== "number") throw new Error(`the create script returned ${JSON.stringify(id)}, not an id`);
      return { id, title, createdAt };
    },
    async get(id: number): Promise<Project | null> {
      const key = projectKeyPrefix + id;
      const raw = await call("GET", [key]);
      return raw === null ? null : parseProject(raw, key);
    },
    async list({ limit, after }: ListOptions): Promise<Project[]> {
      // "(" makes the bound exclusive: ids greater than `after`.
      const ids = (await call("ZRANGEBYSCORE", [
        indexKey,
        `(${after}`,
        "+inf",
        "LIMIT",
        "0",
        String(limit),
      ])) as string[];
      if (ids.length === 0) return [];
      const keys = ids.map((id) => projectKeyPrefix + id);
      const values = (await call("MGET", keys)) as unknown[];
      const projects: Project[] = [];
      // Projects are never deleted here; an indexed id without its key (removed by hand) is skipped.
      values.forEach((raw, i) => {
        raw !== null && projects.push(parseProject(raw, keys[i]!));
      });
      return projects;
    },
    async ping(): Promise<void> {
      await call("PING", []);
    },
    async close(): Promise<void> {
      redis.close();
    },
  };
}

function parseProject(raw: unknown, key: string): Project {
  let value: unknown;
  try {
    value = typeof raw === "string" ? JSON.parse(raw) : undefined;
  } catch {
    // reported below
  }
  const p = value as Partial<Project> | undefined;
  if (typeof p?.id !== "number" || typeof p.title !== "string" || typeof p.createdAt !== "string") {
    throw new Error(`redis key ${key} does not hold a project: ${String(raw).slice(0, 80)}`);
  }
  return { id: p.id, title: p.title, createdAt: p.createdAt };
}
