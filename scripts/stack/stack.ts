/**
 * The local stack: N webapps, N rpcapps and N gateways as Bun processes on one machine, wired by
 * environment variables only (no addresses in code). `make dev` runs it with pretty logs; the
 * end-to-end tests and benchmarks start the same stack on free ports.
 */
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { EnvError, envBool } from "../../lib/env.ts";
import { lines } from "../../lib/lines.ts";
import { ensureLocalPki } from "../tls/pki.ts";
import { isListening, type LocalRedis, startLocalRedis } from "./redis.ts";

export const REPO_ROOT = resolve(import.meta.dir, "../..");

export interface StackOptions {
  gatewayPort: number;
  gatewayReplicas: number;
  webappReplicas: number;
  rpcappReplicas: number;
  /** First port of each kind; replica i listens on base + i. */
  adminBasePort: number;
  webappBasePort: number;
  rpcappBasePort: number;
  rpcappHttpBasePort: number;
  /** With TLS: webapp's plain listener for probes and /metrics (its PORT serves HTTPS only). */
  webappMetricsBasePort: number;
  /**
   * `TLS=1 make dev`: HTTPS at the gateways' httpsPort and mutual TLS from the gateways to every
   * webapp and rpcapp, with a local CA and certificates in `dir` (scripts/tls/pki.ts, made on the
   * first run). The plain gateway port stays open as well.
   */
  tls?: { dir: string; httpsPort: number };
  host: string;
  /** SQLite file shared by the webapps. */
  dbPath: string;
  routesFile: string;
  version: string;
  /** Extra env for every process (e.g. LOG_LEVEL). */
  env: Record<string, string>;
  /** Called with every output line of every process. */
  onLine: (name: string, line: string) => void;
  /** Called when a process exits while the stack is up. */
  onExit?: (name: string, code: number) => void;
  /** Start a local redis-server on this port for the gateways' shared rate limits (see redis.ts). */
  redisPort?: number;
  /** A running Redis the gateways use instead (wins over redisPort). */
  redisUrl?: string;
}

export interface StackProcess {
  name: string;
  kind: "gateway" | "webapp" | "rpcapp";
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** URL that answers 200 once this process is ready. */
  readyUrl: string;
  env: Record<string, string>;
}

/** Defaults for `make dev`, each overridable by the environment variable of the same name. */
export function stackOptionsFromEnv(
  env: Record<string, string | undefined> = process.env,
): Omit<StackOptions, "onLine"> {
  // Port 0 would let the kernel pick a different port per process (the gateways could not share
  // one, nothing would find the replicas), and 0 replicas a stack without a gateway or a backend:
  // both are refused here rather than failing later with a less clear message.
  const int = (name: string, fallback: number, what: "port" | "count") => {
    const raw = env[name];
    if (raw === undefined || raw === "") return fallback;
    const n = Number(raw);
    const [min, max] = what === "port" ? [1, 65535] : [1, Number.MAX_SAFE_INTEGER];
    if (!Number.isInteger(n) || n < min || n > max)
      throw new EnvError(
        `${name}=${raw} is not valid: ${what === "port" ? "a port from 1 to 65535" : "a whole number of replicas, at least 1,"} is expected (docs/configuration.md, "The local stack (make dev)")`,
      );
    return n;
  };
  const port = (name: string, fallback: number) => int(name, fallback, "port");
  const replicas = (name: string) => int(name, 3, "count");
  return {
    gatewayPort: port("GATEWAY_PORT", 8080),
    gatewayReplicas: replicas("GATEWAY_REPLICAS"),
    webappReplicas: replicas("WEBAPP_REPLICAS"),
    rpcappReplicas: replicas("RPCAPP_REPLICAS"),
    adminBasePort: port("ADMIN_BASE_PORT", 9901),
    webappBasePort: port("WEBAPP_BASE_PORT", 3001),
    rpcappBasePort: port("RPCAPP_BASE_PORT", 5001),
    rpcappHttpBasePort: port("RPCAPP_HTTP_BASE_PORT", 5101),
    webappMetricsBasePort: port("WEBAPP_METRICS_BASE_PORT", 3101),
    ...(envBool("TLS", false, env)
      ? { tls: { dir: resolve(REPO_ROOT, env.TLS_DIR || ".data/tls"), httpsPort: port("GATEWAY_HTTPS_PORT", 8443) } }
      : {}),
    host: env.DEV_HOST ?? "127.0.0.1",
    dbPath: env.DB_PATH ?? resolve(REPO_ROOT, ".data/webapp.sqlite"),
    routesFile: env.ROUTES_FILE ?? "gateway/routes.yaml",
    version: env.SERVICE_VERSION ?? "dev",
    env: {},
  };
}

export class Stack {
  readonly processes: StackProcess[] = [];
  /** The redis-server this stack started, if any. */
  redis: LocalRedis | undefined;
  #stopping = false;
  /** Aborted by stop(): a redis-server still starting is killed rather than left behind. */
  readonly #abort = new AbortController();
  /** The redis-server being started, so stop() can wait for it (and stop it) mid-start. */
  #redisStarting: Promise<LocalRedis> | undefined;

  constructor(readonly opts: StackOptions) {}

  get gatewayUrl(): string {
    return `http://${this.opts.host}:${this.opts.gatewayPort}`;
  }

  /** The gateways' HTTPS listener, with TLS on. */
  get gatewayHttpsUrl(): string | undefined {
    return this.opts.tls && `https://${this.opts.host}:${this.opts.tls.httpsPort}`;
  }

  endpoints(kind: "webapp" | "rpcapp"): string {
    const { host } = this.opts;
    const [n, base] =
      kind === "webapp"
        ? [this.opts.webappReplicas, this.opts.webappBasePort]
        : [this.opts.rpcappReplicas, this.opts.rpcappBasePort];
    return Array.from({ length: n }, (_, i) => `${host}:${base + i}`).join(",");
  }

  /**
   * The gateways' ADMIN_TOKEN (from `env`, else this process's environment, which the processes
   * inherit): the harness sends it when it reads their admin routes. Unset in `make dev` by
   * default: the admin listeners are on loopback without authentication.
   */
  get adminToken(): string | undefined {
    return this.opts.env.ADMIN_TOKEN || process.env.ADMIN_TOKEN || undefined;
  }

  adminUrls(): string[] {
    return Array.from(
      { length: this.opts.gatewayReplicas },
      (_, i) => `http://${this.opts.host}:${this.opts.adminBasePort + i}`,
    );
  }

  /** The env one replica runs with (replica numbers start at 1). */
  envFor(kind: StackProcess["kind"], replica: number): { env: Record<string, string>; readyUrl: string } {
    const { host } = this.opts;
    const i = replica - 1;
    const common = {
      HOST: host,
      INSTANCE_ID: `${kind}-${replica}`,
      SERVICE_VERSION: this.opts.version,
      ...this.opts.env,
    };
    const tls = this.opts.tls;
    // Each service's own certificate, and the CA a client certificate must chain to (mutual TLS).
    const serviceTls = (name: string): Record<string, string> =>
      tls
        ? {
            TLS_CERT_FILE: join(tls.dir, `${name}.crt`),
            TLS_KEY_FILE: join(tls.dir, `${name}.key`),
            TLS_CLIENT_CA_FILE: join(tls.dir, "ca.crt"),
          }
        : {};
    switch (kind) {
      case "webapp": {
        const port = this.opts.webappBasePort + i;
        // With TLS, PORT serves HTTPS to the gateways only; probes and scrapes use METRICS_PORT.
        const plain = tls ? this.opts.webappMetricsBasePort + i : port;
        return {
          env: {
            ...common,
            PORT: String(port),
            DB_PATH: this.opts.dbPath,
            ...serviceTls("webapp"),
            ...(tls ? { METRICS_PORT: String(plain) } : {}),
          },
          readyUrl: `http://${host}:${plain}/readyz`,
        };
      }
      case "rpcapp": {
        const httpPort = this.opts.rpcappHttpBasePort + i;
        return {
          env: {
            ...common,
            PORT: String(this.opts.rpcappBasePort + i),
            METRICS_PORT: String(httpPort),
            ...serviceTls("rpcapp"),
          },
          readyUrl: `http://${host}:${httpPort}/readyz`,
        };
      }
      case "gateway": {
        const adminPort = this.opts.adminBasePort + i;
        return {
          env: {
            ...common,
            PORT: String(this.opts.gatewayPort),
            ADMIN_PORT: String(adminPort),
            ROUTES_FILE: this.opts.routesFile,
            WEBAPP_ENDPOINTS: this.endpoints("webapp"),
            RPCAPP_ENDPOINTS: this.endpoints("rpcapp"),
            GATEWAY_PEERS: this.adminUrls().join(","),
            ...(this.redisUrl ? { REDIS_URL: this.redisUrl } : {}),
            // routes.yaml's tls blocks read these (`${TLS:-false}`, `${TLS_DIR:-.data/tls}`).
            ...(tls ? { TLS: "true", TLS_DIR: tls.dir, HTTPS_PORT: String(tls.httpsPort) } : {}),
          },
          readyUrl: `http://${host}:${adminPort}/readyz`,
        };
      }
    }
  }

  /** Whether stop() was called: nothing new starts from then on. */
  get stopping(): boolean {
    return this.#stopping;
  }

  /**
   * Starts one replica process (does not wait for readiness). Refused once stop() was called: a
   * start-up or a rollout still running would otherwise start processes that stop() has no longer
   * got in its list, and they would outlive the stack.
   */
  spawn(kind: StackProcess["kind"], replica: number, extraEnv: Record<string, string> = {}): StackProcess {
    if (this.#stopping) throw new StackStoppingError(`the stack is stopping: ${kind}-${replica} is not started`);
    const { env, readyUrl } = this.envFor(kind, replica);
    const fullEnv = { ...env, ...extraEnv };
    const name = fullEnv.INSTANCE_ID!;
    const proc = Bun.spawn([process.execPath, `${kind}/src/main.ts`], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...fullEnv },
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    const started: StackProcess = { name, kind, proc, readyUrl, env: fullEnv };
    this.processes.push(started);
    void pipeLines(proc.stdout, (line) => this.opts.onLine(name, line));
    void pipeLines(proc.stderr, (line) => this.opts.onLine(name, line));
    void proc.exited.then((code) => {
      const index = this.processes.indexOf(started);
      if (index >= 0) this.processes.splice(index, 1);
      if (!this.#stopping) this.opts.onExit?.(name, code);
    });
    return started;
  }

  /**
   * Every port start() is about to listen on, named for the message when one is taken: the
   * gateways' public (and HTTPS) port, their admin ports, the services' ports, the local Redis.
   */
  portsToStart(): { port: number; what: string }[] {
    const o = this.opts;
    const range = (base: number, n: number, what: string) =>
      Array.from({ length: n }, (_, i) => ({ port: base + i, what: `${what}-${i + 1}` }));
    return [
      { port: o.gatewayPort, what: "GATEWAY_PORT" },
      ...(o.tls ? [{ port: o.tls.httpsPort, what: "GATEWAY_HTTPS_PORT" }] : []),
      ...range(o.adminBasePort, o.gatewayReplicas, "admin of gateway"),
      ...range(o.webappBasePort, o.webappReplicas, "webapp"),
      ...(o.tls ? range(o.webappMetricsBasePort, o.webappReplicas, "metrics of webapp") : []),
      ...range(o.rpcappBasePort, o.rpcappReplicas, "rpcapp"),
      ...range(o.rpcappHttpBasePort, o.rpcappReplicas, "HTTP of rpcapp"),
      ...(!o.redisUrl && o.redisPort !== undefined ? [{ port: o.redisPort, what: "REDIS_PORT" }] : []),
    ];
  }

  /**
   * Fails, naming them, when any of `ports` already accepts connections. A taken port is not
   * always caught by the process that wants it: the gateways' public listener shares its port on
   * purpose (SO_REUSEPORT), so it would join another stack's gateways; and a replica that fails
   * with "port in use" may have its /readyz answered by the process holding the port first.
   */
  async assertPortsFree(ports: { port: number; what: string }[]): Promise<void> {
    const taken = await takenPorts(ports, connectHost(this.opts.host));
    if (taken.length > 0)
      throw new Error(
        `port${taken.length > 1 ? "s" : ""} already in use: ${taken.map((p) => `${p.port} (${p.what})`).join(", ")}`,
      );
  }

  /** Starts every replica (services before gateways) and waits until all are ready. */
  async start(timeoutMs = 30_000): Promise<void> {
    await this.assertPortsFree(this.portsToStart());
    mkdirSync(resolve(REPO_ROOT, ".data"), { recursive: true });
    // The local CA and certificates: made on the first run, renewed when close to expiry.
    if (this.opts.tls) await ensureLocalPki(this.opts.tls.dir);
    const services = [
      ...Array.from({ length: this.opts.webappReplicas }, (_, i) => this.spawn("webapp", i + 1)),
      ...Array.from({ length: this.opts.rpcappReplicas }, (_, i) => this.spawn("rpcapp", i + 1)),
    ];
    await Promise.all(services.map((p) => this.waitReady(p, timeoutMs)));
    if (!this.opts.redisUrl && this.opts.redisPort !== undefined) {
      if (this.#stopping) throw new StackStoppingError("the stack is stopping: redis-server is not started");
      this.#redisStarting = startLocalRedis({
        port: this.opts.redisPort,
        host: this.opts.host,
        signal: this.#abort.signal,
      });
      this.redis = await this.#redisStarting;
    }
    const gateways = Array.from({ length: this.opts.gatewayReplicas }, (_, i) => this.spawn("gateway", i + 1));
    await Promise.all(gateways.map((p) => this.waitReady(p, timeoutMs)));
  }

  /**
   * waitReady(), and the answer must come from `p` itself (its INSTANCE_ID), not from another
   * process that holds the port `p` was given: `p` then fails with "port in use" a moment later.
   */
  waitReady(p: StackProcess, timeoutMs = 30_000): Promise<void> {
    return waitReady(p, timeoutMs, { instance: p.name, token: this.adminToken });
  }

  /**
   * SIGTERM to everything, SIGKILL after `graceMs` (by default, past the services' own
   * SHUTDOWN_TIMEOUT_MS: they stop by themselves first, finishing their requests in flight).
   * Nothing starts once it was called (spawn refuses), a redis-server still starting is stopped
   * too, and it returns only when no process of the stack is left.
   */
  async stop(graceMs = shutdownTimeoutOf({ ...process.env, ...this.opts.env }) + 2_000): Promise<void> {
    this.#stopping = true;
    this.#abort.abort();
    // A redis-server mid-start: the abort kills it, or it came up just now and is stopped below.
    const starting = await this.#redisStarting?.catch(() => undefined);
    for (let all = [...this.processes]; all.length > 0; all = [...this.processes]) {
      for (const p of all) {
        try {
          p.proc.kill("SIGCONT");
          p.proc.kill("SIGTERM");
        } catch {}
      }
      const timer = setTimeout(
        () =>
          all.forEach((p) => {
            p.proc.kill("SIGKILL");
          }),
        graceMs,
      );
      await Promise.all(all.map((p) => p.proc.exited));
      clearTimeout(timer);
      // spawn's exit handlers take each out of the list; made sure of here, so the loop ends.
      for (const p of all) {
        const i = this.processes.indexOf(p);
        if (i >= 0) this.processes.splice(i, 1);
      }
    }
    await (this.redis ?? starting)?.stop();
  }

  /** The Redis the gateways share, when there is one. */
  get redisUrl(): string | undefined {
    return this.opts.redisUrl ?? this.redis?.url;
  }
}

/** Thrown when something would start after stop() was called. */
export class StackStoppingError extends Error {
  override name = "StackStoppingError";
}

/**
 * The services' SHUTDOWN_TIMEOUT_MS as `env` sets it (make dev: rolling.ts's 15 s), else the
 * longest of their own defaults (the gateway's 20 s; webapp's and rpcapp's are 10 s).
 */
function shutdownTimeoutOf(env: Record<string, string | undefined>): number {
  const ms = Number(env.SHUTDOWN_TIMEOUT_MS);
  return Number.isInteger(ms) && ms > 0 ? ms : 20_000;
}

/** Those of `ports` that already accept connections on `host`. */
export async function takenPorts<T extends { port: number }>(ports: readonly T[], host: string): Promise<T[]> {
  const listening = await Promise.all(ports.map((p) => isListening(p.port, host)));
  return ports.filter((_, i) => listening[i]);
}

/** Where to connect to reach a listener on `host` (a wildcard address is reached on loopback). */
function connectHost(host: string): string {
  return host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
}

/**
 * Polls `p.readyUrl` until it answers 200; fails at once when the process exits (or is killed by a
 * signal). With `identity`, the answer counts only when it comes from that instance: webapp and
 * rpcapp name themselves in `x-served-by`; a gateway's admin port does not, so its /version is
 * asked (with the admin token, if any).
 */
export async function waitReady(
  p: Pick<StackProcess, "name" | "readyUrl"> & { proc: Subprocess },
  timeoutMs = 30_000,
  identity?: { instance: string; token?: string },
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let answeredBy: string | undefined;
  while (Date.now() < deadline) {
    const { exitCode, signalCode } = p.proc;
    if (exitCode !== null || signalCode !== null)
      throw new Error(
        `${p.name} exited with ${signalCode ?? `code ${exitCode}`} before it was ready${answeredBy ? ` (${p.readyUrl} was answered by ${answeredBy}: another process holds its port)` : ""}`,
      );
    try {
      const res = await fetch(p.readyUrl, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) {
        if (!identity) return;
        answeredBy = await instanceOf(res, p.readyUrl, identity.token);
        if (answeredBy === identity.instance) return;
      }
    } catch {}
    await Bun.sleep(50);
  }
  throw new Error(
    answeredBy && answeredBy !== identity?.instance
      ? `${p.name} was not ready within ${timeoutMs} ms: ${p.readyUrl} is answered by ${answeredBy}, another process on its port`
      : `${p.name} was not ready at ${p.readyUrl} within ${timeoutMs} ms`,
  );
}

/** Which instance answered: its `x-served-by`, else the `instance` of /version at the same origin. */
async function instanceOf(res: Response, readyUrl: string, token: string | undefined): Promise<string> {
  const servedBy = res.headers.get("x-served-by");
  if (servedBy !== null) return servedBy;
  const version = await fetch(new URL("/version", readyUrl), {
    signal: AbortSignal.timeout(1000),
    ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}),
  });
  const body = (await version.json().catch(() => ({}))) as { instance?: unknown };
  return typeof body.instance === "string"
    ? body.instance
    : `an unknown process (no x-served-by, /version ${version.status})`;
}

async function pipeLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
  for await (const line of lines(stream)) onLine(line);
}
