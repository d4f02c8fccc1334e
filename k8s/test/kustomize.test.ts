/**
 * `kubectl kustomize k8s/` renders what `kubectl apply -k k8s/` would apply, offline (no cluster).
 * Under CI a missing kubectl fails the test instead of skipping it.
 */
import { expect, test } from "bun:test";
import { requireBinary } from "../../scripts/stack/testing/processes.ts";
import { formatProblem, loadManifests, parseManifests } from "./checks/manifests.ts";
import { StrictValidator } from "./checks/strict-schema.ts";

const hasKubectl = requireBinary("kubectl");

test.skipIf(!hasKubectl)(
  "kubectl kustomize k8s/ renders every object into the portico namespace, still valid",
  async () => {
    const proc = Bun.spawnSync(["kubectl", "kustomize", "k8s/"], { cwd: `${import.meta.dir}/../..`, stderr: "pipe" });
    expect({ exitCode: proc.exitCode, stderr: proc.stderr.toString() }).toEqual({ exitCode: 0, stderr: "" });
    const rendered = parseManifests(proc.stdout.toString(), "kubectl kustomize k8s/");

    const sources = loadManifests().filter((m) => m.object.kind !== "Kustomization");
    const names = (ms: typeof sources) => ms.map((m) => `${m.object.kind}/${String(m.object.metadata?.name)}`).sort();
    expect(names(rendered)).toEqual(names(sources));
    for (const m of rendered) {
      if (m.object.kind !== "Namespace")
        expect(
          `${m.object.kind}/${String(m.object.metadata?.name)} in ${String(m.object.metadata?.namespace)}`,
        ).toEndWith(" in portico");
    }
    // The images are the ones kustomization.yaml names, with its placeholder tag.
    const images = rendered.flatMap((m) =>
      m.object.kind === "Deployment"
        ? [
            (m.object as { spec: { template: { spec: { containers: { image: string }[] } } } }).spec.template.spec
              .containers[0]!.image,
          ]
        : [],
    );
    expect(images.filter((i) => i.startsWith("portico/")).sort()).toEqual([
      "portico/gateway:dev",
      "portico/rpcapp:dev",
      "portico/webapp:dev",
    ]);

    const { problems } = await new StrictValidator(rendered).validate(rendered);
    expect(problems.map(formatProblem)).toEqual([]);
  },
);
