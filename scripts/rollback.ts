/**
 * `make rollback SERVICE=<gateway|webapp|rpcapp>`: back to the version before the last
 * `make rollout`, replica by replica, with the same check as the rollout — steady traffic through
 * the gateway, the failed requests counted (target 0), exit 1 if any failed.
 *
 * In minikube: `kubectl rollout undo` (the previous ReplicaSet's image and version label), then
 * `kubectl rollout status` and the old pods' drain. In `make dev`: the stack restarts the
 * replicas with the previous version label.
 *
 * Environment: as scripts/rollout.ts (LOAD_RPS, LOAD_NEW_CONN_RPS, ROLLOUT_WARMUP_S, ROLLOUT_SETTLE_S,
 * ROLLOUT_TIMEOUT, ROLLOUT_TARGET, DEV_CONTROL_PORT, KUBE_CONTEXT).
 */
import { chalk } from "zx";
import { main, requireTools, run, ScriptError, step } from "./cli.ts";
import { controlStream, describeEvent } from "./stack/dev-control.ts";
import { gatewayHandoverWarning } from "./stack/listener-handover.ts";
import { currentImage, syncVersionLabel, undo, waitForOldPodsGone, waitForRollout } from "./cluster/kube-rollout.ts";
import { clusterGateway, kubectl, NAMESPACE } from "./cluster/minikube.ts";
import { findRolloutTarget, serviceArgument } from "./cluster/rollout-target.ts";
import { loadSettingsFromEnv, underLoad } from "./traffic/under-load.ts";

await main("make rollback", async () => {
  const service = serviceArgument("rollback", process.argv[2]);
  const target = await findRolloutTarget();
  const load = loadSettingsFromEnv(50);

  if (target.kind === "local") {
    const { versions, previous } = target.stack;
    if (previous[service] === null)
      throw new ScriptError(
        `make dev has not rolled out ${service} yet (it runs ${versions[service]}): there is nothing to roll back to`,
      );
    console.log(
      `make dev runs ${service} ${chalk.bold(versions[service])}; back to ${chalk.bold(previous[service]!)}, replica by replica`,
    );
    const handover = service === "gateway" ? gatewayHandoverWarning() : undefined;
    if (handover) console.log(chalk.yellow(`warning: ${handover}`));
    await underLoad({ gatewayUrl: target.stack.gatewayUrl, what: `the rollback of ${service}`, ...load }, async () => {
      step(`rolling ${service} back in make dev (${target.controlUrl})`);
      for await (const event of controlStream(target.controlUrl, "/rollback", { service }))
        console.log(`  ${describeEvent(event)}`);
    });
    return;
  }

  requireTools(
    ["minikube", "kubectl"],
    "`make rollback` undoes the last rollout of a Deployment in minikube with kubectl.",
  );
  step("revisions");
  const running = await currentImage(service);
  console.log(`deployment/${service} runs ${chalk.bold(running)}; undoing its last rollout`);
  await run(kubectl("-n", NAMESPACE, "rollout", "history", `deployment/${service}`), { stream: true, nothrow: true });

  step("gateway");
  const gateway = await clusterGateway();
  try {
    await underLoad({ gatewayUrl: gateway.url, what: `the rollback of ${service}`, ...load }, async () => {
      step(`undo deployment/${service}`);
      await undo(service);
      await waitForRollout(service, process.env.ROLLOUT_TIMEOUT ?? "180s");
      await syncVersionLabel(service);
      await waitForOldPodsGone(service);
    });
  } finally {
    gateway.close();
  }
  console.log(`deployment/${service} now runs ${chalk.bold(await currentImage(service))}`);
});
