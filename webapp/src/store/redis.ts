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
 *
 * Behind Sentinels (`REDIS_SENTINELS`, lib/redis-sentinel.ts) the store follows whichever server
 * is master. Replication is asynchronous, so a write the old master acknowledged may not have
 * reached the replica promoted in its place: a create is therefore answered only after `WAIT`
 * says `waitReplicas` replicas have it (REDIS_WAIT_REPLICAS, 1 behind Sentinels), and 503 when
 * they do not confirm it within `waitTimeoutMs` — the project may then exist, unacknowledged.
 * Cost: a master→replica round trip per batch of creates (./replicated-writes.ts); while no
 * replica answers, calls sent behind a WAIT wait up to `waitTimeoutMs` (docs/services.md).
 *
 * At most `maxProjects` projects (MAX_PROJECTS): the create script counts the index first, and a
 * full store answers StoreFullError (507) instead of growing until Redis refuses writes.
 */
import pino from "pino";
import type { Logger } from "../../../lib/log.ts";
import { BoundedRedis, isRedisUnavailable, type RedisConnection } from "../../../lib/redis.ts";
import { SentinelRedis } from "../../../lib/redis-sentinel.ts";
import { ReplicatedWrites } from "./replicated-writes.ts";
import { type ListOptions, type Project, type ProjectStore, StoreFullError, StoreUnavailableError } from "./store.ts";

export interface RedisStoreConfig {
  /** `REDIS_URL`, e.g. `redis://redis:6379`. */
  url: string;
  /** `REDIS_KEY_PREFIX`: every key this store writes starts with it. */
  keyPrefix: string;
  /** `REDIS_TIMEOUT_MS`: bound on each Redis call. */
  timeoutMs: number;
  /** `REDIS_SENTINELS` & co: follow the master they name; REDIS_URL's host and port are then not used. */
  sentinel?: RedisSentinelConfig;
  /** `REDIS_WAIT_REPLICAS`: replicas that must have a new project before it is acknowledged (0: none). */
  waitReplicas?: number;
  /** `REDIS_WAIT_TIMEOUT_MS`: how long a create waits for them; below `timeoutMs`. */
  waitTimeoutMs?: number;
  /** `MAX_PROJECTS`: a create beyond it fails with StoreFullError. */
  maxProjects?: number;
}

export interface RedisSentinelConfig {
  /** `REDIS_SENTINELS`: host:port of each Sentinel. */
  addresses: string[];
  /** `REDIS_SENTINEL_MASTER`. */
  masterName: string;
  /** `REDIS_SENTINEL_PASSWORD`. */
  password?: string;
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
 * ARGV[3] createdAt, ARGV[4] the most projects the store may hold. Returns the new id, or 0 when
 * the store is full (ZCARD is O(1)).
 */
const CREATE_SCRIPT = `
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return 0 end
local id = redis.call('INCR', KEYS[1])
redis.call('SET', ARGV[1] .. id, cjson.encode({ id = id, title = ARGV[2], createdAt = ARGV[3] }))
redis.call('ZADD', KEYS[2], id, id)
return id
`;

/** Opens the store; it connects in the background (readiness reports when it has). Throws on a URL Bun rejects. */
export function openRedisStore(config: RedisStoreConfig, log: Logger = pino({ level: "silent" })): ProjectStore {
  const onStateChange = (change: { up: true; downMs: number } | { up: false; reason: string }) => {
    if (change.up)
      log.info({ redis: redis.displayUrl, after_ms: Math.round(change.downMs) }, "project store: using redis");
    else
      log.warn({ redis: redis.displayUrl, reason: change.reason }, "project store: redis unavailable, answering 503");
  };
  const redis: RedisConnection = config.sentinel
    ? new SentinelRedis({
        sentinels: config.sentinel.addresses,
        masterName: config.sentinel.masterName,
        ...(config.sentinel.password ? { sentinelPassword: config.sentinel.password } : {}),
        url: config.url,
        timeoutMs: config.timeoutMs,
        onStateChange,
        log,
        name: "project store",
      })
    : new BoundedRedis(config.url, { timeoutMs: config.timeoutMs, onStateChange, log, name: "project store" });
  void redis.probe();
  const maxProjects = config.maxProjects ?? Number.MAX_SAFE_INTEGER;
  const waitReplicas = config.waitReplicas ?? 0;
  const waitTimeoutMs = config.waitTimeoutMs ?? Math.max(1, Math.floor(config.timeoutMs / 2));

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

  const replicated = waitReplicas > 0 ? new ReplicatedWrites(call, waitReplicas, waitTimeoutMs) : undefined;

  return {
    async create(title: string): Promise<Project> {
      const createdAt = new Date().toISOString();
      const args = [CREATE_SCRIPT, "2", idKey, indexKey, projectKeyPrefix, title, createdAt, String(maxProjects)];
      let id: unknown;
      let acked = waitReplicas;
      if (replicated) ({ reply: id, acked } = await replicated.write("EVAL", args));
      else id = await call("EVAL", args);
      if (typeof id !== "number") throw new Error(`the create script returned ${JSON.stringify(id)}, not an id`);
      if (id === 0) throw new StoreFullError(maxProjects);
      if (acked < waitReplicas)
        throw new StoreUnavailableError(
          `project ${id} reached the master but ${acked} of ${waitReplicas} replicas confirmed it within ${waitTimeoutMs} ms`,
        );
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
