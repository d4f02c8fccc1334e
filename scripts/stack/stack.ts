/**
 * The local stack: N webapps, N rpcapps and N gateways as Bun processes on one machine, wired by
 * environment variables only (no addresses in code). `make dev` runs it with pretty logs; the
 * end-to-end tests and benchmarks start the same stack on free ports.
 */
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { lines } from "../../lib/lines.ts";
import { ensureLocalPki } from "../tls/pki.ts";
import { type LocalRedis, startLocalRedis } from "./redis.ts";

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
  const int = (name: string, fallback: number) => {
    const raw = env[name];
    if (raw === undefined || raw === "") return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`${name}=${raw} is not a valid number`);
    return n;
  };
  return {
    gatewayPort: int("GATEWAY_PORT", 8080),
    gatewayReplicas: int("GATEWAY_REPLICAS", 3),
    webappReplicas: int("WEBAPP_REPLICAS", 3),
    rpcappReplicas: int("RPCAPP_REPLICAS", 3),
    adminBasePort: int("ADMIN_BASE_PORT", 9901),
    webappBasePort: int("WEBAPP_BASE_PORT", 3001),
    rpcappBasePort: int("RPCAPP_BASE_PORT", 5001),
    rpcappHttpBasePort: int("RPCAPP_HTTP_BASE_PORT", 5101),
    webappMetricsBasePort: int("WEBAPP_METRICS_BASE_PORT", 3101),
    ...(isOn(env.TLS)
      ? { tls: { dir: resolve(REPO_ROOT, env.TLS_DIR || ".data/tls"), httpsPort: int("GATEWAY_HTTPS_PORT", 8443) } }
      : {}),
    host: env.DEV_HOST ?? "127.0.0.1",
    dbPath: env.DB_PATH ?? resolve(REPO_ROOT, ".data/webapp.sqlite"),
    routesFile: env.ROUTES_FILE ?? "gateway/routes.yaml",
    version: env.SERVICE_VERSION ?? "dev",
    env: {},
  };
}

/** TLS=1, true, yes or on. */
function isOn(value: string | undefined): boolean {
  return ["1", "true", "yes", "on"].includes((value ?? "").trim().toLowerCase());
}

export class Stack {
  readonly processes: StackProcess[] = [];
  /** The redis-server this stack started, if any. */
  redis: LocalRedis | undefined;
  #stopping = false;

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

  /** Starts one replica process (does not wait for readiness). */
  spawn(kind: StackProcess["kind"], replica: number, extraEnv: Record<string, string> = {}): StackProcess {
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

  /** Starts every replica (services before gateways) and waits until all are ready. */
  async start(timeoutMs = 30_000): Promise<void> {
    mkdirSync(resolve(REPO_ROOT, ".data"), { recursive: true });
    // The local CA and certificates: made on the first run, renewed when close to expiry.
    if (this.opts.tls) await ensureLocalPki(this.opts.tls.dir);
    const services = [
      ...Array.from({ length: this.opts.webappReplicas }, (_, i) => this.spawn("webapp", i + 1)),
      ...Array.from({ length: this.opts.rpcappReplicas }, (_, i) => this.spawn("rpcapp", i + 1)),
    ];
    await Promise.all(services.map((p) => waitReady(p, timeoutMs)));
    if (!this.opts.redisUrl && this.opts.redisPort !== undefined) {
      this.redis = await startLocalRedis({ port: this.opts.redisPort, host: this.opts.host });
    }
    const gateways = Array.from({ length: this.opts.gatewayReplicas }, (_, i) => this.spawn("gateway", i + 1));
    await Promise.all(gateways.map((p) => waitReady(p, timeoutMs)));
  }

  /** SIGTERM to everything, SIGKILL after `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    this.#stopping = true;
    const all = [...this.processes];
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
    await this.redis?.stop();
  }

  /** The Redis the gateways share, when there is one. */
  get redisUrl(): string | undefined {
    return this.opts.redisUrl ?? this.redis?.url;
  }
}

/** Polls `p.readyUrl` until it answers 200; fails at once when the process exits (or is killed by a signal). */
export async function waitReady(
  p: Pick<StackProcess, "name" | "readyUrl"> & { proc: Subprocess },
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const { exitCode, signalCode } = p.proc;
    if (exitCode !== null || signalCode !== null)
      throw new Error(`${p.name} exited with ${signalCode ?? `code ${exitCode}`} before it was ready`);
    try {
      const res = await fetch(p.readyUrl, { signal: AbortSignal.timeout(1000) });
      if (res.status === 200) return;
    } catch {}
    await Bun.sleep(50);
  }
  throw new Error(`${p.name} was not ready at ${p.readyUrl} within ${timeoutMs} ms`);
}

async function pipeLines(stream: ReadableStream<Uint8Array>, onLine: (line: string) => void): Promise<void> {
  for await (const line of lines(stream)) onLine(line);
}
