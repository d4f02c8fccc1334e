/**
 * `make load`: steady traffic through the gateway for a while — enough, in minikube, for the
 * autoscalers (k8s/autoscaling.yaml) to add gateway pods on the request rate and backend pods on
 * CPU. Prints a line every 10 s, and in minikube the HorizontalPodAutoscalers every 20 s; ends
 * with the report (exit 1 if any request failed: scaling out and in must lose none either).
 * Ctrl-C stops early and still reports.
 *
 * Which gateway: GATEWAY_URL; else `make dev`'s; else minikube's (traffic/find-gateway.ts).
 * Environment: LOAD_RPS (default 300, over keep-alive connections), LOAD_NEW_CONN_RPS (100, each
 * on a connection of its own, beside them), LOAD_DURATION_S (180), LOAD_MAX_IN_FLIGHT (256).
 *
 * Why new connections: a keep-alive connection stays with the gateway pod it was opened to, so
 * pods the autoscaler adds would get none of the keep-alive load; clients that connect anew, as
 * most real ones do now and then, are what reaches them.
 */
import { chalk } from "zx";
import { envInt } from "../lib/env.ts";
import { main, run, ScriptError, step } from "./cli.ts";
import { findGateway } from "./traffic/find-gateway.ts";
import { formatCounts, formatReport, LoadGenerator, TRAFFIC_MIX } from "./traffic/load-generator.ts";
import { kubectl, NAMESPACE } from "./cluster/minikube.ts";

await main("make load", async () => {
  const rps = envInt("LOAD_RPS", 300, { min: 1, max: 100_000 });
  const durationS = envInt("LOAD_DURATION_S", 180, { min: 1, max: 86_400 });
  const maxInFlight = envInt("LOAD_MAX_IN_FLIGHT", 256, { min: 1, max: 100_000 });
  const newConnectionRps = envInt("LOAD_NEW_CONN_RPS", 100, { min: 0, max: 10_000 });

  step("find the gateway");
  const gateway = await findGateway();
  console.log(`gateway: ${chalk.bold(gateway.url)} (from ${gateway.from})`);
  const inCluster = gateway.from === "minikube";
  if (inCluster)
    console.log(chalk.dim(`watch the autoscalers in another terminal: kubectl -n ${NAMESPACE} get hpa -w`));

  step(
    `${rps} requests/s on keep-alive connections and ${newConnectionRps}/s each on a new one, for ${durationS} s (GET /projects/?limit=10 and POST /verify/ in turn)`,
  );
  const load = new LoadGenerator(gateway.url, { rps, newConnectionRps, maxInFlight, mix: TRAFFIC_MIX });
  let stopping: (() => void) | undefined;
  const stopped = new Promise<void>((resolve) => (stopping = resolve));
  process.once("SIGINT", () => stopping?.());
  load.start();
  const progress = setInterval(() => {
    const r = load.snapshot();
    console.log(
      `  ${(r.durationMs / 1000).toFixed(0).padStart(4)} s  ${r.sent} sent, ${r.failed} failed, p99 ${r.latency.p99} ms; served by ${formatCounts(Object.assign({}, ...Object.values(r.servedBy)))}`,
    );
  }, 10_000);
  const hpa = inCluster
    ? setInterval(() => void run(kubectl("-n", NAMESPACE, "get", "hpa"), { stream: true, nothrow: true }), 20_000)
    : undefined;
  try {
    await Promise.race([Bun.sleep(durationS * 1000), stopped]);
  } finally {
    clearInterval(progress);
    clearInterval(hpa);
  }
  const report = await load.stop();
  gateway.close();
  step("report");
  console.log(formatReport(report));
  if (inCluster) await run(kubectl("-n", NAMESPACE, "get", "hpa"), { stream: true, nothrow: true });
  if (report.failed > 0) throw new ScriptError(`${report.failed} of ${report.sent} requests failed`);
});
