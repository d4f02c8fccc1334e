/**
 * webapp's settings, read once from the environment at start-up. A bad value stops the process
 * with a message that names the variable (lib/env.ts).
 */
import { EnvError, envBool, envInt, envPort, envString } from "../../lib/env.ts";
import { redactUrl } from "../../lib/redis.ts";
import { parseHostPort } from "../../lib/redis-sentinel.ts";
import { type ServiceTlsSettings, serviceTlsFromEnv } from "../../lib/tls.ts";
import { DEFAULT_REDIS_KEY_PREFIX, type RedisSentinelConfig, type RedisStoreConfig } from "./store/redis.ts";

export interface WebappConfig {
  host: string;
  port: number;
  /**
   * TLS_CERT_FILE / TLS_KEY_FILE (mutual with TLS_CLIENT_CA_FILE): PORT serves HTTPS only.
   * Undefined: plain HTTP, as without it.
   */
  tls: ServiceTlsSettings | undefined;
  /**
   * METRICS_PORT: with TLS only, a plain-HTTP listener for /healthz, /readyz and /metrics (kubelet
   * probes and Prometheus present no client certificate). Unused without TLS: PORT serves them.
   */
  metricsPort: number;
  /** `sqlite` (default) or `redis`; see store/index.ts. */
  store: string;
  /** Only with STORE=redis, which requires REDIS_URL. */
  redis: RedisStoreConfig | undefined;
  /** SQLite file (its folder is created) or `:memory:`. */
  dbPath: string;
  /** MAX_PROJECTS: the most projects the store holds; a create beyond it gets 507. */
  maxProjects: number;
  /** Largest request body accepted, in bytes; larger ones get 413. */
  maxBodyBytes: number;
  /** Deepest JSON nesting accepted in a body; deeper ones get 400 before they are parsed. */
  maxJsonDepth: number;
  drainDelayMs: number;
  shutdownTimeoutMs: number;
  /** GC_WHEN_IDLE: a full collection when the process goes quiet after work, a shrink after 30 s of quiet (lib/idle-gc.ts). */
  gcWhenIdle: boolean;
  /** LOG_PROBES: access-log /healthz and /readyz too (off: the gateways' health checks would fill the log). */
  logProbes: boolean;
}

type Env = Record<string, string | undefined>;

export function loadConfig(env: Env = process.env): WebappConfig {
  const store = envString("STORE", "sqlite", env);
  const port = envPort("PORT", 8080, env);
  const tls = serviceTlsFromEnv(env);
  const metricsPort = envPort("METRICS_PORT", 9090, env);
  if (tls && port !== 0 && metricsPort === port)
    throw new EnvError(
      `METRICS_PORT=${metricsPort} is PORT too: with TLS on, PORT serves HTTPS and METRICS_PORT plain HTTP for probes and scrapes`,
    );
  return {
    host: envString("HOST", "0.0.0.0", env),
    port,
    tls,
    metricsPort,
    store,
    redis: store === "redis" ? redisConfig(env) : undefined,
    dbPath: envString("DB_PATH", ".data/webapp.sqlite", env),
    // ~0.5 KB each in Redis at the longest title: 100 000 (~50 MB) fit well within the store's 96 MB (k8s/redis-store.yaml).
    maxProjects: envInt("MAX_PROJECTS", 100_000, { min: 1, max: 1_000_000_000 }, env),
    maxBodyBytes: envInt("MAX_BODY_BYTES", 65_536, { min: 1, max: 64 * 1024 * 1024 }, env),
    // A project is one level deep; the cap only has to stay far below what overflows a stack.
    maxJsonDepth: envInt("MAX_JSON_DEPTH", 32, { min: 1, max: 1000 }, env),
    drainDelayMs: envInt("DRAIN_DELAY_MS", 0, { min: 0 }, env),
    shutdownTimeoutMs: envInt("SHUTDOWN_TIMEOUT_MS", 10_000, { min: 100 }, env),
    gcWhenIdle: envBool("GC_WHEN_IDLE", true, env),
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
  const timeoutMs = envInt("REDIS_TIMEOUT_MS", 500, { min: 1, max: 60_000 }, env);
  const sentinel = sentinelConfig(env);
  // The WAIT blocks server-side for up to its timeout: it must end before the call's own timeout,
  // which would otherwise call Redis unreachable and drop the connection.
  const waitTimeoutMs = envInt("REDIS_WAIT_TIMEOUT_MS", Math.max(1, Math.floor(timeoutMs / 2)), { min: 1 }, env);
  // Behind Sentinels a failover promotes a replica: a create is acknowledged once one has it.
  const waitReplicas = envInt("REDIS_WAIT_REPLICAS", sentinel ? 1 : 0, { min: 0, max: 100 }, env);
  if (waitTimeoutMs >= timeoutMs) {
    if (env.REDIS_WAIT_TIMEOUT_MS)
      throw new EnvError(
        `REDIS_WAIT_TIMEOUT_MS=${waitTimeoutMs} must be below REDIS_TIMEOUT_MS=${timeoutMs}: the WAIT for replicas is one Redis call`,
      );
    // Defaulted: it matters only when a WAIT is sent, and then REDIS_TIMEOUT_MS is what to raise.
    if (waitReplicas > 0)
      throw new EnvError(
        `REDIS_TIMEOUT_MS=${timeoutMs} leaves no time for the WAIT for replicas (REDIS_WAIT_REPLICAS=${waitReplicas}), which must end within it: set at least 2`,
      );
  }
  return {
    url,
    keyPrefix: envString("REDIS_KEY_PREFIX", DEFAULT_REDIS_KEY_PREFIX, env),
    timeoutMs,
    sentinel,
    waitReplicas,
    waitTimeoutMs,
  };
}

/** REDIS_SENTINELS and its companions; undefined without REDIS_SENTINELS (REDIS_URL's server is used). */
function sentinelConfig(env: Env): RedisSentinelConfig | undefined {
  const list = envString("REDIS_SENTINELS", "", env);
  if (!list) return undefined;
  const addresses = list
    .split(",")
    .map((a) => a.trim())
    .filter(Boolean);
  for (const address of addresses) {
    try {
      parseHostPort(address);
    } catch (err) {
      throw new EnvError(`REDIS_SENTINELS: ${(err as Error).message}`);
    }
  }
  if (addresses.length === 0) throw new EnvError(`REDIS_SENTINELS=${JSON.stringify(list)} lists no host:port`);
  const password = envString("REDIS_SENTINEL_PASSWORD", "", env);
  return {
    addresses,
    masterName: envString("REDIS_SENTINEL_MASTER", "portico", env),
    ...(password ? { password } : {}),
  };
}
