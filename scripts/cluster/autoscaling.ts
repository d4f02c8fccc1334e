/**
 * What k8s/autoscaling.yaml needs in the cluster, which `make up` provides before applying k8s/:
 *
 * - metrics-server (minikube's addon): the CPU figures the HorizontalPodAutoscalers scale on, and
 *   `kubectl top`;
 * - KEDA, whose ScaledObject scales the gateway on its request rate. Its CRD must exist before
 *   `kubectl apply -k` meets a ScaledObject, and its admission webhook must answer, so a fresh
 *   install is waited for. KEDA_VERSION pins it (it needs Kubernetes ≥ 1.30, as preStop sleep does).
 *
 * And after applying: a Deployment without `replicas` starts with 1 pod until its autoscaler
 * raises it to the minimum (3), so `make up` waits for that before `kubectl rollout status` —
 * otherwise the rollout would be "complete" with one pod and `make smoke` would find one replica.
 */
import { $, chalk } from "zx";
import { printCommand, run } from "../cli.ts";
import { kubectl, NAMESPACE } from "./minikube.ts";

export const KEDA_VERSION = "2.16.1";

export function kedaManifestUrl(version = process.env.KEDA_VERSION || KEDA_VERSION): string {
  return `https://github.com/kedacore/keda/releases/download/v${version}/keda-${version}.yaml`;
}

export async function ensureAutoscaling(): Promise<void> {
  await run(["minikube", "addons", "enable", "metrics-server"], { stream: true });
  const crd = await run(kubectl("get", "crd", "scaledobjects.keda.sh"), { nothrow: true });
  if (crd.exitCode === 0) return;
  console.log(
    `KEDA is not installed in this cluster: installing it (it scales the gateway on its request rate; once per cluster)`,
  );
  // Server-side apply: KEDA's CRDs are too large for the last-applied annotation of a client-side apply.
  await run(kubectl("apply", "--server-side", "-f", kedaManifestUrl()), { stream: true });
  await run(kubectl("wait", "--for=condition=established", "--timeout=60s", "crd/scaledobjects.keda.sh"), {
    stream: true,
  });
  await run(kubectl("-n", "keda", "wait", "--for=condition=Available", "deployment", "--all", "--timeout=180s"), {
    stream: true,
  });
}

/**
 * Waits until `deployment/<service>` asks for at least `min` replicas (its autoscaler has acted),
 * polling quietly after printing the command once. A count it cannot read is not waited for; one
 * still below `min` after `timeoutMs` is reported, not fatal.
 */
export async function waitForAutoscaledReplicas(service: string, min = 3, timeoutMs = 90_000): Promise<void> {
  const argv = kubectl("-n", NAMESPACE, "get", `deployment/${service}`, "-o", "jsonpath={.spec.replicas}");
  printCommand(argv, `until its autoscaler asks for ${min} or more`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const out = await $({ nothrow: true, quiet: true, verbose: false })`${argv}`;
    const replicas = Number.parseInt(out.stdout.trim(), 10);
    if (out.exitCode !== 0 || !Number.isInteger(replicas) || replicas >= min) return;
    if (Date.now() > deadline) {
      console.log(
        chalk.yellow(
          `deployment/${service} still asks for ${replicas} replica(s) after ${timeoutMs / 1000} s: is its autoscaler working? kubectl -n ${NAMESPACE} describe hpa ${service}`,
        ),
      );
      return;
    }
    await Bun.sleep(2_000);
  }
}
