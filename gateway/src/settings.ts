/**
 * Every environment variable the gateway reads, read here once at start-up into typed settings
 * that main.ts passes down: no other gateway module looks at the environment. A bad value stops
 * the process with an EnvError that names the variable, the value and what was expected.
 *
 * The environment itself is kept too (`env`), as data: routes.yaml's `${VAR:-default}`
 * references and auth's `secretEnv` read it when the file is loaded or reloaded, and the
 * OpenTelemetry SDK's standard OTEL_* variables are parsed from it by lib/telemetry/tracing.ts.
 */
import { isIP } from "node:net";
import { EnvError, envBool, envInt, envPort, envString, type ServiceIdentity, serviceIdentity } from "../../lib/env.ts";
import { logLevelFromEnv } from "../../lib/log.ts";

type Env = Readonly<Record<string, string | undefined>>;

export interface PeerSettings {
  /**
   * GATEWAY_PEERS: admin URLs of every gateway, this one included; one entry per replica, whose
   * alternatives are separated by `|` — the addresses a rolling replace moves that replica
   * between (`make dev` lists each slot's base and spare admin port). See peers.ts.
   */
  urls: string[];
  /** GATEWAY_PEERS_DNS: a name whose A/AAAA records are the replicas (a headless Service). */
  dnsName: string | undefined;
  /** GATEWAY_PEERS_INTERVAL_MS: how often the rate limiter counts the live replicas. */
  intervalMs: number;
}

export interface GatewaySettings {
  /** SERVICE_VERSION, INSTANCE_ID (else HOSTNAME). */
  identity: ServiceIdentity;
  /** LOG_LEVEL (pino's levels). */
  logLevel: string;
  /** LOG_PROBES: access-log /healthz and /readyz too (off: probes every few seconds drown the log). */
  logProbes: boolean;
  /**
   * LOG_FLUSH_MS: access-log lines are buffered and written at most this many ms late (one write
   * per 4 KiB, not per line: ~25 µs per request less); other lines go out at once. 0: every line
   * is written synchronously.
   */
  logFlushMs: number;
  /** HOST, PORT: the public listener (shared by every local gateway through SO_REUSEPORT). */
  host: string;
  port: number;
  /** HTTPS_PORT: the HTTPS listener, when routes.yaml has a `tls` block (shared like PORT). */
  httpsPort: number;
  /** ADMIN_PORT: admin API, metrics and dashboard; never reachable through the public port. */
  adminPort: number;
  /**
   * ADMIN_HOST: the admin listener's address; default HOST when ADMIN_TOKEN is set, else
   * 127.0.0.1 — an admin API without authentication is reachable from this machine only.
   */
  adminHost: string;
  /**
   * ADMIN_TOKEN: the bearer token every admin route but /metrics, /healthz and /readyz requires
   * (admin/auth.ts), and that this gateway sends when it fetches its peers' snapshots.
   */
  adminToken: string | undefined;
  /** ADMIN_INSECURE: allow a non-loopback ADMIN_HOST without ADMIN_TOKEN (refused otherwise). */
  adminInsecure: boolean;
  /** ROUTES_FILE. */
  routesFile: string;
  /** DRAIN_DELAY_MS, SHUTDOWN_TIMEOUT_MS (lib/lifecycle.ts). */
  drainDelayMs: number;
  shutdownTimeoutMs: number;
  /** GC_WHEN_IDLE: a full collection when the process goes quiet after work, a shrink after 30 s of quiet (lib/idle-gc.ts). */
  gcWhenIdle: boolean;
  /** REDIS_URL: one rate-limit budget for every gateway; without it each process keeps its own. */
  redisUrl: string | undefined;
  /** DNS_SERVER (host:port): discovery asks this server instead of the system resolver. */
  dnsServer: string | undefined;
  peers: PeerSettings;
  /** The environment as data, for `${VAR}` in routes.yaml, auth's secretEnv and OTEL_* (see the file comment). */
  env: Env;
}

/** Reads and validates the gateway's environment; throws EnvError naming the first bad variable. */
export function loadSettings(env: Env = process.env): GatewaySettings {
  const logLevel = logLevelFromEnv(env);
  const host = envString("HOST", "0.0.0.0", env);
  const admin = adminSettings(host, env);
  const port = envPort("PORT", 8080, env);
  const httpsPort = envPort("HTTPS_PORT", 8443, env);
  // Set to PORT on purpose, it is a mistake with or without a tls block; its default meeting PORT
  // matters only with one (checkHttpsPort, once routes.yaml is read).
  if (env.HTTPS_PORT?.trim()) checkHttpsPort({ port, httpsPort });
  return {
    identity: serviceIdentity("gateway", env),
    logLevel,
    logProbes: envBool("LOG_PROBES", false, env),
    logFlushMs: envInt("LOG_FLUSH_MS", 100, { min: 0, max: 10_000 }, env),
    host,
    port,
    httpsPort,
    adminPort: envPort("ADMIN_PORT", 9901, env),
    ...admin,
    routesFile: envString("ROUTES_FILE", "gateway/routes.yaml", env),
    drainDelayMs: envInt("DRAIN_DELAY_MS", 0, { min: 0 }, env),
    shutdownTimeoutMs: envInt("SHUTDOWN_TIMEOUT_MS", 20_000, { min: 100 }, env),
    gcWhenIdle: envBool("GC_WHEN_IDLE", true, env),
    redisUrl: envString("REDIS_URL", "", env) || undefined,
    dnsServer: dnsServer("DNS_SERVER", env),
    peers: {
      urls: peerEntries(envString("GATEWAY_PEERS", "", env)),
      dnsName: peersDnsName(envString("GATEWAY_PEERS_DNS", "", env).trim()),
      intervalMs: envInt("GATEWAY_PEERS_INTERVAL_MS", 5000, { min: 100 }, env),
    },
    env,
  };
}

/**
 * PORT and HTTPS_PORT must differ when the HTTPS listener opens (routes.yaml has a tls block): both
 * listeners bind with SO_REUSEPORT, so the second does not fail — the kernel hashes each new
 * connection to one of them, and about half the connections of either scheme reach the wrong one
 * and fail. 0 (each gets a free port) excepted.
 */
export function checkHttpsPort(settings: Pick<GatewaySettings, "port" | "httpsPort">): void {
  if (settings.port !== 0 && settings.httpsPort === settings.port)
    throw new EnvError(
      `HTTPS_PORT=${settings.httpsPort} is PORT too: the HTTPS listener (routes.yaml's tls block) and the plain one would share the port and about half the connections of each would fail; give HTTPS_PORT another port`,
    );
}

/** Shorter tokens are refused: the token is all that guards the config and the dashboard. */
const MIN_ADMIN_TOKEN_LENGTH = 16;

/** ADMIN_TOKEN, ADMIN_HOST, ADMIN_INSECURE; refuses an unauthenticated admin listener off loopback. */
function adminSettings(host: string, env: Env): Pick<GatewaySettings, "adminHost" | "adminToken" | "adminInsecure"> {
  const token = envString("ADMIN_TOKEN", "", env) || undefined;
  if (token !== undefined && (token.length < MIN_ADMIN_TOKEN_LENGTH || /\s/.test(token)))
    throw new EnvError(
      `ADMIN_TOKEN must be at least ${MIN_ADMIN_TOKEN_LENGTH} characters without spaces (it is ${token.length}); generate one with: openssl rand -base64 32`,
    );
  const adminHost = envString("ADMIN_HOST", token ? host : "127.0.0.1", env).trim();
  const adminInsecure = envBool("ADMIN_INSECURE", false, env);
  if (!token && !adminInsecure && !isLoopback(adminHost))
    throw new EnvError(
      `ADMIN_HOST=${adminHost} would serve the admin API — the config source, upstreams, dashboard — to the network without authentication. Set ADMIN_TOKEN (a bearer token: openssl rand -base64 32), or bind it to 127.0.0.1, or set ADMIN_INSECURE=true to accept the risk`,
    );
  return { adminHost, adminToken: token, adminInsecure };
}

/** 127.0.0.0/8, ::1, localhost: reachable from this machine only. */
export function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[(.*)\]$/, "$1");
  if (bare === "localhost" || bare === "::1") return true;
  return isIP(bare) === 4 && bare.startsWith("127.");
}

/** Comma-separated entries, each one or more `|`-separated http(s) URLs; trailing slashes dropped. */
function peerEntries(raw: string): string[] {
  const entries: string[] = [];
  for (const entry of raw.split(",")) {
    const urls = entry
      .split("|")
      .map((u) => u.trim().replace(/\/+$/, ""))
      .filter(Boolean);
    for (const url of urls) {
      if (!URL.canParse(url) || !/^https?:$/.test(new URL(url).protocol))
        throw new EnvError(
          `GATEWAY_PEERS: ${JSON.stringify(url)} is not an http(s) URL; expected admin URLs such as http://10.0.0.5:9901, comma-separated (| between one replica's alternative addresses)`,
        );
    }
    if (urls.length > 0) entries.push(urls.join("|"));
  }
  return entries;
}

/** A DNS server: an IP address (port 53), or ip:port / [ipv6]:port. */
function dnsServer(name: string, env: Env): string | undefined {
  const raw = envString(name, "", env).trim();
  if (raw === "" || isIP(raw) !== 0) return raw || undefined;
  const match = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(raw);
  if (!match || isIP(match[1]!) === 0 || Number(match[2]) < 1 || Number(match[2]) > 65535)
    throw new EnvError(`${name}=${JSON.stringify(raw)} is not a DNS server address, e.g. 127.0.0.1:5353`);
  return raw;
}

/** A DNS name (RFC 1123 labels; `_` allowed, as Kubernetes' SRV-style names use it). */
const DNS_NAME =
  /^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\.?$/;

/** GATEWAY_PEERS_DNS: a name to resolve, refused at start when it is none (a URL, a port, a space). */
function peersDnsName(raw: string): string | undefined {
  if (raw === "") return undefined;
  if (!DNS_NAME.test(raw) || isIP(raw) !== 0)
    throw new EnvError(
      `GATEWAY_PEERS_DNS=${JSON.stringify(raw)} is not a DNS name: give the name whose A/AAAA records are the gateways, e.g. gateway-headless.portico.svc.cluster.local (no scheme, no port)`,
    );
  return raw;
}
