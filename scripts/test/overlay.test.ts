/**
 * The overlay `make up` applies, rendered by the real `kubectl kustomize`: it changes the image
 * tags and the Deployments' version label, and nothing else in k8s/.
 */
import { expect, test } from "bun:test";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { requireBinary } from "../stack/testing/processes.ts";
import { SERVICES } from "../cluster/images.ts";
import { writeOverlay } from "../cluster/overlay.ts";
import { REPO_ROOT } from "./fakes.ts";

/** A rendered object, with the fields of a Deployment's spec this test reads and rewrites. */
type Obj = {
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec?: { template: { metadata: { labels: Record<string, string> }; spec: { containers: { image: string }[] } } };
};

function render(dir: string): Obj[] {
  const proc = Bun.spawnSync(["kubectl", "kustomize", dir], { stderr: "pipe" });
  if (proc.exitCode !== 0) throw new Error(`kubectl kustomize ${dir} failed: ${proc.stderr.toString()}`);
  return parseAllDocuments(proc.stdout.toString()).map((d) => d.toJS() as Obj);
}

/**
 * The overlay's `patches` needs the kustomize inside kubectl 1.21 or later (v4+); Debian's
 * kubernetes-client is 1.20 (kustomize v2). `make up` needs the same, which any kubectl that
 * can talk to a current minikube has.
 */
function kubectlMinor(): number {
  const out = Bun.spawnSync(["kubectl", "version", "--client", "-o", "json"]).stdout.toString();
  return Number.parseInt((JSON.parse(out) as { clientVersion: { minor: string } }).clientVersion.minor, 10);
}

test.skipIf(!requireBinary("kubectl"))("kubectl is recent enough (1.21+) to apply the deploy overlay", () => {
  expect(kubectlMinor()).toBeGreaterThanOrEqual(21);
});

test.skipIf(!requireBinary("kubectl") || kubectlMinor() < 21)(
  "the deploy overlay sets the tag on every Portico image and version label, and changes nothing else",
  () => {
    const tag = "abc1234-dirty-0badcafe";
    const overlay = writeOverlay(join(REPO_ROOT, "k8s"), tag);
    try {
      const base = render(join(REPO_ROOT, "k8s"));
      const deployed = render(overlay.dir);
      expect(deployed.length).toBe(base.length);
      for (const [i, obj] of deployed.entries()) {
        const expected = structuredClone(base[i]!);
        if (expected.kind === "Deployment" && (SERVICES as readonly string[]).includes(expected.metadata.name)) {
          const name = expected.metadata.name;
          expect(obj.spec!.template.spec.containers[0]!.image).toBe(`portico/${name}:${tag}`);
          expect(obj.metadata.labels!["app.kubernetes.io/version"]).toBe(tag);
          expect(obj.spec!.template.metadata.labels["app.kubernetes.io/version"]).toBe(tag);
          expected.spec!.template.spec.containers[0]!.image = `portico/${name}:${tag}`;
          expected.metadata.labels!["app.kubernetes.io/version"] = tag;
          expected.spec!.template.metadata.labels["app.kubernetes.io/version"] = tag;
        }
        expect(obj).toEqual(expected);
      }
    } finally {
      overlay.dispose();
    }
  },
);
