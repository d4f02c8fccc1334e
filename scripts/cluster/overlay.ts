/**
 * The kustomize overlay `make up` applies: k8s/ as it is, with the tag just built on every image
 * and as the Deployments' version label (which SERVICE_VERSION reads). Applying k8s/ and then
 * `kubectl set image` would first roll every Deployment out to the placeholder tag `dev` (an image
 * that does not exist) and leave the version label behind; one overlay is one rollout to the
 * right image and version.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { stringify } from "yaml";
import { imageName, SERVICES } from "./images.ts";

const VERSION_LABEL_PATH = "labels/app.kubernetes.io~1version"; // JSON Pointer: "/" is written ~1

export function overlayKustomization(k8sDir: string, overlayDir: string, tag: string): string {
  const patch = ["/metadata", "/spec/template/metadata"].map((base) => ({
    op: "replace",
    path: `${base}/${VERSION_LABEL_PATH}`,
    value: tag,
  }));
  return stringify({
    apiVersion: "kustomize.config.k8s.io/v1beta1",
    kind: "Kustomization",
    // kustomize accepts only relative paths for a directory resource.
    resources: [relative(overlayDir, k8sDir)],
    images: SERVICES.map((s) => ({ name: imageName(s), newTag: tag })),
    // Only the Deployments running images this script builds: Redis, Prometheus & co. keep their own version.
    patches: [
      {
        target: { kind: "Deployment", labelSelector: `app.kubernetes.io/name in (${SERVICES.join(",")})` },
        patch: stringify(patch),
      },
    ],
  });
}

/** Writes the overlay into a fresh temporary directory; `dispose` removes it. */
export function writeOverlay(k8sDir: string, tag: string): { dir: string; text: string; dispose: () => void } {
  const dir = mkdtempSync(join(tmpdir(), "portico-deploy-"));
  const text = overlayKustomization(k8sDir, dir, tag);
  writeFileSync(join(dir, "kustomization.yaml"), text);
  return { dir, text, dispose: () => rmSync(dir, { recursive: true, force: true }) };
}
