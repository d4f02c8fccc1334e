/**
 * Every manifest under k8s/ against the Kubernetes schema, strictly: wrong types (ajv, from
 * kubernetes-models) and unknown keys (the TypeScript declarations, see checks/strict-schema.ts).
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  formatProblem,
  loadManifests,
  type Manifest,
  parseManifests,
  REPO_ROOT,
  withEdit,
} from "./checks/manifests.ts";
import { StrictValidator } from "./checks/strict-schema.ts";

const manifests = loadManifests();
const validator = new StrictValidator(manifests);

async function problemsOf(set: Manifest[]): Promise<string[]> {
  return (await validator.validate(set)).problems.map(formatProblem);
}

test("every manifest under k8s/ validates strictly against the Kubernetes schema", async () => {
  const { problems, notes } = await validator.validate(manifests);
  for (const note of notes) console.info(note);
  expect(problems.map(formatProblem)).toEqual([]);
});

test("the manifests found are the objects Portico deploys (the walk is not vacuous)", () => {
  const names = manifests.map((m) => `${m.object.kind}/${String(m.object.metadata?.name ?? "")}`);
  for (const expected of [
    "Namespace/portico",
    "Deployment/gateway",
    "Deployment/webapp",
    "Deployment/rpcapp",
    "Service/gateway",
    "Service/gateway-admin",
    "Service/gateway-headless",
    "Service/webapp",
    "Service/webapp-headless",
    "Service/rpcapp",
    "Service/rpcapp-headless",
    "ConfigMap/gateway-routes",
    "PodDisruptionBudget/gateway",
    "PodDisruptionBudget/webapp",
    "PodDisruptionBudget/rpcapp",
    "NetworkPolicy/default-deny",
    "NetworkPolicy/webapp",
    "NetworkPolicy/rpcapp",
    "Deployment/redis-limiter",
    "StatefulSet/redis-store",
    "Deployment/alertmanager",
    "Deployment/otel-collector",
    "Kustomization/",
  ]) {
    expect(names).toContain(expected);
  }
});

describe("a mistake in a manifest fails with its file, line and field", () => {
  const deploymentFiles = [...new Set(manifests.filter((m) => m.object.kind === "Deployment").map((m) => m.file))];

  test.each(deploymentFiles)("replcas in %s is an unknown field of the Deployment", async (file) => {
    const replicas = /\n {2}replicas: \d+/.exec(readFileSync(join(REPO_ROOT, file), "utf8"))?.[0];
    // An autoscaled Deployment has no replicas line (k8s/autoscaling.yaml): the typo is added instead.
    const [from, to] = replicas
      ? [replicas, replicas.replace("replicas", "replcas")]
      : ["\n  revisionHistoryLimit:", "\n  replcas: 3\n  revisionHistoryLimit:"];
    const { manifests: edited, line } = withEdit(file, from, to);
    const name = file.replace(/^k8s\/(monitoring\/)?|\.yaml$/g, "");
    expect(await problemsOf(edited)).toContainEqual(
      expect.stringContaining(`${file}:${line}: Deployment/${name} spec.replcas: unknown field`),
    );
  });

  test.each([
    {
      what: "a misspelt container key",
      from: "imagePullPolicy: IfNotPresent",
      to: "imagePullPolcy: IfNotPresent",
      expected: "Deployment/webapp spec.template.spec.containers[0].imagePullPolcy: unknown field",
    },
    {
      what: "a misspelt metadata key",
      from: "  labels:\n    app.kubernetes.io/name: webapp",
      to: "  lables:\n    app.kubernetes.io/name: webapp",
      expected: "Deployment/webapp metadata.lables: unknown field",
    },
    {
      what: "a misspelt probe key",
      from: "periodSeconds: 5",
      to: "periodSecond: 5",
      expected: "Deployment/webapp spec.template.spec.containers[0].readinessProbe.periodSecond: unknown field",
    },
    {
      what: "a string where an integer belongs",
      from: "containerPort: 8080",
      to: 'containerPort: "8080"',
      expected: "Deployment/webapp spec.template.spec.containers[0].ports[0].containerPort: must be integer",
    },
    {
      what: "a value outside an enum",
      from: "imagePullPolicy: IfNotPresent",
      to: "imagePullPolicy: Sometimes",
      expected:
        "Deployment/webapp spec.template.spec.containers[0].imagePullPolicy: must be equal to one of the allowed values",
    },
    {
      what: "a missing required field",
      from: "    - name: webapp\n",
      to: "    - nam: webapp\n",
      expected: "Deployment/webapp spec.template.spec.containers[0].name: required field is missing",
    },
    {
      what: "a misspelt Service key",
      from: "  clusterIP: None",
      to: "  clusterIp: None",
      expected: "Service/webapp-headless spec.clusterIp: unknown field",
    },
    {
      what: "a misspelt kind",
      from: "kind: PodDisruptionBudget",
      to: "kind: PodDisruptionBudgit",
      expected: 'PodDisruptionBudgit/webapp kind: unknown apiVersion/kind "policy/v1 PodDisruptionBudgit"',
    },
  ])("$what in k8s/webapp.yaml is reported there", async ({ from, to, expected }) => {
    const { manifests: edited, line } = withEdit("k8s/webapp.yaml", from, to);
    expect(await problemsOf(edited)).toContainEqual(expect.stringContaining(`k8s/webapp.yaml:${line}: ${expected}`));
  });

  test("a misspelt key in kustomization.yaml is an unknown field", async () => {
    const { manifests: edited, line } = withEdit("k8s/kustomization.yaml", "resources:", "resouces:");
    expect(await problemsOf(edited)).toContain(
      `k8s/kustomization.yaml:${line}: Kustomization/(no name) resouces: unknown field`,
    );
  });

  test("a document without apiVersion and kind is rejected", async () => {
    const [doc] = parseManifests("scrape_interval: 15s\n", "k8s/monitoring/prometheus.yml");
    expect(await problemsOf([doc!])).toEqual([
      expect.stringContaining("k8s/monitoring/prometheus.yml:1: (no kind)/(no name): not a Kubernetes object"),
    ]);
  });

  test("a known custom resource is accepted without its schema, with a note", async () => {
    const [doc] = parseManifests(
      "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata:\n  name: gateway\nspec:\n  endpoints: [{port: admin}]\n",
      "k8s/monitor.yaml",
    );
    const result = await validator.validate([doc!]);
    expect(result.problems).toEqual([]);
    expect(result.notes).toEqual([
      expect.stringContaining("k8s/monitor.yaml: ServiceMonitor/gateway: monitoring.coreos.com/v1 ServiceMonitor"),
    ]);
  });
});
