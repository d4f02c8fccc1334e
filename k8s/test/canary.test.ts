/**
 * The canary Deployment pattern in k8s/canary/ — what `make canary` applies in the cluster for a
 * while and deletes (scripts/cluster/canary.ts): each example is exactly what that code generates
 * from the stable Deployment; strictly valid; never deployed by `kubectl apply -k k8s/` nor read
 * as part of k8s/; as sound as the stable Deployment by every check that holds for a pod (probes,
 * security, images, Secret references, env read by the code, network flows); and selected by every
 * object that must reach its pod (Services, NetworkPolicy, disruption budget), while its own
 * selector never selects a stable pod. The checks it fails on purpose are spelled out.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join, relative } from "node:path";
import type { IDeployment } from "kubernetes-models/apps/v1/Deployment";
import type { INetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import type { IPodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import type { IService } from "kubernetes-models/v1/Service";
import { stringify } from "yaml";
import { canaryDeployment, canaryExample, stableDeployment } from "../../scripts/cluster/canary.ts";
import {
  type Check,
  checkContainers,
  checkDeploymentShape,
  checkEnvIsRead,
  checkImages,
  checkNamespaces,
  checkPortsMatchEnv,
  checkProbes,
  checkServices,
  deployedFiles,
  ofKind,
  selects,
} from "./checks/cross-checks.ts";
import { HARDENING_CHECKS } from "./checks/hardening.ts";
import {
  type Manifest,
  formatProblem,
  K8S_DIR,
  loadManifests,
  manifestFiles,
  parseManifests,
  REPO_ROOT,
} from "./checks/manifests.ts";
import { allowedFlows, checkNetworkPolicies } from "./checks/network-policies.ts";
import { StrictValidator } from "./checks/strict-schema.ts";

const deployed = loadManifests();
const SERVICES = ["webapp", "rpcapp"] as const;

/** Checks that hold for the canary as for any of Portico's pods: none may find a new problem. */
const POD_CHECKS: Record<string, Check> = {
  checkContainers,
  checkImages,
  checkPortsMatchEnv,
  checkEnvIsRead,
  checkProbes,
  checkNamespaces,
  ...Object.fromEntries(Object.entries(HARDENING_CHECKS).filter(([name]) => name !== "checkDisruptionBudgets")),
  checkNetworkPolicies,
};

/** What `check` finds with `extra` beside the deployed objects and not without: the extra objects' doing. */
function newProblems(check: Check, extra: Manifest[]): string[] {
  const before = new Set(check(deployed).map(formatProblem));
  return check([...deployed, ...extra])
    .map(formatProblem)
    .filter((p) => !before.has(p));
}

function asManifest(object: IDeployment, file: string): Manifest[] {
  return parseManifests(stringify(object), file);
}

describe.each(SERVICES)("k8s/canary/%s-canary.yaml", (service) => {
  const path = join(K8S_DIR, "canary", `${service}-canary.yaml`);
  const file = relative(REPO_ROOT, path);
  const text = readFileSync(path, "utf8");
  const example = parseManifests(text, file);
  const canary = example[0]!.object as unknown as IDeployment;
  const stable = ofKind<IDeployment>(deployed, "Deployment").find(({ o }) => o.metadata?.name === service)!.o;
  const canaryPods = canary.spec?.template.metadata?.labels ?? {};

  test("is exactly what scripts/cluster/canary.ts generates for v2 (else regenerate it: see its header)", () => {
    if (text !== canaryExample(service, "v2"))
      throw new Error(
        `${file} is stale: bun scripts/cluster/canary.ts --example ${service} > ${file}\n(k8s/${service}.yaml changed since, or the generator did)`,
      );
    expect(example).toHaveLength(1);
    expect(canary).toEqual(canaryDeployment(stableDeployment(service), { service, tag: "v2" }));
  });

  test("validates strictly against the Kubernetes schema (types and unknown keys)", async () => {
    const { problems, notes } = await new StrictValidator(example).validate(example);
    expect({ problems: problems.map(formatProblem), notes }).toEqual({ problems: [], notes: [] });
  });

  test("is not deployed by kubectl apply -k k8s/, nor read as part of k8s/", () => {
    expect(manifestFiles()).not.toContain(path);
    expect(deployedFiles().has(path)).toBe(false);
    expect(deployed.some((m) => m.object.metadata?.name === `${service}-canary`)).toBe(false);
    expect(readFileSync(join(K8S_DIR, "kustomization.yaml"), "utf8")).not.toContain("canary");
  });

  test.each(Object.keys(POD_CHECKS))("%s finds nothing wrong with it beside the deployed objects", (name) => {
    expect(newProblems(POD_CHECKS[name]!, example)).toEqual([]);
  });

  test("a drill's FAULT_* variables are ones the service reads (checkEnvIsRead), and a misspelt one is caught", () => {
    for (const fault of ["errors", "latency"] as const) {
      const drill = asManifest(canaryDeployment(stableDeployment(service), { service, tag: "v2", fault }), file);
      expect({ fault, problems: newProblems(checkEnvIsRead, drill) }).toEqual({ fault, problems: [] });
    }
    const misspelt = canaryDeployment(stableDeployment(service), { service, tag: "v2", fault: "errors" });
    const env = misspelt.spec!.template.spec!.containers[0]!.env!;
    env[env.length - 1]!.name = "FAULT_ERRORS_PERCENT";
    expect(newProblems(checkEnvIsRead, asManifest(misspelt, file))).toEqual([
      expect.stringContaining("FAULT_ERRORS_PERCENT is not read anywhere"),
    ]);
  });

  test("its pod is reached like a stable one: the Services, the NetworkPolicy and the disruption budget select it", () => {
    const services = ofKind<IService>(deployed, "Service").filter(({ o }) => selects(o.spec?.selector, canaryPods));
    expect(services.map(({ o }) => o.metadata?.name).sort()).toEqual([service, `${service}-headless`]);
    const policies = ofKind<INetworkPolicy>(deployed, "NetworkPolicy").filter(({ o }) =>
      selects(o.spec?.podSelector?.matchLabels, canaryPods),
    );
    expect(policies.map(({ o }) => o.metadata?.name)).toEqual([service]);
    const budgets = ofKind<IPodDisruptionBudget>(deployed, "PodDisruptionBudget").filter(({ o }) =>
      selects(o.spec?.selector?.matchLabels, canaryPods),
    );
    expect(budgets.map(({ o }) => o.metadata?.name)).toEqual([service]);
    // So the same flows, no new one: the gateway may reach it, nothing else may.
    const flows = (ms: Manifest[]) =>
      allowedFlows(ms)
        .map((f) => f.flow)
        .sort();
    expect(flows([...deployed, ...example])).toEqual(flows(deployed));
  });

  test("its selector never selects a stable pod; the stable selector does select its pod (one way, by design)", () => {
    const stablePods = stable.spec?.template.metadata?.labels ?? {};
    expect(selects(canary.spec?.selector.matchLabels, canaryPods)).toBe(true);
    expect(selects(canary.spec?.selector.matchLabels, stablePods)).toBe(false);
    expect(selects(stable.spec?.selector.matchLabels, canaryPods)).toBe(true);
  });

  test("fails checkDeploymentShape and checkServices only where the pattern means to", () => {
    // Its name is not its name label (the pods must look like the service's to the Services and
    // policies), and its selector adds the track label (so it does not select the stable pods).
    expect(newProblems(checkDeploymentShape, example)).toEqual([
      expect.stringMatching(
        /Deployment\/[a-z]+-canary metadata\.labels\["app\.kubernetes\.io\/name"\]: must equal the Deployment.s name/,
      ),
      expect.stringMatching(/spec\.template\.metadata\.labels\["app\.kubernetes\.io\/name"\]: must equal/),
      expect.stringMatching(/spec\.selector: must select on app\.kubernetes\.io\/name only/),
    ]);
    // Both Services select the pods of two Deployments while a canary runs: the point of it.
    expect(newProblems(checkServices, example)).toEqual(
      [service, `${service}-headless`].map((name) =>
        expect.stringMatching(
          new RegExp(
            `^k8s/${service}\\.yaml:\\d+: Service/${name} spec\\.selector: selects pods of several Deployments \\(${service}, ${service}\\)$`,
          ),
        ),
      ),
    );
  });
});
