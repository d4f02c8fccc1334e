/**
 * A Deployment's rolling update in the minikube cluster, step by step, each command printed:
 * which image it runs, build a new one, point the Deployment at it (or undo the last change),
 * wait for the rollout, then wait until the replaced pods have finished draining — they go on
 * serving through preStop and DRAIN_DELAY_MS after `kubectl rollout status` returns, and the
 * load must cover that too.
 */
import { $, chalk } from "zx";
import { printCommand, run, ScriptError } from "../cli.ts";
import { dockerfileOf, imageRef, type Service } from "./images.ts";
import { dockerEnv, kubectl, NAMESPACE } from "./minikube.ts";

const VERSION_LABEL = "app.kubernetes.io/version";

/** One field of a Deployment, by JSONPath (`kubectl get -o jsonpath`); the command's result as it came. */
function deploymentField(service: Service, jsonPath: string) {
  return run(kubectl("-n", NAMESPACE, "get", `deployment/${service}`, "-o", `jsonpath={${jsonPath}}`), {
    nothrow: true,
  });
}

/** `portico/webapp:3f2a9c1`: what the Deployment's pods run now. */
export async function currentImage(service: Service): Promise<string> {
  const out = await deploymentField(service, ".spec.template.spec.containers[0].image");
  if (out.exitCode !== 0) {
    throw new ScriptError(
      `deployment/${service} is not in the cluster (namespace ${NAMESPACE}):\n${(out.stderr || out.stdout).trim()}\nDeploy the stack first: make up`,
    );
  }
  return out.stdout.trim();
}

/** Builds `portico/<service>:<tag>` inside minikube's Docker (no registry). */
export async function buildImage(service: Service, tag: string): Promise<void> {
  const env = await dockerEnv();
  await run(["docker", "build", "-f", dockerfileOf(service), "-t", imageRef(service, tag), "."], { env, stream: true });
}

/**
 * One patch, so one rollout: the new image and, on the pods and the Deployment, the version
 * label that SERVICE_VERSION reads. The change cause shows in `kubectl rollout history`.
 */
export async function setImage(service: Service, tag: string): Promise<void> {
  const labels = { [VERSION_LABEL]: tag };
  const patch = {
    metadata: { labels, annotations: { "kubernetes.io/change-cause": `make rollout: ${imageRef(service, tag)}` } },
    spec: {
      template: { metadata: { labels }, spec: { containers: [{ name: service, image: imageRef(service, tag) }] } },
    },
  };
  await run(
    kubectl("-n", NAMESPACE, "patch", `deployment/${service}`, "--type=strategic", "-p", JSON.stringify(patch)),
    { stream: true },
  );
}

/** New pods for the same image, one by one (the tag did not change). */
export async function restart(service: Service): Promise<void> {
  await run(kubectl("-n", NAMESPACE, "rollout", "restart", `deployment/${service}`), { stream: true });
}

/** `kubectl rollout undo`: back to the previous ReplicaSet's pod template (image and version label). */
export async function undo(service: Service): Promise<void> {
  const out = await run(kubectl("-n", NAMESPACE, "rollout", "undo", `deployment/${service}`), {
    stream: true,
    nothrow: true,
  });
  if (out.exitCode !== 0) {
    throw new ScriptError(
      `\`kubectl rollout undo deployment/${service}\` failed:\n${(out.stderr || out.stdout).trim()}\n(A Deployment that was never rolled out has no previous revision: kubectl -n ${NAMESPACE} rollout history deployment/${service})`,
    );
  }
}

/** After an undo the pods' version label is the old one again; the Deployment's own label follows it. */
export async function syncVersionLabel(service: Service): Promise<void> {
  const out = await deploymentField(service, `.spec.template.metadata.labels.${VERSION_LABEL.replace(/\./g, "\\.")}`);
  const version = out.stdout.trim();
  if (out.exitCode === 0 && version)
    await run(kubectl("-n", NAMESPACE, "label", `deployment/${service}`, `${VERSION_LABEL}=${version}`, "--overwrite"));
}

export async function waitForRollout(service: Service, timeout: string): Promise<void> {
  const out = await run(
    kubectl("-n", NAMESPACE, "rollout", "status", `deployment/${service}`, `--timeout=${timeout}`),
    { stream: true, nothrow: true },
  );
  if (out.exitCode === 0) return;
  await run(kubectl("-n", NAMESPACE, "get", "pods", "-l", `app.kubernetes.io/name=${service}`, "-o", "wide"), {
    stream: true,
    nothrow: true,
  });
  throw new ScriptError(
    `deployment/${service} did not finish rolling out within ${timeout}:\n${(out.stderr || out.stdout).trim()}\n` +
      `The old pods keep serving (maxUnavailable: 0). Find out why: kubectl -n ${NAMESPACE} describe deployment/${service}\n` +
      `Go back: make rollback SERVICE=${service}`,
  );
}

/**
 * Waits until no pod of `service` is terminating (preStop sleep, drain, stop), polling quietly
 * after printing the command once; bounded by `timeoutMs` (the grace period is 30 s).
 */
export async function waitForOldPodsGone(service: Service, timeoutMs = 60_000): Promise<void> {
  const argv = kubectl(
    "-n",
    NAMESPACE,
    "get",
    "pods",
    "-l",
    `app.kubernetes.io/name=${service}`,
    "-o",
    'jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\\n"}{end}',
  );
  printCommand(argv, "until no pod is terminating");
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const out = await $({ nothrow: true, quiet: true, verbose: false })`${argv}`;
    const terminating = out.stdout.split("\n").filter((line) => line.trim().split(/\s+/).length > 1);
    if (out.exitCode === 0 && terminating.length === 0) return;
    if (Date.now() > deadline) {
      console.log(
        chalk.yellow(
          `still terminating after ${timeoutMs / 1000} s: ${terminating.map((l) => l.split(" ")[0]).join(", ")}`,
        ),
      );
      return;
    }
    await Bun.sleep(2_000);
  }
}
