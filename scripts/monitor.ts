/**
 * `make monitor`: a local Prometheus scraping the `make dev` processes — the gateways' admin ports,
 * the webapps and the rpcapps' HTTP ports — with the cluster's alert rules. When `make dev`'s
 * control port answers (DEV_CONTROL_PORT), Prometheus discovers them there (its `/targets`, HTTP
 * service discovery): replicas move to their spare ports with every rollout, and the list follows.
 * Otherwise the targets are the base ports, from the same settings `make dev` uses
 * (scripts/stack/stack.ts, so GATEWAY_REPLICAS, ADMIN_BASE_PORT… apply here too). The
 * cluster's alert rules (k8s/monitoring/prometheus.yaml). Its data goes to a temporary folder,
 * removed on exit. Needs the `prometheus` binary (Debian: apt-get install prometheus).
 *
 *   MONITOR_PORT            where Prometheus listens (default: 9090, or the next free port up to 9099)
 *   MONITOR_SCRAPE_INTERVAL scrape and rule interval (default 5s)
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseAllDocuments, stringify } from "yaml";
import { envPort, envString } from "../lib/env.ts";
import { controlUrl, findDevStack } from "./stack/dev-control.ts";
import { isListening } from "./stack/redis.ts";
import { type StackOptions, stackOptionsFromEnv } from "./stack/stack.ts";

const REPO_ROOT = resolve(import.meta.dir, "..");
export const CLUSTER_PROMETHEUS_FILE = join(REPO_ROOT, "k8s/monitoring/prometheus.yaml");

type Ports = Pick<
  StackOptions,
  | "host"
  | "gatewayReplicas"
  | "webappReplicas"
  | "rpcappReplicas"
  | "adminBasePort"
  | "webappBasePort"
  | "webappMetricsBasePort"
  | "rpcappHttpBasePort"
> & { tls?: unknown };

/**
 * host:port of every process's /metrics, by job (the service name, as in the cluster). With TLS
 * (`TLS=1`, as the stack was started) webapp's PORT speaks HTTPS only and its /metrics is on the
 * plain METRICS_PORT; the gateway's admin port and rpcapp's HTTP port stay plain either way.
 */
export function localTargets(ports: Ports): Record<"gateway" | "webapp" | "rpcapp", string[]> {
  const range = (base: number, n: number) => Array.from({ length: n }, (_, i) => `${ports.host}:${base + i}`);
  return {
    gateway: range(ports.adminBasePort, ports.gatewayReplicas),
    webapp: range(ports.tls ? ports.webappMetricsBasePort : ports.webappBasePort, ports.webappReplicas),
    rpcapp: range(ports.rpcappHttpBasePort, ports.rpcappReplicas),
  };
}

/** A key of the cluster's prometheus-config ConfigMap (`prometheus.yml`, `alerts.yml`). */
export function clusterPrometheusFile(key: string, file = CLUSTER_PROMETHEUS_FILE): string {
  for (const doc of parseAllDocuments(readFileSync(file, "utf8"))) {
    const object = doc.toJS() as { kind?: string; metadata?: { name?: string }; data?: Record<string, string> } | null;
    const text =
      object?.kind === "ConfigMap" && object.metadata?.name === "prometheus-config" ? object.data?.[key] : undefined;
    if (text !== undefined) return text;
  }
  throw new Error(`${file}: ConfigMap prometheus-config has no key ${key}`);
}

/**
 * prometheus.yml for the local processes; `rulesFile` is loaded when given. With `controlUrl` (a
 * running `make dev`'s control port), the targets come from its `/targets` (HTTP service
 * discovery, which sets each target's `job` and `instance`), refreshed every scrape interval;
 * without it, they are the base ports (`localTargets`).
 */
export function localPrometheusConfig(
  ports: Ports,
  opts: { scrapeInterval?: string; rulesFile?: string; controlUrl?: string } = {},
): string {
  const interval = opts.scrapeInterval ?? "5s";
  const scrapeConfigs = opts.controlUrl
    ? [
        {
          job_name: "portico-dev",
          metrics_path: "/metrics",
          http_sd_configs: [{ url: `${opts.controlUrl}/targets`, refresh_interval: interval }],
        },
      ]
    : Object.entries(localTargets(ports)).map(([job, list]) => ({
        job_name: job,
        metrics_path: "/metrics",
        static_configs: [{ targets: list }],
      }));
  return stringify({
    global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: interval },
    ...(opts.rulesFile ? { rule_files: [opts.rulesFile] } : {}),
    scrape_configs: scrapeConfigs,
  });
}

if (import.meta.main) {
  if (!Bun.which("prometheus")) {
    console.error(
      "make monitor: the `prometheus` binary is not installed (Debian/Ubuntu: sudo apt-get install prometheus).\nThe services' metrics are still there to read: curl http://127.0.0.1:9901/metrics",
    );
    process.exit(1);
  }
  const stack = stackOptionsFromEnv();
  let port = envPort("MONITOR_PORT", 9090);
  // A Prometheus the OS package started may hold 9090 already: take the next free port.
  if (!process.env.MONITOR_PORT) while (port < 9099 && (await isListening(port, stack.host))) port++;
  const dir = mkdtempSync(join(tmpdir(), "portico-prometheus-"));
  const rulesFile = join(dir, "alerts.yml");
  writeFileSync(rulesFile, clusterPrometheusFile("alerts.yml"));
  const configFile = join(dir, "prometheus.yml");
  // A running `make dev` says where its processes are now (after a rollout: the spare ports).
  const control = controlUrl();
  const discovered = (await findDevStack(control)) !== undefined;
  writeFileSync(
    configFile,
    localPrometheusConfig(stack, {
      scrapeInterval: envString("MONITOR_SCRAPE_INTERVAL", "5s"),
      rulesFile,
      ...(discovered ? { controlUrl: control } : {}),
    }),
  );

  const argv = [
    "prometheus",
    `--config.file=${configFile}`,
    `--storage.tsdb.path=${join(dir, "data")}`,
    `--web.listen-address=${stack.host}:${port}`,
    "--log.level=warn",
  ];
  console.log(`$ ${argv.join(" ")}`);
  const proc = Bun.spawn(argv, { stdout: "inherit", stderr: "inherit" });
  const cleanUp = () => rmSync(dir, { recursive: true, force: true });
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => proc.kill("SIGTERM"));

  const url = `http://${stack.host}:${port}`;
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline && proc.exitCode === null) {
    if (
      await fetch(`${url}/-/ready`).then(
        (r) => r.ok,
        () => false,
      )
    )
      break;
    await Bun.sleep(200);
  }
  if (proc.exitCode === null) {
    const targets = localTargets(stack);
    const where = discovered
      ? `discovered from make dev's control port, ${control}/targets: they follow its rollouts`
      : `gateway ${targets.gateway.join(" ")}, webapp ${targets.webapp.join(" ")}, rpcapp ${targets.rpcapp.join(" ")}; make dev's control port (${control}) did not answer, so a rollout's replicas on their spare ports are not scraped: restart make monitor once make dev runs`;
    console.log(`
Prometheus is up: ${url}
  targets   ${url}/targets   (${where})
  alerts    ${url}/alerts    (the cluster's rules, k8s/monitoring/prometheus.yaml)
  try       ${url}/graph?g0.expr=${encodeURIComponent("sum by (service, route) (rate(http_server_requests_total[1m]))")}
  data      ${dir} (removed on exit)
Start the stack with \`make dev\` in another shell if it is not running. Ctrl-C stops Prometheus.`);
  }
  const code = await proc.exited;
  cleanUp();
  process.exit(code);
}
