/**
 * The vendored KEDA manifest (k8s/vendor/keda/): the file `make up` applies is the one its pin
 * names, its images are the pinned release by exact tag, and it is what KEDA's install must be —
 * so a re-vendoring that forgets the pin, the tags or a component fails here, not in a cluster.
 */
import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";
import { KEDA_MANIFEST_SHA256, KEDA_VENDOR_DIR, KEDA_VERSION } from "../../scripts/cluster/autoscaling.ts";
import { parseImage } from "./checks/hardening.ts";

const file = join(KEDA_VENDOR_DIR, `keda-${KEDA_VERSION}.yaml`);
const bytes = readFileSync(file);
const objects = parseAllDocuments(bytes.toString("utf8"))
  .map(
    (d) =>
      d.toJS() as { kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> } },
  )
  .filter(Boolean);

describe(`k8s/vendor/keda/keda-${KEDA_VERSION}.yaml`, () => {
  test("has the SHA-256 that SHA256SUMS lists and autoscaling.ts pins", () => {
    const sum = createHash("sha256").update(bytes).digest("hex");
    expect(KEDA_MANIFEST_SHA256[KEDA_VERSION]).toBe(sum);
    const listed = readFileSync(join(KEDA_VENDOR_DIR, "SHA256SUMS"), "utf8").trim().split("\n");
    expect(listed).toEqual([`${sum}  keda-${KEDA_VERSION}.yaml`]);
  });

  test("runs KEDA's three components from the pinned release, by exact tag", () => {
    const images = [...bytes.toString("utf8").matchAll(/^\s+image:\s+(\S+)\s*$/gm)].map((m) => m[1]!);
    expect(images.map((i) => parseImage(i).repository).sort()).toEqual([
      "ghcr.io/kedacore/keda",
      "ghcr.io/kedacore/keda-admission-webhooks",
      "ghcr.io/kedacore/keda-metrics-apiserver",
    ]);
    for (const image of images) expect(parseImage(image).tag).toBe(KEDA_VERSION);
  });

  test("is the full install: the ScaledObject CRD, the operator, the external metrics API and the webhook", () => {
    const names = objects.map((o) => `${o.kind}/${o.metadata.name}`);
    expect(names).toContain("CustomResourceDefinition/scaledobjects.keda.sh");
    expect(names).toContain("Deployment/keda-operator");
    expect(names).toContain("Deployment/keda-metrics-apiserver");
    expect(names).toContain("Deployment/keda-admission");
    expect(names).toContain("APIService/v1beta1.external.metrics.k8s.io");
    expect(names).toContain("ValidatingWebhookConfiguration/keda-admission");
    for (const o of objects.filter((o) => o.kind === "Deployment")) expect(o.metadata.namespace).toBe("keda");
  });

  test("labels every object with the pinned version", () => {
    const versions = new Set(objects.map((o) => o.metadata.labels?.["app.kubernetes.io/version"]));
    expect([...versions]).toEqual([KEDA_VERSION]);
  });
});
