/**
 * `make rollout SERVICE=<gateway|webapp|rpcapp>`: a new version of one service, replica by
 * replica, while steady traffic flows through the gateway; prints how many requests failed
 * (target 0) and exits 1 if any did.
 *
 * Where (scripts/cluster/rollout-target.ts): the `make dev` stack when its control port answers —
 * its replicas are restarted one by one on the current working tree, labelled with the new
 * version (scripts/stack/rolling.ts) — else the minikube cluster of `make up`:
 *
 *   1. the new tag: the git sha (`-dirty-<hash>` with uncommitted changes), or IMAGE_TAG
 *   2. build portico/<service>:<tag> inside minikube's Docker
 *   3. start the load; patch the Deployment's image and version label (one rollout, maxSurge 1,
 *      maxUnavailable 0); `kubectl rollout status`; wait until the old pods have drained
 *   4. stop the load and report
 *
 * When the Deployment already runs that tag (nothing changed), its pods are restarted instead
 * (`kubectl rollout restart`): the same check, same version. `IMAGE_TAG=v2 make rollout …` gives
 * the same code a new version.
 *
 * Environment: LOAD_RPS (default 50: keep-alive clients), LOAD_NEW_CONN_RPS (400: clients opening a
 * new connection per request), ROLLOUT_WARMUP_S (3), ROLLOUT_SETTLE_S (5),
 * ROLLOUT_TIMEOUT (180s), ROLLOUT_TARGET (auto|local|minikube), DEV_CONTROL_PORT (9900),
 * IMAGE_TAG, KUBE_CONTEXT.
 */
import { resolve } from "node:path";
import { chalk } from "zx";
import { main, requireTools, step } from "./cli.ts";
import { controlStream, describeEvent } from "./stack/dev-control.ts";
import { gatewayHandoverWarning } from "./stack/listener-handover.ts";
import { imageTag } from "./cluster/image-tag.ts";
import { imageRef } from "./cluster/images.ts";
import {
  buildImage,
  currentImage,
  restart,
  setImage,
  waitForOldPodsGone,
  waitForRollout,
} from "./cluster/kube-rollout.ts";
import { clusterGateway } from "./cluster/minikube.ts";
import { findRolloutTarget, serviceArgument } from "./cluster/rollout-target.ts";
import { loadSettingsFromEnv, underLoad } from "./traffic/under-load.ts";

const REPO_ROOT = resolve(import.meta.dir, "..");

await main("make rollout", async () => {
  process.chdir(REPO_ROOT);
  const service = serviceArgument("rollout", process.argv[2]);
  const target = await findRolloutTarget();
  const load = loadSettingsFromEnv(50);

  if (target.kind === "local") {
    const from = target.stack.versions[service];
    step("version");
    const version = await imageTag();
    // The stack's own count: a replica that crashed is replaced too, though nothing serves there
    // (a stack started before it reported one: the replicas that serve).
    const replicas =
      (target.stack.replicas as Partial<Record<string, number>> | undefined)?.[service] ??
      target.stack.processes.filter((p) => p.kind === service && p.state === "serving").length;
    console.log(
      `make dev runs ${service} ${chalk.bold(from)}; its ${replicas} replicas are restarted one by one as ${chalk.bold(version)}${version === from ? " (the same version: a restart)" : ""}`,
    );
    const handover = service === "gateway" ? gatewayHandoverWarning() : undefined;
    if (handover) console.log(chalk.yellow(`warning: ${handover}`));
    await underLoad({ gatewayUrl: target.stack.gatewayUrl, what: `the rollout of ${service}`, ...load }, async () => {
      step(`rolling ${service} in make dev (${target.controlUrl})`);
      for await (const event of controlStream(target.controlUrl, "/rollout", { service, version }))
        console.log(`  ${describeEvent(event)}`);
    });
    return;
  }

  requireTools(
    ["minikube", "kubectl", "docker"],
    "`make rollout` builds the new image inside minikube and rolls the Deployment with kubectl.",
  );
  step("versions");
  const tag = await imageTag();
  const running = await currentImage(service);
  const unchanged = running === imageRef(service, tag);
  console.log(
    `deployment/${service} runs ${chalk.bold(running || "(nothing)")}; the new image is ${chalk.bold(imageRef(service, tag))}`,
  );
  if (unchanged)
    console.log(
      chalk.yellow(
        `nothing changed since that build: its pods are restarted one by one instead (IMAGE_TAG=<new tag> make rollout SERVICE=${service} gives the same code a new version)`,
      ),
    );

  if (!unchanged) {
    step(`image, built inside minikube's Docker`);
    await buildImage(service, tag);
  }

  step("gateway");
  const gateway = await clusterGateway();
  try {
    await underLoad({ gatewayUrl: gateway.url, what: `the rollout of ${service}`, ...load }, async () => {
      step(`roll deployment/${service}`);
      if (unchanged) await restart(service);
      else await setImage(service, tag);
      await waitForRollout(service, process.env.ROLLOUT_TIMEOUT ?? "180s");
      await waitForOldPodsGone(service);
    });
  } finally {
    gateway.close();
  }
  console.log(
    `watch: kubectl -n portico get pods -L app.kubernetes.io/version   back: make rollback SERVICE=${service}`,
  );
});
