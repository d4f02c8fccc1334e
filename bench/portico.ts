/**
 * The gateway under test, from source (`bun gateway/src/main.ts`) or the compiled binary, in one
 * of two configurations:
 *
 *   lean  /projects → the 3 trivial upstreams, /verify → rpcapp (JSON → gRPC); LOG_LEVEL=warn,
 *         no rate limit, tracing off (sampler always_off, no exporter).
 *   full  every production feature on: a per-client-address rate limit on /projects (in memory,
 *         or in Redis with `redisUrl`), high enough never to refuse, so every request pays the
 *         whole check; traces sampled (parentbased_always_on, W3C traceparent passed upstream)
 *         and exported over OTLP/HTTP to `otlpEndpoint`; the access log at info, written to a file;
 *         RED metrics (always recorded). With `traceRatio` (make bench's "full-ratio" row), the same
 *         with head sampling: that share of traces recorded and exported
 *         (parentbased_traceidratio), every request still given a trace context passed upstream.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Subprocess } from "bun";
import { freePort } from "../scripts/stack/testing/ports.ts";
import { otlpAccepted } from "../lib/telemetry/testing/otlp.ts";
import { pinned, spawn, waitHttp, tempDir } from "./procs.ts";

const REPO_ROOT = resolve(import.meta.dir, "..");
/**
 * Where the services (`gateway/src/main.ts`, `rpcapp/src/main.ts`, the proto) are run from: this
 * checkout, or BENCH_SERVICE_ROOT — another one (e.g. `git archive <rev> | tar -x -C /tmp/x` with
 * node_modules linked in), to measure one revision's services with this benchmark.
 */
export const SERVICE_ROOT = process.env.BENCH_SERVICE_ROOT ? resolve(process.env.BENCH_SERVICE_ROOT) : REPO_ROOT;

export type PorticoFlavour =
  | { kind: "lean" }
  /** `traceRatio`: record that share of traces (parentbased_traceidratio); every trace by default. */
  | { kind: "full"; otlpEndpoint: string; redisUrl?: string; traceRatio?: number };

export interface PorticoOptions {
  flavour: PorticoFlavour;
  /** host:port of the trivial HTTP upstreams. */
  upstreams: string[];
  /** host:port of rpcapp's gRPC listener, for /verify (lean only). */
  rpcapp?: string;
  /** Terminate TLS on an HTTPS listener (the routes' `tls` block); `url` is then https. */
  tls?: { cert: string; key: string; ca: string };
  /** The compiled binary instead of `bun gateway/src/main.ts`. */
  binary?: string;
  cpu?: number;
}

export interface Portico extends PreparedPortico {
  proc: Subprocess;
}

export function routesYaml(opts: PorticoOptions): string {
  const full = opts.flavour.kind === "full";
  const limit = full ? ", rateLimit: { rate: 1000000, period: 1s, key: { type: ip } }" : "";
  const grpc = opts.rpcapp && !full;
  return `upstreams:
  bench: { protocol: http, endpoints: "${opts.upstreams.join(",")}" }
${grpc ? `  rpcapp: { protocol: grpc, endpoints: "${opts.rpcapp}", proto: ${join(SERVICE_ROOT, "proto/userverify.proto")} }\n` : ""}routes:
  - { name: projects, path: /projects, match: prefix, methods: [GET, POST], upstream: bench${limit} }
${grpc ? "  - { name: verify, path: /verify, match: exact, methods: [POST], upstream: rpcapp, grpc: { method: userverify.UserVerify/VerifyUser, idempotent: true } }\n" : ""}${
  opts.tls ? `tls:\n  certificates:\n    - { cert: ${opts.tls.cert}, key: ${opts.tls.key} }\n` : ""
}`;
}

export interface PreparedPortico {
  name: string;
  argv: string[];
  env: Record<string, string | undefined>;
  url: string;
  adminUrl: string;
  /** Where stdout (the access log, in "full") goes, or undefined (discarded). */
  logFile?: string;
}

/** Writes the routes file and picks the ports; nothing is started yet (startup.ts times the exec). */
export async function preparePortico(opts: PorticoOptions): Promise<PreparedPortico> {
  const dir = tempDir("gateway");
  const routesFile = join(dir, "routes.yaml");
  writeFileSync(routesFile, routesYaml(opts));
  const [port, adminPort, httpsPort] = [await freePort(), await freePort(), await freePort()];
  const { flavour } = opts;
  const env: Record<string, string | undefined> = {
    ...process.env,
    HOST: "127.0.0.1",
    PORT: String(port),
    ADMIN_PORT: String(adminPort),
    HTTPS_PORT: String(httpsPort),
    ROUTES_FILE: routesFile,
    REDIS_URL: flavour.kind === "full" ? (flavour.redisUrl ?? "") : "",
    GATEWAY_PEERS: "",
    GATEWAY_PEERS_DNS: "",
    ...(flavour.kind === "lean"
      ? { LOG_LEVEL: "warn", OTEL_EXPORTER_OTLP_ENDPOINT: "", OTEL_TRACES_SAMPLER: "always_off" }
      : {
          LOG_LEVEL: "info",
          OTEL_EXPORTER_OTLP_ENDPOINT: flavour.otlpEndpoint,
          ...(flavour.traceRatio === undefined
            ? { OTEL_TRACES_SAMPLER: "parentbased_always_on" }
            : { OTEL_TRACES_SAMPLER: "parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG: String(flavour.traceRatio) }),
          OTEL_BSP_SCHEDULE_DELAY: "1000",
        }),
  };
  const name = `${flavour.kind === "lean" ? "gateway (lean" : `gateway (full${flavour.redisUrl ? ", redis" : ""}`}${opts.tls ? ", tls" : ""})`;
  const argv = pinned(opts.binary ? [opts.binary] : [process.execPath, "gateway/src/main.ts"], opts.cpu);
  return {
    name,
    argv,
    env,
    url: opts.tls ? `https://127.0.0.1:${httpsPort}` : `http://127.0.0.1:${port}`,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    // Not beside routes.yaml: the gateway watches that directory, and every write to a log there
    // woke its config watcher (measured: ~1 µs per request on the fs.watch thread and the main one).
    ...(flavour.kind === "full" ? { logFile: join(tempDir("gateway-log"), "access.log") } : {}),
  };
}

export function spawnPortico(p: PreparedPortico): Subprocess {
  return spawn(p.name, p.argv, {
    cwd: SERVICE_ROOT,
    env: p.env,
    // The access log is part of what "full" costs: written synchronously, to a file instead of a terminal.
    stdout: p.logFile ? Bun.file(p.logFile) : "ignore",
    stderr: "inherit",
  });
}

/**
 * An OTLP/HTTP receiver that takes every export and discards it, so that "full" pays for exporting
 * its spans; it counts what it received.
 */
export async function startOtlpSink(): Promise<{ endpoint: string; requests: number; bytes: number; stop(): void }> {
  const received = { requests: 0, bytes: 0 };
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: await freePort(),
    async fetch(req) {
      received.requests++;
      received.bytes += (await req.arrayBuffer()).byteLength;
      return otlpAccepted(req.headers.get("content-type"));
    },
  });
  return Object.assign(received, { endpoint: `http://127.0.0.1:${server.port}`, stop: () => server.stop(true) });
}

export const PROJECT_BODY = JSON.stringify({ title: "An awesome project" });
export const VERIFY_BODY = JSON.stringify({ id: 121, token: "a$$" });
export const postJson = (body: string): RequestInit => ({
  method: "POST",
  body,
  headers: { "content-type": "application/json" },
});

/** Starts a gateway and waits until a POST /projects goes through it (and /verify, when configured). */
export async function startPortico(opts: PorticoOptions): Promise<Portico> {
  const prepared = await preparePortico(opts);
  const proc = spawnPortico(prepared);
  const trust: BunFetchRequestInit = opts.tls ? { tls: { ca: readFileSync(opts.tls.ca, "utf8") } } : {};
  await waitHttp(`${prepared.url}/projects`, proc, { ...postJson(PROJECT_BODY), ...trust });
  if (opts.rpcapp && opts.flavour.kind === "lean")
    await waitHttp(`${prepared.url}/verify`, proc, postJson(VERIFY_BODY));
  return { proc, ...prepared };
}

/** rpcapp for the gRPC rows: the real service from SERVICE_ROOT, tracing off, logs at warn; ready when it returns. */
export async function startRpcapp(
  stdout: "inherit" | "ignore" = "inherit",
): Promise<{ proc: Subprocess; hostPort: string }> {
  const [port, metricsPort] = [await freePort(), await freePort()];
  const proc = spawn("rpcapp", [process.execPath, "rpcapp/src/main.ts"], {
    cwd: SERVICE_ROOT,
    env: {
      ...process.env,
      HOST: "127.0.0.1",
      PORT: String(port),
      METRICS_PORT: String(metricsPort),
      LOG_LEVEL: "warn",
      OTEL_EXPORTER_OTLP_ENDPOINT: "",
      OTEL_TRACES_SAMPLER: "always_off",
    },
    stdout,
    stderr: "inherit",
  });
  await waitHttp(`http://127.0.0.1:${metricsPort}/readyz`, proc);
  return { proc, hostPort: `127.0.0.1:${port}` };
}
