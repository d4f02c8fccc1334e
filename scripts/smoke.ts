/**
 * `make smoke`: the seed's requests and a load-spread check through a running gateway, printed as
 * a pass/fail table; exits 1 when any check fails.
 *
 * Which gateway: GATEWAY_URL when set; else `make dev`'s (http://127.0.0.1:$GATEWAY_PORT, 8080 by
 * default) when it answers /healthz; else, with minikube installed, the URL of `make up`'s
 * (`minikube service gateway -n portico --url`). Also: SMOKE_REPLICAS (replicas expected behind
 * each route, default 3), SMOKE_REQUESTS (requests per route, default 30).
 */
import { envInt } from "../lib/env.ts";
import { chalk, which } from "zx";
import { EXIT_MISSING_TOOL, main, ScriptError, step } from "./cli.ts";
import { answersHealthz } from "./stack/dev-control.ts";
import { serviceUrl } from "./cluster/minikube.ts";
import { formatTable, runSmoke } from "./traffic/smoke-checks.ts";

/** Finds the gateway; `close` ends a minikube tunnel when one had to be opened. */
async function findGateway(): Promise<{ url: string; from: string; close: () => void }> {
  const none = () => {};
  const explicit = process.env.GATEWAY_URL;
  if (explicit) return { url: explicit.replace(/\/+$/, ""), from: "GATEWAY_URL", close: none };

  const local = `http://127.0.0.1:${envInt("GATEWAY_PORT", 8080, { min: 1, max: 65535 })}`;
  console.log(`${chalk.dim("→")} GET ${local}/healthz  # is \`make dev\` running?`);
  if (await answersHealthz(local)) return { url: local, from: "make dev", close: none };

  if (which.sync("minikube", { nothrow: true })) {
    console.log("no gateway there; asking minikube for `make up`'s");
    const service = await serviceUrl("gateway", 30_000);
    return { url: service.url, from: "minikube", close: service.close };
  }
  throw new ScriptError(
    `no gateway found: nothing answers ${local}/healthz and minikube is not installed.\n` +
      "Start one with `make dev` (local processes) or `make up` (minikube), or point GATEWAY_URL at one.",
    EXIT_MISSING_TOOL,
  );
}

await main("make smoke", async () => {
  step("find the gateway");
  const gateway = await findGateway();
  console.log(`gateway: ${chalk.bold(gateway.url)} (from ${gateway.from})`);
  try {
    step("requests");
    const opts = {
      replicas: envInt("SMOKE_REPLICAS", 3, { min: 1 }),
      requests: envInt("SMOKE_REQUESTS", 30, { min: 1 }),
      timeoutMs: 5000,
    };
    const { results, gateways } = await runSmoke(gateway.url, opts);
    step("results");
    console.log(formatTable(results));
    if (gateways.size > 0)
      console.log(chalk.dim(`\ngateway replicas that answered: ${[...gateways].sort().join(", ")}`));
    const failed = results.filter((r) => !r.ok).length;
    if (failed > 0) throw new ScriptError(`${failed} of ${results.length} checks failed against ${gateway.url}`);
    console.log(`\n${chalk.green(`all ${results.length} checks passed`)} against ${gateway.url}`);
  } finally {
    gateway.close();
  }
});
