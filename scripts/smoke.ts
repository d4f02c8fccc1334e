/**
 * `make smoke`: the seed's requests and a load-spread check through a running gateway, printed as
 * a pass/fail table; exits 1 when any check fails.
 *
 * Which gateway: GATEWAY_URL when set; else `make dev`'s; else `make up`'s in minikube
 * (traffic/find-gateway.ts). Also: SMOKE_REPLICAS (replicas expected behind
 * each route, default 3), SMOKE_REQUESTS (requests per route, default 30).
 */
import { chalk } from "zx";
import { envInt } from "../lib/env.ts";
import { main, ScriptError, step } from "./cli.ts";
import { findGateway } from "./traffic/find-gateway.ts";
import { formatTable, runSmoke } from "./traffic/smoke-checks.ts";

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
