/**
 * rpcapp's settings, read once from the environment at start-up. A bad value stops the process
 * with a message that names the variable (lib/env.ts).
 *
 *   LOG_PROBES   true: write an access line for probe RPCs too — grpc.health.v1.Health (Kubernetes
 *                probes, the gateway's active health checks every ~2 s) and server reflection.
 *                Default false: probes are counted in the metrics but not logged. The gateway and
 *                webapp read the same variable for their own probes.
 *   TLS_CERT_FILE, TLS_KEY_FILE   the gRPC port serves TLS only (both or neither; lib/tls.ts).
 *   TLS_CLIENT_CA_FILE            and requires a client certificate signed by this CA (mutual TLS).
 *   TLS_RELOAD_INTERVAL_MS        how often the files are checked for a renewal (default 5000).
 *                The HTTP port (METRICS_PORT) stays plain: probes and scrapers have no certificate.
 */
import { envBool, envInt, envPort, envString } from "../../lib/env.ts";
import { type ServiceTlsSettings, serviceTlsFromEnv } from "../../lib/tls.ts";

export interface RpcappConfig {
  host: string;
  /** gRPC listener. */
  port: number;
  /** HTTP listener for /healthz, /readyz, /version (and /metrics). */
  metricsPort: number;
  /** 0 disables it; see `maxConnectionAgeMs` in server.ts for why it is on by default. */
  maxConnectionAgeMs: number;
  maxConnectionAgeGraceMs: number;
  drainDelayMs: number;
  shutdownTimeoutMs: number;
  /** GC_WHEN_IDLE: a full collection when the process goes quiet after work, a shrink after 30 s of quiet (lib/idle-gc.ts). */
  gcWhenIdle: boolean;
  /** LOG_PROBES: access lines for health checks and reflection too (see above). */
  logProbes: boolean;
  /** TLS on the gRPC port; undefined: plain text (see above). */
  tls?: ServiceTlsSettings;
}

type Env = Record<string, string | undefined>;

export function loadConfig(env: Env = process.env): RpcappConfig {
  return {
    host: envString("HOST", "0.0.0.0", env),
    port: envPort("PORT", 50051, env),
    metricsPort: envPort("METRICS_PORT", 9090, env),
    maxConnectionAgeMs: envInt("GRPC_MAX_CONNECTION_AGE_MS", 30_000, { min: 0 }, env),
    maxConnectionAgeGraceMs: envInt("GRPC_MAX_CONNECTION_AGE_GRACE_MS", 10_000, { min: 0 }, env),
    drainDelayMs: envInt("DRAIN_DELAY_MS", 0, { min: 0 }, env),
    shutdownTimeoutMs: envInt("SHUTDOWN_TIMEOUT_MS", 10_000, { min: 100 }, env),
    gcWhenIdle: envBool("GC_WHEN_IDLE", true, env),
    logProbes: envBool("LOG_PROBES", false, env),
    tls: serviceTlsFromEnv(env),
  };
}
