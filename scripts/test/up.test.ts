/**
 * scripts/up.ts against fake minikube, kubectl, docker and git (see fakes.ts): what it runs, in
 * which order, with which arguments, and how it fails.
 */
import { afterEach, expect, test } from "bun:test";
import { parse as parseYaml } from "yaml";
import { KUBERNETES_VERSION } from "../cluster/minikube.ts";
import { aclHash, CLUSTER_SECRETS } from "../cluster/secrets.ts";
import { type Fakes, type FakeScripts, HAPPY, makeFakes, runScript } from "./fakes.ts";

let fakes: Fakes | undefined;
afterEach(() => fakes?.cleanup());

function withFakes(overrides: FakeScripts = {}, drop: string[] = []): Fakes {
  const scripts: FakeScripts = { ...HAPPY, ...overrides };
  for (const name of drop) delete scripts[name];
  fakes = makeFakes(scripts);
  return fakes;
}

test("up builds the 3 images in minikube's Docker, applies k8s/ with their tag, waits for every rollout, then prints the URL", async () => {
  const f = withFakes();
  const run = await runScript("up", f);
  expect(run.stderr).toBe("");
  expect(run.exitCode).toBe(0);
  const calls = f.calls();
  expect(calls.filter((c) => c.startsWith("git ")).length).toBeGreaterThan(0);
  expect(calls.filter((c) => !c.startsWith("git "))).toEqual([
    "minikube status",
    "minikube docker-env --shell none",
    "docker build -f gateway/Dockerfile -t portico/gateway:abc1234 .",
    "docker env: DOCKER_HOST=tcp://minikube.test:2376",
    "docker build -f webapp/Dockerfile -t portico/webapp:abc1234 .",
    "docker env: DOCKER_HOST=tcp://minikube.test:2376",
    "docker build -f rpcapp/Dockerfile -t portico/rpcapp:abc1234 .",
    "docker env: DOCKER_HOST=tcp://minikube.test:2376",
    // k8s/autoscaling.yaml: CPU metrics for the HPAs, and KEDA's CRD (installed when missing).
    "minikube addons enable metrics-server",
    "kubectl --context=minikube get crd scaledobjects.keda.sh",
    // The Secrets k8s/ reads: the namespace first, then each one that is missing (here: none).
    expect.stringMatching(/^kubectl --context=minikube apply -f \/.*\/k8s\/namespace\.yaml$/),
    "kubectl --context=minikube -n portico get secret portico-admin -o name",
    "kubectl --context=minikube -n portico get secret portico-grafana -o name",
    "kubectl --context=minikube -n portico get secret portico-redis-limiter -o name",
    "kubectl --context=minikube -n portico get secret portico-redis-store -o name",
    // The certificates: here all present, so no CA is read or made and nothing is applied.
    "kubectl --context=minikube -n portico get secret portico-edge-tls -o json",
    "kubectl --context=minikube -n portico get secret portico-gateway-client-tls -o json",
    "kubectl --context=minikube -n portico get secret portico-webapp-tls -o json",
    "kubectl --context=minikube -n portico get secret portico-rpcapp-tls -o json",
    "kubectl --context=minikube -n portico get secret portico-otel-collector-tls -o json",
    expect.stringMatching(/^kubectl --context=minikube apply -k \/.*portico-deploy-/),
    // Each Deployment leaves `replicas` to its autoscaler: wait for it to ask for 3, then for the rollout.
    "kubectl --context=minikube -n portico get deployment/webapp -o jsonpath={.spec.replicas}",
    "kubectl --context=minikube -n portico rollout status deployment/webapp --timeout=180s",
    "kubectl --context=minikube -n portico get deployment/rpcapp -o jsonpath={.spec.replicas}",
    "kubectl --context=minikube -n portico rollout status deployment/rpcapp --timeout=180s",
    "kubectl --context=minikube -n portico get deployment/gateway -o jsonpath={.spec.replicas}",
    "kubectl --context=minikube -n portico rollout status deployment/gateway --timeout=180s",
    "minikube service gateway -n portico --url",
  ]);
  // What was applied: k8s/ itself, with the built tag on the three images and the version label.
  const overlay = parseYaml(f.appliedOverlay()!) as {
    resources: string[];
    images: { name: string; newTag: string }[];
    patches: { patch: string }[];
  };
  expect(overlay.resources).toEqual([expect.stringMatching(/(^|\/)k8s$/)]);
  expect(overlay.images).toEqual(
    ["gateway", "webapp", "rpcapp"].map((s) => ({ name: `portico/${s}`, newTag: "abc1234" })),
  );
  expect(overlay.patches[0]!.patch).toContain("/spec/template/metadata/labels/app.kubernetes.io~1version");
  // Every step printed what it ran, and the URL is the last thing said.
  expect(run.stdout).toContain("$ docker build -f webapp/Dockerfile -t portico/webapp:abc1234 .");
  expect(run.stdout).toContain(
    "$ kubectl --context=minikube -n portico rollout status deployment/gateway --timeout=180s",
  );
  expect(run.stdout).toContain("gateway   http://gateway.test:30080");
  // The Service's second URL is its HTTPS port; the CA to trust it comes from the edge Secret.
  expect(run.stdout).toContain("https     https://gateway.test:30443");
  expect(run.stdout).toContain(
    "kubectl --context=minikube -n portico get secret portico-edge-tls -o 'jsonpath={.data.ca\\.crt}' | base64 -d > portico-ca.crt",
  );
  expect(run.stdout).toContain("curl --cacert portico-ca.crt https://gateway.test:30443/projects/");
  expect(run.stdout).toContain("dashboard make dashboard   then open http://127.0.0.1:9901/dashboard");
  expect(run.stdout).toContain(
    "kubectl --context=minikube -n portico get secret portico-grafana -o jsonpath={.data.admin-password} | base64 -d",
  );
  expect(run.stdout).toContain(
    "kept as they are: portico-admin, portico-grafana, portico-redis-limiter, portico-redis-store, portico-edge-tls, portico-gateway-client-tls, portico-webapp-tls, portico-rpcapp-tls",
  );
});

test("up starts minikube (the pinned Kubernetes, and Calico for the NetworkPolicies) when it is not running", async () => {
  const f = withFakes({
    minikube: `case "$1" in status) echo "host: Stopped"; exit 7 ;; ${HAPPY.minikube!.slice('case "$1" in'.length)}`,
  });
  const run = await runScript("up", f);
  expect(run.exitCode).toBe(0);
  expect(
    f
      .calls()
      .filter((c) => c.startsWith("minikube"))
      .slice(0, 3),
  ).toEqual([
    "minikube status",
    `minikube start --kubernetes-version=${KUBERNETES_VERSION} --cni=calico --cpus=4 --memory=6g`,
    "minikube docker-env --shell none",
  ]);
});

test("uncommitted changes to what the images are built from give a -dirty tag with a hash of them", async () => {
  const f = withFakes();
  const run = await runScript("up", f, { FAKE_GIT_DIRTY: "1" });
  expect(run.exitCode).toBe(0);
  const build = f.calls().find((c) => c.startsWith("docker build -f gateway/"));
  expect(build).toMatch(/^docker build -f gateway\/Dockerfile -t portico\/gateway:abc1234-dirty-[0-9a-f]{8} \.$/);
  const tag = build!.split(":").at(-1)!.split(" ")[0]!;
  expect(f.appliedOverlay()).toContain(`newTag: ${tag}`);
  expect(f.calls()).toContain(
    `git status --porcelain -- package.json bun.lock bunfig.toml tsconfig.json .dockerignore lib proto gateway webapp rpcapp`,
  );
});

test.each(["minikube", "kubectl", "docker"])(
  "without %s, up exits 2 naming it and suggesting make dev, having run nothing",
  async (tool) => {
    const f = withFakes({}, [tool]);
    const run = await runScript("up", f);
    expect(run.exitCode).toBe(2);
    expect(run.stderr).toContain(`${tool} is not installed`);
    expect(run.stderr).toContain("make dev");
    expect(f.calls()).toEqual([]);
  },
);

test("a rollout that does not finish exits 1 with a readable message, and the URL is never printed", async () => {
  const f = withFakes({
    kubectl: `case "$*" in
  *"rollout status deployment/rpcapp"*) echo 'error: deployment "rpcapp" exceeded its progress deadline' >&2; exit 1 ;;
  *"rollout status"*) echo "deployment successfully rolled out" ;;
  *"get pods"*) echo "rpcapp-5d9c-x   0/1   ImagePullBackOff" ;;
esac`,
  });
  const run = await runScript("up", f, { ROLLOUT_TIMEOUT: "5s" });
  expect(run.exitCode).toBe(1);
  expect(run.stderr).toContain("deployment/rpcapp did not become ready within 5s (image portico/rpcapp:abc1234)");
  expect(run.stderr).toContain("exceeded its progress deadline");
  expect(run.stderr).toContain("kubectl -n portico describe deployment/rpcapp");
  const calls = f.calls();
  expect(calls).toContain("kubectl --context=minikube -n portico get pods -l app.kubernetes.io/name=rpcapp -o wide");
  expect(calls.some((c) => c.includes("deployment/gateway"))).toBe(false);
  expect(calls.some((c) => c.startsWith("minikube service"))).toBe(false);
});

test("a failing image build stops up before anything is applied", async () => {
  const f = withFakes({
    docker: `case "$*" in *webapp*) echo "ERROR: failed to solve: bun install" >&2; exit 1 ;; esac`,
  });
  const run = await runScript("up", f);
  expect(run.exitCode).toBe(1);
  expect(run.stderr).toContain("`docker build -f webapp/Dockerfile -t portico/webapp:abc1234 .` failed (exit 1)");
  expect(run.stderr).toContain("failed to solve");
  expect(f.calls().some((c) => c.startsWith("kubectl"))).toBe(false);
});

test("KUBE_CONTEXT chooses the cluster every kubectl command names", async () => {
  const f = withFakes();
  const run = await runScript("up", f, { KUBE_CONTEXT: "portico-test" });
  expect(run.exitCode).toBe(0);
  const kubectlCalls = f.calls().filter((c) => c.startsWith("kubectl"));
  expect(kubectlCalls.length).toBe(18);
  for (const call of kubectlCalls) expect(call).toStartWith("kubectl --context=portico-test ");
});

test("the Makefile's port-forward targets name the context the scripts use: KUBE_CONTEXT, else MINIKUBE_PROFILE, else minikube", () => {
  const dryRun = (env: Record<string, string>) => {
    const { KUBE_CONTEXT: _k, MINIKUBE_PROFILE: _p, ...rest } = process.env;
    const out = Bun.spawnSync(["make", "-s", "-n", "dashboard"], { env: { ...rest, ...env } });
    expect(out.exitCode).toBe(0);
    return out.stdout.toString();
  };
  expect(dryRun({})).toContain("kubectl --context=minikube ");
  expect(dryRun({ MINIKUBE_PROFILE: "dev" })).toContain("kubectl --context=dev ");
  expect(dryRun({ MINIKUBE_PROFILE: "dev", KUBE_CONTEXT: "other" })).toContain("kubectl --context=other ");
});

test("IMAGE_TAG replaces the git sha, and an invalid one is refused before anything runs", async () => {
  const f = withFakes();
  const run = await runScript("up", f, { IMAGE_TAG: "release-1.2" });
  expect(run.exitCode).toBe(0);
  expect(f.calls()).toContain("docker build -f rpcapp/Dockerfile -t portico/rpcapp:release-1.2 .");
  expect(f.calls().some((c) => c.startsWith("git"))).toBe(false);

  f.cleanup();
  const g = withFakes();
  const bad = await runScript("up", g, { IMAGE_TAG: "has space" });
  expect(bad.exitCode).toBe(1);
  expect(bad.stderr).toContain('IMAGE_TAG="has space" is not a valid image tag');
  expect(g.calls()).toEqual([]);
});

/** A kubectl that finds no Secret in the cluster (so up creates them), otherwise the happy one. */
const KUBECTL_WITHOUT_SECRETS = `case "$*" in
  *"get secret"*) echo 'Error from server (NotFound): secrets not found' >&2; exit 1 ;;
esac
${HAPPY.kubectl}`;

function decodedSecrets(f: Fakes): Record<string, { kind: string; data: Record<string, string> }> {
  const out: Record<string, { kind: string; data: Record<string, string> }> = {};
  for (const [file, text] of Object.entries(f.appliedFiles())) {
    if (!file.startsWith("portico-")) continue;
    const o = parseYaml(text) as { kind: string; metadata: { name: string }; data: Record<string, string> };
    out[o.metadata.name] = {
      kind: o.kind,
      data: Object.fromEntries(Object.entries(o.data).map(([k, v]) => [k, Buffer.from(v, "base64").toString()])),
    };
  }
  return out;
}

test("a cluster without the Secrets gets them generated: every key k8s/ reads, values never on a command line", async () => {
  const f = withFakes({ kubectl: KUBECTL_WITHOUT_SECRETS });
  const run = await runScript("up", f, { GRAFANA_ADMIN_PASSWORD: "a-chosen-password-0123" });
  expect(run.stderr).toBe("");
  expect(run.exitCode).toBe(0);
  const secrets = decodedSecrets(f);
  expect(Object.keys(secrets).sort()).toEqual(Object.keys(CLUSTER_SECRETS).sort());
  for (const [name, keys] of Object.entries(CLUSTER_SECRETS))
    expect({ name, kind: secrets[name]!.kind, keys: Object.keys(secrets[name]!.data).sort() }).toEqual({
      name,
      kind: "Secret",
      keys: [...keys].sort(),
    });
  // A value given in the environment is used; the others are random and long.
  expect(secrets["portico-grafana"]!.data["admin-password"]).toBe("a-chosen-password-0123");
  const limiter = secrets["portico-redis-limiter"]!.data;
  expect(limiter.password!.length).toBeGreaterThanOrEqual(43);
  expect(limiter.url).toBe(`redis://gateway:${limiter.password}@redis-limiter:6379`);
  // Redis holds the hash, never the password itself.
  expect(limiter["users.acl"]).toContain(`user gateway on ${aclHash(limiter.password!)} ~portico:rl:*`);
  expect(limiter["users.acl"]).not.toContain(limiter.password!);
  expect(limiter["users.acl"]).toContain("user default off");
  const store = secrets["portico-redis-store"]!.data;
  expect(store.url).toBe(`redis://webapp:${store["webapp-password"]}@redis-store-0.redis-store:6379`);
  expect(
    new Set([
      store["webapp-password"],
      store["replica-password"],
      store["sentinel-password"],
      store["sentinel-redis-password"],
    ]).size,
  ).toBe(4);
  // Applied from files before k8s/ itself; no value ever appears in a command or the output.
  const calls = f.calls();
  const applies = calls.filter((c) => /apply -f .*portico-secrets-.*\/portico-[a-z-]+\.yaml$/.test(c));
  expect(applies.length).toBe(4);
  expect(calls.findIndex((c) => c.includes("apply -k"))).toBeGreaterThan(calls.indexOf(applies.at(-1)!));
  for (const value of [limiter.password!, store["webapp-password"]!, "a-chosen-password-0123"]) {
    expect(calls.join("\n")).not.toContain(value);
    expect(run.stdout).not.toContain(value);
  }
  expect(run.stdout).toContain("created: portico-admin, portico-grafana, portico-redis-limiter, portico-redis-store");
});

test("a Secret that cannot be read (the API server timing out) is not a missing one: make up stops, nothing is replaced", async () => {
  const f = withFakes({
    kubectl: `case "$*" in
  *"get secret portico-redis-store"*) echo 'Error from server (Timeout): the server was unable to return a response in the time allotted' >&2; exit 1 ;;
  *"get secret"*) echo 'Error from server (NotFound): secrets not found' >&2; exit 1 ;;
esac
${HAPPY.kubectl}`,
  });
  const run = await runScript("up", f, {});
  expect(run.exitCode).toBe(1);
  expect(run.stderr).toContain("get secret portico-redis-store");
  expect(run.stderr).toContain("the server was unable to return a response");
  // No Secret generated or applied, missing ones included: none or all.
  expect(f.calls().filter((c) => c.includes("portico-secrets-") || c.includes("apply -k"))).toEqual([]);
});

test("a chosen password too short to be one is refused before anything is applied", async () => {
  const f = withFakes({ kubectl: KUBECTL_WITHOUT_SECRETS });
  const run = await runScript("up", f, { GRAFANA_ADMIN_PASSWORD: "admin" });
  expect(run.exitCode).toBe(1);
  expect(run.stderr).toContain("GRAFANA_ADMIN_PASSWORD must be at least 16 characters");
  expect(f.calls().filter((c) => c.includes("portico-secrets-") || c.includes("apply -k"))).toEqual([]);
});
