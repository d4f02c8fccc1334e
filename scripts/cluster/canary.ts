/**
 * `make canary SERVICE=<webapp|rpcapp>` in the minikube cluster of `make up` (scripts/canary.ts
 * calls runClusterCanary): the new version runs as a second Deployment, `<service>-canary`, one pod
 * behind the same headless Service as the stable pods; every gateway replica steps its share up
 * and judges it on its own traffic (gateway/src/canary/controller.ts, through the admin API that
 * scripts/stack/canary.ts drives), then this promotes or rolls back. Step by step, every command
 * printed:
 *
 *   1. versions — what deployment/<service> runs; the canary's version is CANARY_VERSION (the git
 *      sha by default), `<tag>-canary` when that is the version already running (the gateways
 *      tell the two sides apart by version only);
 *   2. the image portico/<service>:<version>, built inside minikube's Docker;
 *   3. the gateways' admin API — each gateway pod's admin port through `kubectl port-forward`
 *      (a local port per pod, read from its output), the token from the Secret portico-admin;
 *      a gateway already running a canary of this service stops the run before anything changes;
 *   4. every gateway starts its canary of the new version — before the canary exists, so its pod
 *      gets the first step's share from its first request (a gateway running a canary sends
 *      nothing to an endpoint whose version it does not know yet);
 *   5. the canary Deployment (canaryDeployment below), applied on standard input, and
 *      `kubectl rollout status`; steady load through the gateway's Service (`minikube service`),
 *      on the service's route only, half of it on a new connection per request so that every
 *      gateway pod gets its share; once every gateway has found the canary's pod and its version,
 *      each step's verdict is printed as it comes;
 *   6. promoted on every gateway: deployment/<service> is rolled to the new image (one patch:
 *      image and version label, as `make rollout`) while the gateways send the new version 100 %,
 *      then the canary Deployment is deleted and the gateways' canaries reset. One gateway aborting
 *      (or no verdict within CANARY_TIMEOUT_S) aborts it everywhere: weight 0, the canary Deployment
 *      deleted and its pod gone, the gateways reset; exit 1.
 *
 * The load and the port-forwards stop in every case; a failure after the canary Deployment was
 * created stops the canary the same way as an abort before it is reported.
 *
 * Why the pod spec comes from k8s/<service>.yaml rather than the live object (`kubectl get -o
 * json`): the canary is the working tree's code, so it runs the working tree's pod spec — the same
 * file `make up` applies, with the same Secret mounts and TLS environment as the stable pods — and
 * no server-set field (status, uid, managedFields, the last-applied annotation) has to be
 * stripped. The committed examples in k8s/canary/ are this function's output (k8s/test checks
 * they stay so). A change to the pod spec itself reaches the stable Deployment with `make up`,
 * not with a promotion, which changes the image and the version label only.
 *
 * The selectors, and what their overlap means: docs/deployment.md, "Canary releases in the cluster".
 * Environment: ROLLOUT_TIMEOUT (180s, each `kubectl rollout status`), KUBE_CONTEXT, and what
 * scripts/canary.ts reads.
 */
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import type { IDeployment } from "kubernetes-models/apps/v1/Deployment";
import { parseAllDocuments, stringify } from "yaml";
import { $, chalk } from "zx";
import { lines } from "../../lib/lines.ts";
import { CommandFailed, printCommand, requireTools, run, ScriptError, step } from "../cli.ts";
import { canaryMix, GatewayCanaries } from "../stack/canary.ts";
import { CANARY_FAULTS } from "../stack/control.ts";
import { formatReport, LoadGenerator, type LoadReport } from "../traffic/load-generator.ts";
import { imageRef } from "./images.ts";
import { buildImage, currentImage, setImage, waitForOldPodsGone, waitForRollout } from "./kube-rollout.ts";
import { clusterGateway, kubectl, NAMESPACE } from "./minikube.ts";

export interface ClusterCanaryOptions {
  service: "webapp" | "rpcapp";
  tag: string;
  fault?: "errors" | "latency";
  rps: number;
  timeoutMs: number;
}

export type CanaryService = ClusterCanaryOptions["service"];

const K8S_DIR = resolve(import.meta.dir, "../../k8s");
export const NAME_LABEL = "app.kubernetes.io/name";
export const VERSION_LABEL = "app.kubernetes.io/version";
/** On the canary's Deployment, pod template and selector only: the stable objects never carry it. */
export const TRACK_LABEL = "portico.dev/track";
export const CANARY_TRACK = "canary";
/** The gateway's admin listener (k8s/gateway.yaml, ADMIN_PORT). */
export const ADMIN_PORT = 9901;
/** The Secret and key of the gateways' ADMIN_TOKEN (scripts/cluster/secrets.ts). */
const ADMIN_SECRET = "portico-admin";
/** A valid label value, so a valid version (the gateways accept `[A-Za-z0-9._-]{1,63}`). */
const LABEL_VALUE = /^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$/;

/** `webapp-canary` */
export function canaryName(service: CanaryService): string {
  return `${service}-canary`;
}

/** The canary Deployment's selector: the name, and the track the stable pods do not carry. */
export function canarySelector(service: CanaryService): Record<string, string> {
  return { [NAME_LABEL]: service, [TRACK_LABEL]: CANARY_TRACK };
}

function selectorString(labels: Record<string, string>): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
}

/** deployment/<service> as k8s/<service>.yaml declares it: what `make up` applies (the overlay sets only its tag). */
export function stableDeployment(service: CanaryService, k8sDir = K8S_DIR): IDeployment {
  const file = join(k8sDir, `${service}.yaml`);
  const found = parseAllDocuments(readFileSync(file, "utf8"))
    .map((doc) => doc.toJS() as unknown)
    .find((o): o is IDeployment => {
      const object = o as { kind?: unknown; metadata?: { name?: unknown } } | null;
      return object?.kind === "Deployment" && object.metadata?.name === service;
    });
  if (!found) throw new ScriptError(`${file} holds no Deployment named ${service}`);
  return found;
}

/** The drill's environment for the canary's container (scripts/stack/control.ts CANARY_FAULTS, read by lib/fault.ts). */
export function faultEnv(fault: ClusterCanaryOptions["fault"]): { name: string; value: string }[] {
  return fault ? Object.entries(CANARY_FAULTS[fault]).map(([name, value]) => ({ name, value })) : [];
}

/**
 * The canary Deployment, derived from the stable one: one replica; the same pod spec (volumes,
 * Secret mounts, probes, security context, env) but the image portico/<service>:<tag> and, for a
 * drill, FAULT_* appended to the service's container; the version label `tag`; and the track label
 * on the Deployment, its pod template and its selector, so its selector never matches a stable pod.
 * The rest of the stable spec (rolling update, minReadySeconds, progress deadline) is kept.
 */
export function canaryDeployment(
  stable: IDeployment,
  opts: { service: CanaryService; tag: string; fault?: ClusterCanaryOptions["fault"] },
): IDeployment {
  const { service, tag } = opts;
  const spec = stable.spec;
  const podSpec = spec?.template.spec;
  if (!spec || !podSpec) throw new ScriptError(`deployment/${service} has no pod template to derive a canary from`);
  if (!podSpec.containers.some((c) => c.name === service))
    throw new ScriptError(`deployment/${service} has no container named ${service}`);
  const track = { [VERSION_LABEL]: tag, [TRACK_LABEL]: CANARY_TRACK };
  const { replicas: _replicas, selector: _selector, template, ...rest } = structuredClone(spec);
  const drill = faultEnv(opts.fault);
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: {
      name: canaryName(service),
      namespace: stable.metadata?.namespace ?? NAMESPACE,
      labels: { ...stable.metadata?.labels, ...track },
      annotations: { "kubernetes.io/change-cause": `make canary: ${imageRef(service, tag)}` },
    },
    spec: {
      replicas: 1,
      ...rest,
      selector: { matchLabels: canarySelector(service) },
      template: {
        metadata: { ...template.metadata, labels: { ...template.metadata?.labels, ...track } },
        spec: {
          ...template.spec,
          containers: template.spec!.containers.map((c) =>
            c.name === service
              ? {
                  ...c,
                  image: imageRef(service, tag),
                  ...(drill.length > 0 ? { env: [...(c.env ?? []), ...drill] } : {}),
                }
              : c,
          ),
        },
      },
    },
  } as IDeployment;
}

/** The text of k8s/canary/<service>-canary.yaml: the canary Deployment `make canary` would apply for `tag`. */
export function canaryExample(service: CanaryService, tag = "v2"): string {
  const object = canaryDeployment(stableDeployment(service), { service, tag });
  return [
    "# An example, never applied by `make up` (k8s/kustomization.yaml does not list k8s/canary/): the",
    `# Deployment \`make canary SERVICE=${service}\` applies in the cluster for version ${tag}, generated by`,
    `# scripts/cluster/canary.ts from the stable Deployment in k8s/${service}.yaml; k8s/test/canary.test.ts`,
    "# checks it still is. After editing that file, regenerate it:",
    `#   bun scripts/cluster/canary.ts --example ${service} > k8s/canary/${service}-canary.yaml`,
    "# Its selector adds portico.dev/track=canary, so it never selects a stable pod; the stable selector",
    "# (the name only, immutable) does match its pod, which no stable ReplicaSet adopts: the pod has a",
    '# controller already (docs/deployment.md, "Canary releases in the cluster").',
    stringify(object, { lineWidth: 0 }).trimEnd(),
    "",
  ].join("\n");
}

// ---- the cluster ---------------------------------------------------------------------------------

/** The value of one label of deployment/<service>'s pod template, or "" when it has none. */
async function templateLabel(service: CanaryService, label: string): Promise<string> {
  const out = await run(
    kubectl(
      "-n",
      NAMESPACE,
      "get",
      `deployment/${service}`,
      "-o",
      `jsonpath={.spec.template.metadata.labels.${label.replace(/\./g, "\\.")}}`,
    ),
    { nothrow: true },
  );
  return out.exitCode === 0 ? out.stdout.trim() : "";
}

/** Applies one object from standard input: no file, and nothing secret in it (Secrets are references). */
async function applyObject(object: IDeployment): Promise<void> {
  const argv = kubectl("-n", NAMESPACE, "apply", "-f", "-");
  printCommand(argv, `${object.kind}/${object.metadata?.name} on standard input`);
  const out = await $({ input: stringify(object), nothrow: true, quiet: true, verbose: false })`${argv}`;
  if (out.exitCode !== 0) throw new CommandFailed(argv, out);
  process.stdout.write(out.stdout);
}

async function waitForCanary(service: CanaryService, timeout: string): Promise<void> {
  const name = canaryName(service);
  const out = await run(kubectl("-n", NAMESPACE, "rollout", "status", `deployment/${name}`, `--timeout=${timeout}`), {
    stream: true,
    nothrow: true,
  });
  if (out.exitCode === 0) return;
  await run(kubectl("-n", NAMESPACE, "get", "pods", "-l", selectorString(canarySelector(service)), "-o", "wide"), {
    stream: true,
    nothrow: true,
  });
  throw new ScriptError(
    `deployment/${name} did not become ready within ${timeout}:\n${(out.stderr || out.stdout).trim()}\n` +
      `No gateway sent it traffic under a canary. Find out why: kubectl -n ${NAMESPACE} describe pods -l ${selectorString(canarySelector(service))}`,
  );
}

/** Deletes the canary Deployment (its ReplicaSet and pod go with it), then waits until its pods are gone. */
export async function removeCanary(service: CanaryService, timeoutMs = 90_000): Promise<void> {
  await run(kubectl("-n", NAMESPACE, "delete", `deployment/${canaryName(service)}`, "--ignore-not-found"), {
    stream: true,
  });
  const argv = kubectl("-n", NAMESPACE, "get", "pods", "-l", selectorString(canarySelector(service)), "-o", "name");
  printCommand(argv, "until none is left (preStop, drain, exit)");
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const out = await $({ nothrow: true, quiet: true, verbose: false })`${argv}`;
    if (out.exitCode === 0 && out.stdout.trim() === "") return;
    if (Date.now() > deadline) {
      console.log(chalk.yellow(`still there after ${timeoutMs / 1000} s: ${out.stdout.trim().split("\n").join(", ")}`));
      return;
    }
    await Bun.sleep(2_000);
  }
}

/** The gateway pods to drive: running, not terminating. */
async function gatewayPods(): Promise<string[]> {
  const out = await run(
    kubectl(
      "-n",
      NAMESPACE,
      "get",
      "pods",
      "-l",
      `${NAME_LABEL}=gateway`,
      "--field-selector=status.phase=Running",
      "-o",
      'jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\\n"}{end}',
    ),
  );
  return out.stdout
    .split("\n")
    .map((line) => line.trim().split(/\s+/))
    .filter((fields) => fields.length === 1 && fields[0])
    .map((fields) => fields[0]!);
}

/** The gateways' ADMIN_TOKEN, read from its Secret: it reaches this process on kubectl's stdout, never an argv. */
async function adminToken(): Promise<string> {
  const out = await run(kubectl("-n", NAMESPACE, "get", "secret", ADMIN_SECRET, "-o", "jsonpath={.data.token}"), {
    nothrow: true,
  });
  const token = out.exitCode === 0 ? Buffer.from(out.stdout.trim(), "base64").toString("utf8") : "";
  if (!token)
    throw new ScriptError(
      `could not read the gateways' admin token (secret/${ADMIN_SECRET}, key token) in namespace ${NAMESPACE}:\n${out.stderr.trim() || "(empty)"}\nIt is created by make up.`,
    );
  return token;
}

/** `kubectl port-forward` processes, one per gateway pod; each stopped by its PID. */
export class PortForwards {
  readonly #procs: { pid: number; exited: Promise<number> }[] = [];

  /** Forwards a free local port on 127.0.0.1 to `pod`'s `port`; returns the local port once kubectl says it listens. */
  async open(pod: string, port = ADMIN_PORT, timeoutMs = 20_000): Promise<number> {
    const argv = kubectl("-n", NAMESPACE, "port-forward", `pod/${pod}`, "--address=127.0.0.1", `:${port}`);
    printCommand(argv, "in the background, until the end of the run");
    const proc = Bun.spawn(argv, { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    this.#procs.push({ pid: proc.pid, exited: proc.exited });
    let stderr = "";
    void (async () => {
      for await (const line of lines(proc.stderr)) stderr = `${stderr}${line}\n`.slice(-2_000);
    })();
    const pattern = new RegExp(`Forwarding from 127\\.0\\.0\\.1:(\\d+) -> ${port}\\b`);
    const found = await new Promise<number | undefined>((done) => {
      const timer = setTimeout(() => done(undefined), timeoutMs);
      // Read to the end: kubectl prints a line per connection, and a full pipe would block it.
      void (async () => {
        for await (const line of lines(proc.stdout)) {
          const m = pattern.exec(line);
          if (m) {
            clearTimeout(timer);
            done(Number(m[1]));
          }
        }
        clearTimeout(timer);
        done(undefined);
      })().catch(() => done(undefined));
    });
    if (found === undefined) {
      throw new ScriptError(
        `\`${argv.join(" ")}\` did not report a local port within ${timeoutMs / 1000} s:\n${stderr.trim() || "(no output)"}`,
      );
    }
    return found;
  }

  /** Ends every port-forward (SIGTERM by PID), and waits briefly for each to exit. */
  async closeAll(): Promise<void> {
    for (const { pid } of this.#procs) {
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        // already gone
      }
    }
    await Promise.all(this.#procs.map(({ exited }) => Promise.race([exited, Bun.sleep(2_000)])));
    this.#procs.length = 0;
  }
}

interface EndpointView {
  address: string;
  available: boolean;
  version: string | null;
}

/**
 * Waits until every gateway lists an available endpoint of `service` reporting `version` (admin
 * /upstreams): the headless Service's DNS answer and a health check both have to come first.
 */
async function waitForDiscovery(
  gateways: Record<string, string>,
  service: CanaryService,
  version: string,
  token: string,
  timeoutMs = 60_000,
): Promise<void> {
  console.log(`  until every gateway has found the canary's pod (version ${version}) through ${service}-headless`);
  const deadline = Date.now() + timeoutMs;
  let missing = Object.keys(gateways);
  for (;;) {
    const found = await Promise.all(
      missing.map(async (name) => {
        try {
          const res = await fetch(`${gateways[name]}/upstreams`, {
            headers: { authorization: `Bearer ${token}` },
            signal: AbortSignal.timeout(5_000),
          });
          if (!res.ok) return false;
          const upstreams = (await res.json()) as { name: string; endpoints: EndpointView[] }[];
          return (
            upstreams.find((u) => u.name === service)?.endpoints.some((e) => e.available && e.version === version) ??
            false
          );
        } catch {
          return false;
        }
      }),
    );
    missing = missing.filter((_, i) => !found[i]);
    if (missing.length === 0) return;
    if (Date.now() > deadline)
      throw new ScriptError(
        `${missing.join(", ")} did not find an available ${service} endpoint of version ${version} within ${timeoutMs / 1000} s (admin /upstreams)`,
      );
    await Bun.sleep(500);
  }
}

/** Stops a canary that may be half-way: every gateway at 0 %, the canary Deployment gone, the gateways reset. Best effort. */
async function stopCanary(service: CanaryService, canaries: GatewayCanaries | undefined): Promise<void> {
  for (const base of Object.values(canaries?.gateways ?? {})) await canaries!.call(base, "/abort", {}).catch(() => {});
  await removeCanary(service).catch((err: Error) => console.log(chalk.yellow(err.message)));
  await canaries?.resetAll().catch((err: Error) => console.log(chalk.yellow(`resetting the gateways: ${err.message}`)));
}

export async function runClusterCanary(opts: ClusterCanaryOptions): Promise<void> {
  const { service, fault, rps, timeoutMs } = opts;
  requireTools(
    ["minikube", "kubectl", "docker"],
    "`make canary` builds the new image inside minikube and runs it as a second Deployment beside the stable one with kubectl.",
  );
  const rolloutTimeout = process.env.ROLLOUT_TIMEOUT ?? "180s";
  const print = (line: string) => console.log(`  ${line}`);

  step("versions");
  const running = await currentImage(service);
  const stableVersion = (await templateLabel(service, VERSION_LABEL)) || running.split(":").at(-1) || "";
  const version = opts.tag === stableVersion ? `${opts.tag}-canary` : opts.tag;
  if (!LABEL_VALUE.test(version))
    throw new ScriptError(
      `"${version}" cannot be a version (a label value: letters, digits, '.', '_', '-', at most 63): set CANARY_VERSION`,
    );
  console.log(
    `deployment/${service} runs ${chalk.bold(running)} (version ${chalk.bold(stableVersion)}); the canary: ${chalk.bold(imageRef(service, version))}${fault ? ` (drill: ${fault})` : ""}`,
  );
  if (version !== opts.tag) console.log(chalk.yellow(`${opts.tag} is the version running: the canary is ${version}`));

  step("image, built inside minikube's Docker");
  await buildImage(service, version);

  const forwards = new PortForwards();
  let canaries: GatewayCanaries | undefined;
  let gateway: { url: string; close: () => void } | undefined;
  let load: LoadGenerator | undefined;
  let report: LoadReport | undefined;
  let applied = false;
  let outcome: Awaited<ReturnType<GatewayCanaries["follow"]>> | undefined;
  try {
    step("the gateways' admin API");
    const pods = await gatewayPods();
    if (pods.length === 0) throw new ScriptError(`no running gateway pod in namespace ${NAMESPACE}: make up first`);
    const token = await adminToken();
    const admins: Record<string, string> = {};
    for (const pod of pods) admins[pod] = `http://127.0.0.1:${await forwards.open(pod)}`;
    canaries = new GatewayCanaries(admins, service, token);
    for (const [pod, base] of Object.entries(admins)) {
      const view = await canaries.call(base, "");
      if (view.state === "running" || view.state === "paused")
        throw new ScriptError(
          `${pod} is already running a canary of ${service} (version ${view.version}, ${view.state} at ${view.weight}%); nothing was changed. ` +
            `Let that run finish, or stop it by hand (docs/deployment.md, "Canary releases in the cluster").`,
        );
    }
    const gatewaysAdmin = canaries;

    try {
      // The gateways first: the canary pod then gets the first step's share from its first request
      // (a gateway running a canary sends nothing to an endpoint whose version it does not know).
      step(`canary of ${service}: ${stableVersion} (stable) → ${version}, judged by every gateway`);
      applied = true;
      await gatewaysAdmin.startAll(version, print);
      step(`deployment/${canaryName(service)}: one pod of ${version} beside the stable ones`);
      await applyObject(canaryDeployment(stableDeployment(service), { service, tag: version, fault }));
      await waitForCanary(service, rolloutTimeout);

      step("load, through the gateway");
      gateway = await clusterGateway();
      // Half the requests on connections of their own, as in make dev: kube-proxy spreads new
      // connections over the gateway pods, where a few keep-alive ones could all land on one and
      // leave another gateway's analysis without requests.
      const half = Math.max(1, Math.round(rps / 2));
      load = new LoadGenerator(gateway.url, {
        rps: half,
        newConnectionRps: half,
        mix: canaryMix(service, true),
        maxInFlight: 2_000,
      });
      load.start();
      print(`${half * 2} requests/s to ${gateway.url} on ${service}'s route, half on connections of their own`);
      await waitForDiscovery(admins, service, version, token);

      step("every step's analysis, as each gateway judges it");
      outcome = await gatewaysAdmin.follow(timeoutMs, print);
      if (outcome.verdict === "promoted") {
        print(`PROMOTE: ${outcome.reason}; deployment/${service} is rolled to ${imageRef(service, version)}`);
        step(`roll deployment/${service}`);
        await setImage(service, version);
        await waitForRollout(service, rolloutTimeout);
        step(`remove deployment/${canaryName(service)}`);
        await removeCanary(service);
        await waitForOldPodsGone(service);
      } else {
        print(
          `ABORT: ${outcome.reason}; every gateway sends the canary 0%, deployment/${canaryName(service)} is deleted`,
        );
        step(`remove deployment/${canaryName(service)}`);
        await removeCanary(service);
      }
      print("every gateway's canary is reset: traffic over every endpoint again");
      await gatewaysAdmin.resetAll();
    } catch (err) {
      if (applied) {
        console.log(
          chalk.yellow(
            `\n${err instanceof Error ? err.message : String(err)}\nstopping the canary: every gateway at 0%, deployment/${canaryName(service)} deleted`,
          ),
        );
        await stopCanary(service, gatewaysAdmin);
      }
      throw err;
    }
  } catch (err) {
    if (err instanceof ScriptError) throw err;
    throw new ScriptError(`the canary of ${service} failed: ${err instanceof Error ? err.message : String(err)}`);
  } finally {
    if (load) report = await load.stop();
    gateway?.close();
    await forwards.closeAll();
    if (report) print(formatReport(report));
  }

  if (!outcome) throw new ScriptError(`the canary of ${service} ended without a verdict`);
  const sent = report?.sent ?? 0;
  const failed = report?.failed ?? 0;
  if (outcome.verdict === "promoted") {
    console.log(
      chalk.green(`\nverdict: PROMOTED — ${service} runs ${version} everywhere; ${failed} of ${sent} requests failed`),
    );
    return;
  }
  console.log(
    chalk.red(
      `\nverdict: ROLLED BACK — ${outcome.reason}; ${service} stays on ${stableVersion}; ${failed} of ${sent} requests failed while the canary had its share`,
    ),
  );
  throw new ScriptError("the canary was rolled back (see the verdict above)", 1);
}

// `bun scripts/cluster/canary.ts --example webapp [tag]`: prints k8s/canary/webapp-canary.yaml.
if (import.meta.main) {
  const [flag, service, tag] = process.argv.slice(2);
  if (flag !== "--example" || (service !== "webapp" && service !== "rpcapp")) {
    console.error("usage: bun scripts/cluster/canary.ts --example <webapp|rpcapp> [tag]");
    process.exit(2);
  }
  process.stdout.write(canaryExample(service, tag));
}
