/**
 * The few things the scripts ask minikube: is it running, its Docker's environment (so images
 * are built where the cluster runs them, no registry), and the gateway's URL.
 */
import { $, chalk } from "zx";
import { CommandFailed, printCommand, run, ScriptError } from "../cli.ts";

export const NAMESPACE = "portico";

/**
 * The Kubernetes version `make up` starts minikube with: one the pinned KEDA supports
 * (KEDA_KUBERNETES_SUPPORT in autoscaling.ts) and >= 1.30 (the preStop `sleep` action).
 */
export const KUBERNETES_VERSION = "v1.33.4";

/**
 * `minikube start` flags: the pinned Kubernetes, Calico (which enforces the NetworkPolicies), and
 * room for the stack — its 18 pods request 1.13 CPU and 1.8 GiB, the control plane, Calico and
 * KEDA about 1.4 CPU more, past the default 2-CPU node (docs/deployment.md).
 */
export const DEFAULT_MINIKUBE_START_FLAGS = `--kubernetes-version=${KUBERNETES_VERSION} --cni=calico --cpus=4 --memory=6g`;

export function minikubeStartFlags(env: Record<string, string | undefined> = process.env): string[] {
  return (env.MINIKUBE_START_FLAGS ?? DEFAULT_MINIKUBE_START_FLAGS).split(/\s+/).filter(Boolean);
}

/**
 * The kubectl context every command names explicitly, so `make up` / `make down` never touch
 * whatever other cluster happens to be current. minikube names the context after its profile.
 */
export function kubeContext(env: Record<string, string | undefined> = process.env): string {
  return env.KUBE_CONTEXT || env.MINIKUBE_PROFILE || "minikube";
}

/** GATEWAY_URL when set, else the cluster's gateway (`minikube service`); `close` ends a tunnel if one was opened. */
export async function clusterGateway(
  env: Record<string, string | undefined> = process.env,
): Promise<{ url: string; close: () => void }> {
  return env.GATEWAY_URL ? { url: env.GATEWAY_URL, close: () => {} } : await serviceUrl("gateway");
}

/** `kubectl --context minikube -n portico …` */
export function kubectl(...args: string[]): string[] {
  return ["kubectl", `--context=${kubeContext()}`, ...args];
}

/**
 * `kubectl get secret <name> <output…>` in the namespace: its output, or undefined when the Secret
 * does not exist (kubectl's NotFound). Any other failure (the API server slow or unreachable, a
 * Forbidden) throws: a Secret that could not be read is not a missing one, and `make up` would
 * otherwise replace live passwords or the CA under running pods.
 */
export async function getSecret(name: string, ...output: string[]): Promise<string | undefined> {
  const argv = kubectl("-n", NAMESPACE, "get", "secret", name, ...output);
  const out = await run(argv, { nothrow: true });
  if (out.exitCode === 0) return out.stdout;
  if (out.stderr.includes("(NotFound)")) return undefined;
  throw new CommandFailed(argv, out);
}

/** Parses `minikube docker-env --shell none` (KEY=VALUE lines; `export KEY="VALUE"` is accepted too). */
export function parseDockerEnv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const raw of text.split("\n")) {
    const match = /^(?:export\s+)?([A-Z_][A-Z0-9_]*)=(.*)$/.exec(raw.trim());
    if (!match) continue;
    const value = match[2]!.replace(/^"(.*)"$/, "$1");
    // `--shell none` also prints variables to unset (SSH_AUTH_SOCK=): leave those alone.
    if (value !== "") env[match[1]!] = value;
  }
  return env;
}

export async function dockerEnv(): Promise<Record<string, string>> {
  const out = await run(["minikube", "docker-env", "--shell", "none"], { nothrow: true });
  const env = parseDockerEnv(out.stdout);
  if (out.exitCode !== 0 || !env.DOCKER_HOST) {
    throw new ScriptError(
      `could not point docker at minikube's Docker (\`minikube docker-env\` exit ${out.exitCode}):\n${(out.stderr || out.stdout).trim()}\n` +
        "The images are built inside minikube, which needs the docker container runtime (minikube start --container-runtime=docker).",
    );
  }
  return env;
}

export interface ServiceUrl {
  url: string;
  /**
   * Every URL printed within the wait, one per Service port in the Service's order (`url` is the
   * first): for the gateway, http then https (k8s/gateway.yaml). minikube writes each as http://.
   */
  urls: string[];
  /**
   * Ends the `minikube service` process when it is still running: with the Docker driver on macOS
   * and Windows it keeps a tunnel open and the URL works only while it runs.
   */
  close: () => void;
  tunnel: boolean;
}

/** The first URL `minikube service <name> -n portico --url` prints (it may keep running, see ServiceUrl). */
export async function serviceUrl(name: string, timeoutMs = 60_000): Promise<ServiceUrl> {
  const argv = ["minikube", "service", name, "-n", NAMESPACE, "--url"];
  printCommand(argv);
  const p = $({ nothrow: true, quiet: true, verbose: false })`${argv}`;
  let settled = false;
  const done = p.then((out) => {
    settled = true;
    return out;
  });
  let buffered = "";
  const url = await new Promise<string | undefined>((resolve) => {
    const timer = setTimeout(() => resolve(undefined), timeoutMs);
    const found = () => /https?:\/\/\S+/.exec(buffered)?.[0];
    p.stdout.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      if (found()) {
        clearTimeout(timer);
        resolve(found());
      }
    });
    void done.then(() => {
      clearTimeout(timer);
      resolve(found());
    });
  });
  const close = () => {
    if (!settled) void p.kill().catch(() => {});
  };
  if (!url) {
    const timedOut = !settled;
    close();
    const out = await done;
    throw new ScriptError(
      `\`${argv.join(" ")}\` printed no URL${timedOut ? ` within ${timeoutMs / 1000} s` : ""}:\n${(out.stderr + out.stdout).trim()}`,
    );
  }
  // On Linux it prints the URLs and exits; still running a moment later means it holds a tunnel.
  await Promise.race([done, Bun.sleep(1000)]);
  if (!settled) console.log(chalk.dim("(minikube keeps a tunnel open for this URL while the command runs)"));
  const urls = [...buffered.matchAll(/https?:\/\/\S+/g)].map((m) => m[0]);
  return { url, urls, close, tunnel: !settled };
}
