/**
 * `make up`'s autoscaling prerequisites (scripts/cluster/autoscaling.ts) against fake tools: KEDA is
 * installed when its CRD is missing, before k8s/ (which holds a ScaledObject) is applied, and only
 * from a manifest whose SHA-256 matches the pin; the Kubernetes version minikube starts is one
 * the pinned KEDA supports.
 */
import { afterEach, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  KEDA_KUBERNETES_SUPPORT,
  KEDA_MANIFEST_SHA256,
  KEDA_VENDOR_DIR,
  KEDA_VERSION,
  kedaManifestUrl,
} from "../cluster/autoscaling.ts";
import { KUBERNETES_VERSION } from "../cluster/minikube.ts";
import { type Fakes, HAPPY, makeFakes, runScript } from "./fakes.ts";

let fakes: Fakes | undefined;
const dirs: string[] = [];
afterEach(() => {
  fakes?.cleanup();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const NO_KEDA = `case "$*" in
  *"get crd scaledobjects.keda.sh"*) echo 'Error from server (NotFound): customresourcedefinitions "scaledobjects.keda.sh" not found' >&2; exit 1 ;;
  *"jsonpath={.spec.replicas}"*) echo 3 ;;
esac
${HAPPY.kubectl}`;

/** A stand-in for KEDA's release manifest, and its SHA-256. */
function fakeManifest(text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: keda\n"): {
  file: string;
  sha256: string;
  text: string;
} {
  const dir = mkdtempSync(join(tmpdir(), "portico-keda-test-"));
  dirs.push(dir);
  const file = join(dir, "keda.yaml");
  writeFileSync(file, text);
  return { file, text, sha256: createHash("sha256").update(text).digest("hex") };
}

test("a cluster without KEDA gets the manifest whose SHA-256 matches the pin, applied from a private copy, before k8s/", async () => {
  const manifest = fakeManifest();
  fakes = makeFakes({ ...HAPPY, kubectl: NO_KEDA });
  const run = await runScript("up", fakes, { KEDA_MANIFEST: manifest.file, KEDA_SHA256: manifest.sha256 });
  expect(run.stderr).toBe("");
  expect(run.exitCode).toBe(0);
  const kubectl = fakes.calls().filter((c) => c.startsWith("kubectl"));
  expect(kubectl.slice(0, 4)).toEqual([
    "kubectl --context=minikube get crd scaledobjects.keda.sh",
    expect.stringMatching(
      new RegExp(
        `^kubectl --context=minikube apply --server-side -f /.*portico-keda-[^/]+/keda-${KEDA_VERSION}\\.yaml$`,
      ),
    ),
    "kubectl --context=minikube wait --for=condition=established --timeout=60s crd/scaledobjects.keda.sh",
    "kubectl --context=minikube -n keda wait --for=condition=Available deployment --all --timeout=180s",
  ]);
  expect(kubectl.findIndex((c) => c.includes("apply -k"))).toBeGreaterThan(3);
  expect(fakes.appliedFiles()[`keda-${KEDA_VERSION}.yaml`]).toBe(manifest.text);
  expect(run.stdout).toContain(`KEDA ${KEDA_VERSION}: SHA-256 ${manifest.sha256} matches the pin`);
});

test("by default the vendored manifest is applied, checked against its pin, and nothing is downloaded", async () => {
  const vendored = readFileSync(join(KEDA_VENDOR_DIR, `keda-${KEDA_VERSION}.yaml`), "utf8");
  fakes = makeFakes({ ...HAPPY, kubectl: NO_KEDA });
  const run = await runScript("up", fakes, {});
  expect(run.stderr).toBe("");
  expect(run.exitCode).toBe(0);
  expect(run.stdout).not.toContain("$ fetch");
  expect(fakes.appliedFiles()[`keda-${KEDA_VERSION}.yaml`]).toBe(vendored);
  expect(run.stdout).toContain(`KEDA ${KEDA_VERSION}: SHA-256 ${KEDA_MANIFEST_SHA256[KEDA_VERSION]} matches the pin`);
});

test("an edited copy of the pinned release is refused by the built-in pin, with no KEDA_SHA256 given", async () => {
  const vendored = readFileSync(join(KEDA_VENDOR_DIR, `keda-${KEDA_VERSION}.yaml`), "utf8");
  const edited = fakeManifest(vendored.replace("image: ghcr.io/kedacore/keda:", "image: evil.example/keda:"));
  fakes = makeFakes({ ...HAPPY, kubectl: NO_KEDA });
  const run = await runScript("up", fakes, { KEDA_MANIFEST: edited.file });
  expect(run.exitCode).toBe(1);
  expect(run.stderr).toContain(`has SHA-256 ${edited.sha256}, not the pinned ${KEDA_MANIFEST_SHA256[KEDA_VERSION]}`);
  expect(fakes.calls().filter((c) => c.includes(" apply "))).toEqual([]);
});

test("a manifest whose SHA-256 differs from the pin is not applied, and nothing after it is", async () => {
  const manifest = fakeManifest();
  fakes = makeFakes({ ...HAPPY, kubectl: NO_KEDA });
  const run = await runScript("up", fakes, { KEDA_MANIFEST: manifest.file, KEDA_SHA256: "0".repeat(64) });
  expect(run.exitCode).toBe(1);
  expect(run.stderr).toContain(`has SHA-256 ${manifest.sha256}, not the pinned ${"0".repeat(64)}: not applied`);
  expect(fakes.calls().filter((c) => c.includes(" apply "))).toEqual([]);
});

test("without a pinned SHA-256 up installs KEDA with a warning that prints the downloaded sum and how to pin it", async () => {
  const manifest = fakeManifest();
  fakes = makeFakes({ ...HAPPY, kubectl: NO_KEDA });
  const run = await runScript("up", fakes, { KEDA_VERSION: "2.17.0", KEDA_MANIFEST: manifest.file });
  expect(run.exitCode).toBe(0);
  expect(run.stderr).toContain(
    `no SHA-256 is pinned for KEDA 2.17.0; applying the downloaded manifest, SHA-256 ${manifest.sha256}`,
  );
  expect(run.stderr).toContain(`curl -fsSL ${kedaManifestUrl("2.17.0")} | sha256sum`);
  expect(fakes.appliedFiles()["keda-2.17.0.yaml"]).toBe(manifest.text);
});

test("with KEDA_REQUIRE_PIN=1 and no pinned SHA-256, up refuses to install KEDA and applies nothing", async () => {
  fakes = makeFakes({ ...HAPPY, kubectl: NO_KEDA });
  const run = await runScript("up", fakes, { KEDA_VERSION: "2.17.0", KEDA_REQUIRE_PIN: "1" });
  expect(run.exitCode).toBe(1);
  expect(run.stderr).toContain("no SHA-256 is pinned for KEDA 2.17.0, and KEDA_REQUIRE_PIN=1");
  expect(fakes.calls().filter((c) => c.includes(" apply "))).toEqual([]);
});

test("the manifest is downloaded (here from a local server), checked, then applied", async () => {
  const manifest = fakeManifest("kind: List\nitems: []\n");
  const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response(manifest.text) });
  try {
    fakes = makeFakes({ ...HAPPY, kubectl: NO_KEDA });
    const url = `http://127.0.0.1:${server.port}/keda.yaml`;
    const run = await runScript("up", fakes, { KEDA_MANIFEST: url, KEDA_SHA256: manifest.sha256 });
    expect(run.exitCode).toBe(0);
    expect(run.stdout).toContain(`$ fetch ${url}`);
    expect(fakes.appliedFiles()[`keda-${KEDA_VERSION}.yaml`]).toBe(manifest.text);
  } finally {
    server.stop(true);
  }
});

test("a cluster that has KEDA is left alone: nothing is downloaded", async () => {
  fakes = makeFakes(HAPPY);
  const run = await runScript("up", fakes, { KEDA_MANIFEST: "http://127.0.0.1:1/never-fetched.yaml" });
  expect(run.exitCode).toBe(0);
  expect(run.stdout).not.toContain("$ fetch");
  expect(fakes.calls().some((c) => c.includes("--server-side"))).toBe(false);
});

test("minikube starts a Kubernetes version the pinned KEDA supports (and >= 1.30, for preStop sleep)", () => {
  const minor = (v: string) => Number(v.replace(/^v/, "").split(".")[1]);
  const support = KEDA_KUBERNETES_SUPPORT[KEDA_VERSION]!;
  expect(KUBERNETES_VERSION).toMatch(/^v1\.\d+\.\d+$/);
  expect(minor(KUBERNETES_VERSION)).toBeGreaterThanOrEqual(Math.max(minor(support.min), 30));
  expect(minor(KUBERNETES_VERSION)).toBeLessThanOrEqual(minor(support.max));
});
