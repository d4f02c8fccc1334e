/**
 * `make bytecode-order`: records which functions each service runs while it starts and answers its
 * first requests, into `<service>/bytecode.order`. `make build` and the Dockerfiles hand that file
 * to `bun build --bytecode-order` (scripts/cluster/images.ts `compileFlags`): Bun lays the bytecode
 * that run used out together at the front of the binary, so a replica maps fewer pages to start —
 * the compiled gateway's idle RSS measured 59.3–59.6 MiB with it against 63.3–63.6 without, and
 * 72.5–73.6 against 80.4–81.2 after a 64-connection load (bench/README.md, 2026-12-05).
 *
 * How: each service is compiled without an order file, then the three binaries run as a one-replica
 * stack on loopback with the development routes (gateway/routes.yaml, static endpoints), each with
 * BUN_BYTECODE_ORDER_OUT set. Through the gateway go the smoke test's requests (create, read back,
 * list, verify: scripts/traffic/smoke-checks.ts), then one Prometheus scrape of every service; a
 * SIGTERM ends each, and Bun writes the file as the process exits. This is `make dev`'s setup:
 * the SQLite store, no Redis, no trace exporter; what only those run in the cluster (the Redis store
 * and limiter, the OTLP exporter) is laid out after the recorded functions, like a stale entry.
 *
 * Re-run it after a change that adds modules or start-up work. A stale file still applies: what it
 * does not name is laid out after what it does, so it costs nothing in correctness, only pages.
 *
 *   bun scripts/bytecode-order.ts [--out DIR] [gateway|webapp|rpcapp ...]
 *     --out   where the order files go, as DIR/<service>.order (default: each service's folder,
 *             as <service>/bytecode.order)
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { Subprocess } from "bun";
import { main, run, ScriptError, step } from "./cli.ts";
import { bytecodeOrderFile, COMPILE_FLAGS, SERVICES, type Service } from "./cluster/images.ts";
import { waitReady } from "./stack/stack.ts";
import { freePorts } from "./stack/testing/ports.ts";
import { runSmoke } from "./traffic/smoke-checks.ts";

const REPO_ROOT = resolve(import.meta.dir, "..");

interface Running {
  name: Service;
  /** Polled by stack.ts `waitReady`. */
  readyUrl: string;
  proc: Subprocess;
  orderFile: string;
  /** Where it answers /readyz and /metrics. */
  statusUrl: string;
}

async function stopGracefully(r: Running): Promise<void> {
  if (r.proc.exitCode !== null) return;
  r.proc.kill("SIGTERM");
  const code = await Promise.race([r.proc.exited, Bun.sleep(15_000).then(() => "timeout" as const)]);
  if (code === "timeout") {
    r.proc.kill("SIGKILL");
    throw new ScriptError(`${r.name} did not exit within 15 s of SIGTERM; its order file may be incomplete`);
  }
  if (code !== 0) throw new ScriptError(`${r.name} exited ${code} on SIGTERM`);
}

await main("bytecode-order", async () => {
  const { values, positionals } = parseArgs({ options: { out: { type: "string" } }, allowPositionals: true });
  const unknown = positionals.filter((s) => !(SERVICES as readonly string[]).includes(s));
  if (unknown.length > 0)
    throw new ScriptError(`unknown service(s): ${unknown.join(", ")}; choose from ${SERVICES.join(", ")}`, 2);
  const wanted = new Set<Service>(positionals.length > 0 ? (positionals as Service[]) : SERVICES);
  const work = mkdtempSync(join(tmpdir(), "portico-bytecode-order-"));
  const orderFileOf = (service: Service) => join(work, `${service}.order`);
  const running: Running[] = [];
  const cleanUp = () => {
    for (const r of running) if (r.proc.exitCode === null && r.proc.signalCode === null) r.proc.kill("SIGKILL");
    rmSync(work, { recursive: true, force: true });
  };
  // Interrupted (Ctrl-C, a test's timeout): no service is left running, no folder behind.
  for (const signal of ["SIGINT", "SIGTERM"] as const)
    process.on(signal, () => {
      cleanUp();
      process.exit(130);
    });
  try {
    step("compile each service without an order file");
    for (const service of SERVICES)
      await run(["bun", "build", ...COMPILE_FLAGS, `${service}/src/main.ts`, "--outfile", join(work, service)]);

    step("run them as a one-replica stack on loopback, recording");
    const [webappPort, rpcappPort, rpcappStatusPort, gatewayPort, adminPort] = await freePorts(5);
    // Only what the run sets: nothing from the caller's shell (a STORE, REDIS_URL or sampler there)
    // changes what is recorded.
    const common = (service: Service) => ({
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: process.env.HOME ?? tmpdir(),
      HOST: "127.0.0.1",
      INSTANCE_ID: `${service}-order`,
      LOG_LEVEL: "info",
      OTEL_EXPORTER_OTLP_ENDPOINT: "",
      BUN_BYTECODE_ORDER_OUT: orderFileOf(service),
    });
    const env: Record<Service, Record<string, string | undefined>> = {
      webapp: { ...common("webapp"), PORT: String(webappPort), STORE: "sqlite", DB_PATH: join(work, "webapp.sqlite") },
      rpcapp: { ...common("rpcapp"), PORT: String(rpcappPort), METRICS_PORT: String(rpcappStatusPort) },
      gateway: {
        ...common("gateway"),
        PORT: String(gatewayPort),
        ADMIN_PORT: String(adminPort),
        ROUTES_FILE: join(REPO_ROOT, "gateway/routes.yaml"),
        WEBAPP_ENDPOINTS: `127.0.0.1:${webappPort}`,
        RPCAPP_ENDPOINTS: `127.0.0.1:${rpcappPort}`,
        GATEWAY_PEERS: "",
        REDIS_URL: "",
      },
    };
    const statusPort: Record<Service, number> = { webapp: webappPort!, rpcapp: rpcappStatusPort!, gateway: adminPort! };
    // Upstreams first: the gateway is only ready once it has found them.
    for (const service of ["webapp", "rpcapp", "gateway"] as const) {
      const statusUrl = `http://127.0.0.1:${statusPort[service]}`;
      const r: Running = {
        name: service,
        readyUrl: `${statusUrl}/readyz`,
        proc: Bun.spawn([join(work, service)], { cwd: work, env: env[service], stdout: "ignore", stderr: "inherit" }),
        orderFile: orderFileOf(service),
        statusUrl,
      };
      running.push(r);
      await waitReady(r).catch((err: Error) => {
        throw new ScriptError(err.message);
      });
    }

    step("the smoke test's requests through the gateway, then a scrape of every service");
    const { results } = await runSmoke(`http://127.0.0.1:${gatewayPort}`, {
      replicas: 1,
      requests: 30,
      timeoutMs: 5000,
    });
    const failed = results.filter((r) => !r.ok);
    if (failed.length > 0)
      throw new ScriptError(
        `requests through the gateway failed:\n${failed.map((r) => `  ${r.check}: ${r.detail}`).join("\n")}`,
      );
    for (const r of running) {
      const res = await fetch(`${r.statusUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
      if (!res.ok) throw new ScriptError(`${r.name}: GET /metrics answered ${res.status}`);
      await res.arrayBuffer();
    }

    step("stop each with SIGTERM (the order file is written at exit) and keep the files");
    for (const r of [...running].reverse()) await stopGracefully(r);
    // Every file checked before any is replaced: a failed run leaves the committed ones as they were.
    const kept = running.filter((r) => wanted.has(r.name));
    for (const r of kept)
      if (!(statSync(r.orderFile, { throwIfNoEntry: false })?.size ?? 0))
        throw new ScriptError(`${r.name} wrote no order file (${r.orderFile}): is this Bun ≥ 1.4?`);
    if (values.out) mkdirSync(values.out, { recursive: true });
    for (const r of kept) {
      const target = values.out ? join(values.out, `${r.name}.order`) : join(REPO_ROOT, bytecodeOrderFile(r.name));
      copyFileSync(r.orderFile, target);
      console.log(`${r.name}: ${target} (${Math.round(statSync(target).size / 1024)} KiB)`);
    }
  } finally {
    cleanUp();
  }
});
