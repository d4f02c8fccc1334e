/**
 * `make up`'s autoscaling prerequisites (scripts/cluster/autoscaling.ts) against fake tools: KEDA is
 * installed when its CRD is missing, before k8s/ (which holds a ScaledObject) is applied.
 */
import { afterEach, expect, test } from "bun:test";
import { type Fakes, HAPPY, makeFakes, runScript } from "./fakes.ts";

let fakes: Fakes | undefined;
afterEach(() => fakes?.cleanup());

test("a cluster without KEDA gets it (server-side apply of the pinned release, then waits) before k8s/ is applied", async () => {
  fakes = makeFakes({
    ...HAPPY,
    kubectl: `case "$*" in
  *"get crd scaledobjects.keda.sh"*) echo 'Error from server (NotFound): customresourcedefinitions "scaledobjects.keda.sh" not found' >&2; exit 1 ;;
  *"rollout status"*) echo "deployment successfully rolled out" ;;
  *"jsonpath={.spec.replicas}"*) echo 3 ;;
esac`,
  });
  const run = await runScript("up", fakes);
  expect(run.exitCode).toBe(0);
  const kubectl = fakes.calls().filter((c) => c.startsWith("kubectl"));
  expect(kubectl.slice(0, 5)).toEqual([
    "kubectl --context=minikube get crd scaledobjects.keda.sh",
    "kubectl --context=minikube apply --server-side -f https://github.com/kedacore/keda/releases/download/v2.16.1/keda-2.16.1.yaml",
    "kubectl --context=minikube wait --for=condition=established --timeout=60s crd/scaledobjects.keda.sh",
    "kubectl --context=minikube -n keda wait --for=condition=Available deployment --all --timeout=180s",
    expect.stringMatching(/^kubectl --context=minikube apply -k /),
  ]);
  expect(run.stdout).toContain("KEDA is not installed in this cluster: installing it");
});

test("KEDA_VERSION pins another release", async () => {
  fakes = makeFakes({ ...HAPPY, kubectl: `case "$*" in *"get crd"*) exit 1 ;; *"rollout status"*) echo ok ;; esac` });
  const run = await runScript("up", fakes, { KEDA_VERSION: "2.17.0" });
  expect(run.exitCode).toBe(0);
  expect(fakes.calls()).toContain(
    "kubectl --context=minikube apply --server-side -f https://github.com/kedacore/keda/releases/download/v2.17.0/keda-2.17.0.yaml",
  );
});
