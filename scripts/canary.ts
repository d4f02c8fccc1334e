/**
 * `make canary SERVICE=<webapp|rpcapp>`: release a new version as a canary, judged and promoted or
 * rolled back by the gateways (gateway/src/canary/controller.ts), and print every step's analysis
 * and the verdict; exits 1 when the canary was rolled back.
 *
 * Where (scripts/cluster/rollout-target.ts, as `make rollout`): the `make dev` stack when its
 * control port answers (scripts/stack/canary.ts), else the minikube cluster of `make up`
 * (scripts/cluster/canary.ts).
 *
 * Environment: CANARY_VERSION (default: the git sha, as `make rollout`; suffixed `-canary` when it
 * is the version already running), CANARY_FAULT=errors|latency (a drill: the canary answers 5 % of
 * requests with an error, or 50 ms late, so you can watch it being stopped), LOAD_RPS (300),
 * CANARY_TIMEOUT_S (300), ROLLOUT_TARGET, DEV_CONTROL_PORT, ADMIN_TOKEN. The policy (steps,
 * minimum requests and time per step, thresholds) is routes.yaml's `upstreams.<service>.canary`.
 */
import { resolve } from "node:path";
import { chalk } from "zx";
import { envEnum, envInt } from "../lib/env.ts";
import { EXIT_MISSING_TOOL, main, ScriptError, step } from "./cli.ts";
import { runClusterCanary } from "./cluster/canary.ts";
import { imageTag } from "./cluster/image-tag.ts";
import { findRolloutTarget } from "./cluster/rollout-target.ts";
import { runCanary } from "./stack/canary.ts";
import { describeEvent } from "./stack/dev-control.ts";

const REPO_ROOT = resolve(import.meta.dir, "..");

await main("make canary", async () => {
  process.chdir(REPO_ROOT);
  const arg = process.argv[2];
  if (arg !== "webapp" && arg !== "rpcapp")
    throw new ScriptError(
      `${arg ? `"${arg}" cannot run as a canary` : "which service?"}: make canary SERVICE=<webapp|rpcapp> (the gateways run the canary; a gateway is rolled out with make rollout)`,
      EXIT_MISSING_TOOL,
    );
  const service = arg;
  const fault = envEnum("CANARY_FAULT", ["none", "errors", "latency"] as const, "none");
  const rps = envInt("LOAD_RPS", 300, { min: 1, max: 100_000 });
  const timeoutMs = envInt("CANARY_TIMEOUT_S", 300, { min: 10, max: 3600 }) * 1000;
  const target = await findRolloutTarget();
  const tag = process.env.CANARY_VERSION || (await imageTag());

  if (target.kind === "minikube") {
    await runClusterCanary({ service, tag, ...(fault !== "none" ? { fault } : {}), rps, timeoutMs });
    return;
  }

  const running = target.stack.versions[service];
  const version = tag === running ? `${tag}-canary` : tag;
  const gateways = Object.fromEntries(
    target.stack.processes
      .filter((p) => p.kind === "gateway" && p.state === "serving")
      .map((p) => [p.name, `http://127.0.0.1:${p.ports.ADMIN_PORT}`]),
  );
  step(`canary of ${service} in make dev: ${chalk.bold(running)} (stable) → ${chalk.bold(version)}`);
  const outcome = await runCanary({
    controlUrl: target.controlUrl,
    gatewayUrl: target.stack.gatewayUrl,
    gateways,
    ...(process.env.ADMIN_TOKEN ? { adminToken: process.env.ADMIN_TOKEN } : {}),
    service,
    version,
    ...(fault !== "none" ? { fault } : {}),
    rps,
    timeoutMs,
    print: (line) => console.log(`  ${line}`),
    onControlEvent: (e) => console.log(chalk.dim(`    ${describeEvent(e)}`)),
  });
  const failed = outcome.load.failed;
  if (outcome.verdict === "promoted")
    console.log(
      chalk.green(
        `\nverdict: PROMOTED — ${service} runs ${version} everywhere; ${failed} of ${outcome.load.sent} requests failed`,
      ),
    );
  else
    console.log(
      chalk.red(
        `\nverdict: ROLLED BACK — ${outcome.reason}; ${service} stays on ${running}; ${failed} of ${outcome.load.sent} requests failed while the canary had its share`,
      ),
    );
  if (outcome.verdict !== "promoted") throw new ScriptError("the canary was rolled back (see the verdict above)", 1);
});
