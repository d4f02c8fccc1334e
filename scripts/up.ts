/**
 * `make up`: the stack on minikube, from the raw YAML in k8s/.
 *
 *   1. checks that minikube, kubectl and docker are installed (exit 2 naming what is missing)
 *   2. starts minikube if it is not running (the pinned Kubernetes version, and Calico, which
 *      enforces the NetworkPolicies)
 *   3. builds the three images inside minikube's Docker (no registry), tagged with the git sha
 *      (see cluster/image-tag.ts)
 *   4. installs what k8s/ needs in the cluster: metrics-server, KEDA (its manifest checked against
 *      a pinned SHA-256), and the Secrets k8s/ reads, generated the first time: passwords
 *      (cluster/secrets.ts) and the TLS certificates with their CA (cluster/tls.ts)
 *   5. applies k8s/ with that tag on the images and the version label (one rollout each)
 *   6. waits for every Deployment's rollout, then prints the gateway's URL
 *
 * Every command is printed before it runs. Environment: IMAGE_TAG (instead of the git sha),
 * ROLLOUT_TIMEOUT (default 180s), MINIKUBE_START_FLAGS (default --kubernetes-version=<pinned>
 * --cni=calico --cpus=4 --memory=6g), KUBE_CONTEXT (default the minikube profile's, "minikube"); the Secrets' values:
 * ADMIN_TOKEN, GRAFANA_ADMIN_PASSWORD, REDIS_LIMITER_PASSWORD, REDIS_STORE_PASSWORD (else random);
 * EDGE_HOSTS (more DNS names for a new HTTPS certificate); KEDA: KEDA_VERSION, KEDA_SHA256,
 * KEDA_MANIFEST (cluster/autoscaling.ts).
 */
import { join, resolve } from "node:path";
import { chalk } from "zx";
import { main, requireTools, run, ScriptError, step } from "./cli.ts";
import { imageTag } from "./cluster/image-tag.ts";
import { dockerfileOf, imageRef, SERVICES } from "./cluster/images.ts";
import { dockerEnv, kubeContext, kubectl, minikubeStartFlags, NAMESPACE, serviceUrl } from "./cluster/minikube.ts";
import { ensureSecrets } from "./cluster/secrets.ts";
import { ensureTlsSecrets } from "./cluster/tls.ts";
import { writeOverlay } from "./cluster/overlay.ts";
import { ensureAutoscaling, waitForAutoscaledReplicas } from "./cluster/autoscaling.ts";

const REPO_ROOT = resolve(import.meta.dir, "..");
// Backends first: the gateway's readiness does not wait for them, but its first requests do.
const ROLLOUT_ORDER = ["webapp", "rpcapp", "gateway"] as const;

await main("make up", async () => {
  process.chdir(REPO_ROOT);
  requireTools(
    ["minikube", "kubectl", "docker"],
    "`make up` deploys to a local minikube cluster: it needs minikube, kubectl and the docker CLI (the images are built by minikube's own Docker).",
  );

  step("image tag");
  const tag = await imageTag();
  console.log(`tag: ${chalk.bold(tag)}`);

  step("minikube");
  const status = await run(["minikube", "status"], { nothrow: true });
  if (status.exitCode !== 0) {
    console.log("minikube is not running: starting it (the first start downloads its images and takes a few minutes)");
    await run(["minikube", "start", ...minikubeStartFlags()], { stream: true });
  }

  step("images, built inside minikube's Docker");
  const env = await dockerEnv();
  for (const service of SERVICES) {
    await run(["docker", "build", "-f", dockerfileOf(service), "-t", imageRef(service, tag), "."], {
      env,
      stream: true,
    });
  }

  step("autoscaling: metrics-server and KEDA (k8s/autoscaling.yaml)");
  await ensureAutoscaling();

  step("secrets k8s/ reads (generated once per cluster, never stored in the repository)");
  await run(kubectl("apply", "-f", join(REPO_ROOT, "k8s/namespace.yaml")), { stream: true });
  const secrets = await ensureSecrets();
  // The certificates of every hop: a self-signed CA and its leaves when the namespace has none,
  // ours renewed when they end within 30 days, others (cert-manager's) left as they are.
  const tls = await ensureTlsSecrets();
  const created = [...secrets.created, ...tls.created];
  const kept = [...secrets.kept, ...tls.kept];
  if (created.length > 0) console.log(`created: ${created.join(", ")}`);
  if (tls.renewed.length > 0) console.log(`renewed (ending within 30 days): ${tls.renewed.join(", ")}`);
  if (kept.length > 0) console.log(`kept as they are: ${kept.join(", ")}`);
  for (const warning of tls.warnings) console.error(chalk.yellow(`warning: ${warning}`));

  step(`deploy k8s/ into namespace ${NAMESPACE} (context ${kubeContext()})`);
  const overlay = writeOverlay(join(REPO_ROOT, "k8s"), tag);
  try {
    console.log(chalk.dim(`${overlay.dir}/kustomization.yaml:\n${overlay.text.trimEnd().replace(/^/gm, "  ")}`));
    await run(kubectl("apply", "-k", overlay.dir), { stream: true });
  } finally {
    overlay.dispose();
  }

  step("wait for the rollouts");
  const timeout = process.env.ROLLOUT_TIMEOUT ?? "180s";
  for (const service of ROLLOUT_ORDER) {
    await waitForAutoscaledReplicas(service);
    const out = await run(
      kubectl("-n", NAMESPACE, "rollout", "status", `deployment/${service}`, `--timeout=${timeout}`),
      { stream: true, nothrow: true },
    );
    if (out.exitCode !== 0) {
      await run(kubectl("-n", NAMESPACE, "get", "pods", "-l", `app.kubernetes.io/name=${service}`, "-o", "wide"), {
        stream: true,
        nothrow: true,
      });
      throw new ScriptError(
        `deployment/${service} did not become ready within ${timeout} (image ${imageRef(service, tag)}).\n` +
          `${(out.stderr || out.stdout).trim()}\n` +
          "Find out why:\n" +
          `  kubectl -n ${NAMESPACE} describe deployment/${service}\n` +
          `  kubectl -n ${NAMESPACE} get events --sort-by=.lastTimestamp\n` +
          `  kubectl -n ${NAMESPACE} logs deployment/${service}\n` +
          "A longer wait: ROLLOUT_TIMEOUT=300s make up",
      );
    }
  }

  step("gateway");
  const gateway = await serviceUrl("gateway");
  gateway.close();
  // The Service's second port is HTTPS (k8s/gateway.yaml); minikube prints every URL as http://.
  const https = gateway.urls[1]?.replace(/^http:/, "https:");
  const caCommand = `${kubectl("-n", NAMESPACE, "get", "secret", "portico-edge-tls", "-o", "'jsonpath={.data.ca\\.crt}'").join(" ")} | base64 -d > portico-ca.crt`;
  console.log(`
Portico ${chalk.bold(tag)} is running in minikube (namespace ${NAMESPACE}).
  gateway   ${chalk.bold(gateway.url)}${gateway.tunnel ? `   (keep \`minikube service gateway -n ${NAMESPACE} --url\` running in another terminal to reach it)` : ""}
${https ? `  https     ${chalk.bold(https)}   (every hop behind it is mutual TLS)\n` : ""}  try       curl -X POST -H 'Content-Type: application/json' -d '{"title":"An awesome project"}' ${gateway.url}/projects/
${
  https
    ? `  tls       ${caCommand}
            curl --cacert portico-ca.crt ${https}/projects/
`
    : ""
}  dashboard make dashboard   then open http://127.0.0.1:9901/dashboard (every gateway replica, live)
  grafana   make grafana     then http://127.0.0.1:3000, user admin, password:
            ${kubectl("-n", NAMESPACE, "get", "secret", "portico-grafana", "-o", "jsonpath={.data.admin-password}").join(" ")} | base64 -d
  more      make prometheus, make alertmanager, make jaeger (each a port-forward; Ctrl-C ends it)
  check     make smoke
  remove    make down`);
});
