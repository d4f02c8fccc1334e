/**
 * What k8s/autoscaling.yaml needs in the cluster, which `make up` provides before applying k8s/:
 *
 * - metrics-server (minikube's addon): the CPU figures the HorizontalPodAutoscalers scale on, and
 *   `kubectl top`;
 * - KEDA, whose ScaledObject scales the gateway on its request rate. Its CRD must exist before
 *   `kubectl apply -k` meets a ScaledObject, and its admission webhook must answer, so a fresh
 *   install is waited for.
 *
 * KEDA's manifest is vendored in k8s/vendor/keda/ (how it was built is in its README), so `make up`
 * downloads nothing: the file is applied only if its SHA-256 is the one pinned here, from a private
 * copy taken after hashing it (never `kubectl apply -f <url>`, which would apply whatever the URL
 * serves). KEDA_VERSION is tested with the Kubernetes version `make up` starts minikube with
 * (KUBERNETES_VERSION in minikube.ts; KEDA 2.19 supports 1.32 to 1.34).
 *
 * And after applying: a Deployment without `replicas` starts with 1 pod until its autoscaler
 * raises it to the minimum (3), so `make up` waits for that before `kubectl rollout status` —
 * otherwise the rollout would be "complete" with one pod and `make smoke` would find one replica.
 */
import { createHash } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { $, chalk } from "zx";
import { printCommand, run, ScriptError } from "../cli.ts";
import { kubectl, NAMESPACE } from "./minikube.ts";

export const KEDA_VERSION = "2.19.0";
/** The Kubernetes minor versions each pinned KEDA release supports (https://keda.sh/docs/latest/operate/cluster/). */
export const KEDA_KUBERNETES_SUPPORT: Record<string, { min: string; max: string }> = {
  "2.19.0": { min: "1.32", max: "1.34" },
};

/**
 * SHA-256 of each KEDA manifest `make up` may apply, by version: the vendored file's (also in
 * k8s/vendor/keda/SHA256SUMS). A manifest whose sum does not match stops `make up`. Another
 * version (KEDA_VERSION) is downloaded from its release and needs a pin: here, or for one run
 * KEDA_SHA256; without one it is applied with a warning that prints the sum of what was downloaded
 * (trust on first use, as `kubectl apply -f <release URL>` would be), unless KEDA_REQUIRE_PIN=1
 * refuses it. KEDA_MANIFEST names a file or URL to use instead.
 */
export const KEDA_MANIFEST_SHA256: Record<string, string> = {
  "2.19.0": "9575199b019db67a86d93e5d84ddefa7538ccd3eb71e1df0e391c0aab99b399b",
};

/** The vendored manifests' folder: k8s/vendor/keda, from this file's place in the repository. */
export const KEDA_VENDOR_DIR = resolve(import.meta.dir, "../../k8s/vendor/keda");

export function kedaManifestUrl(version = process.env.KEDA_VERSION || KEDA_VERSION): string {
  return `https://github.com/kedacore/keda/releases/download/v${version}/keda-${version}.yaml`;
}

/** Where `make up` takes KEDA `version` from: the vendored file for the pinned version, else its release. */
export function kedaManifestSource(version: string): string {
  return version === KEDA_VERSION ? join(KEDA_VENDOR_DIR, `keda-${version}.yaml`) : kedaManifestUrl(version);
}

/** The manifest's bytes, from a local file or an http(s) URL. */
async function readManifest(source: string): Promise<Buffer> {
  if (!/^https?:\/\//.test(source)) return readFileSync(source);
  printCommand(["fetch", source]);
  const response = await fetch(source, { redirect: "follow", signal: AbortSignal.timeout(60_000) });
  if (!response.ok) throw new ScriptError(`could not download ${source}: HTTP ${response.status}`);
  return Buffer.from(await response.arrayBuffer());
}

/** KEDA's manifest, checked against its pinned SHA-256, in a private file for `kubectl apply`. */
export async function verifiedKedaManifest(
  env: Record<string, string | undefined> = process.env,
): Promise<{ file: string; dispose: () => void }> {
  const version = env.KEDA_VERSION || KEDA_VERSION;
  const source = env.KEDA_MANIFEST || kedaManifestSource(version);
  const expected = (env.KEDA_SHA256 || KEDA_MANIFEST_SHA256[version] || "").toLowerCase();
  const pinned = /^[0-9a-f]{64}$/.test(expected);
  const howToPin =
    `  curl -fsSL ${kedaManifestUrl(version)} | sha256sum\n` +
    `then add "${version}": "<sum>" to KEDA_MANIFEST_SHA256 in scripts/cluster/autoscaling.ts ` +
    "(or run once with KEDA_SHA256=<sum> make up).";
  if (!pinned && env.KEDA_REQUIRE_PIN === "1") {
    throw new ScriptError(
      `no SHA-256 is pinned for KEDA ${version}, and KEDA_REQUIRE_PIN=1. On a machine you trust:\n${howToPin}`,
    );
  }
  const bytes = await readManifest(source);
  const actual = createHash("sha256").update(bytes).digest("hex");
  if (pinned && actual !== expected) {
    throw new ScriptError(
      `KEDA ${version} manifest from ${source} has SHA-256 ${actual}, not the pinned ${expected}: not applied.\n` +
        "The file changed or was tampered with; check the release before pinning a new sum.",
    );
  }
  if (!pinned) {
    console.warn(
      chalk.yellow(
        `warning: no SHA-256 is pinned for KEDA ${version}; applying the downloaded manifest, SHA-256 ${actual}.\n` +
          `Check it against the release, then pin it:\n${howToPin}`,
      ),
    );
  }
  const dir = mkdtempSync(join(tmpdir(), "portico-keda-"));
  chmodSync(dir, 0o700);
  const file = join(dir, `keda-${version}.yaml`);
  writeFileSync(file, bytes, { mode: 0o600 });
  if (pinned) console.log(chalk.dim(`KEDA ${version}: SHA-256 ${actual} matches the pin`));
  return { file, dispose: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function ensureAutoscaling(): Promise<void> {
  await run(["minikube", "addons", "enable", "metrics-server"], { stream: true });
  const crd = await run(kubectl("get", "crd", "scaledobjects.keda.sh"), { nothrow: true });
  if (crd.exitCode === 0) return;
  console.log(
    `KEDA is not installed in this cluster: installing it (it scales the gateway on its request rate; once per cluster)`,
  );
  const manifest = await verifiedKedaManifest();
  try {
    // Server-side apply: KEDA's CRDs are too large for the last-applied annotation of a client-side apply.
    await run(kubectl("apply", "--server-side", "-f", manifest.file), { stream: true });
  } finally {
    manifest.dispose();
  }
  await run(kubectl("wait", "--for=condition=established", "--timeout=60s", "crd/scaledobjects.keda.sh"), {
    stream: true,
  });
  await run(kubectl("-n", "keda", "wait", "--for=condition=Available", "deployment", "--all", "--timeout=180s"), {
    stream: true,
  });
}

/**
 * Waits until `deployment/<service>` asks for at least `min` replicas (its autoscaler has acted),
 * polling quietly after printing the command once. A count it cannot read is not waited for; one
 * still below `min` after `timeoutMs` is reported, not fatal.
 */
export async function waitForAutoscaledReplicas(service: string, min = 3, timeoutMs = 90_000): Promise<void> {
  const argv = kubectl("-n", NAMESPACE, "get", `deployment/${service}`, "-o", "jsonpath={.spec.replicas}");
  printCommand(argv, `until its autoscaler asks for ${min} or more`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const out = await $({ nothrow: true, quiet: true, verbose: false })`${argv}`;
    const replicas = Number.parseInt(out.stdout.trim(), 10);
    if (out.exitCode !== 0 || !Number.isInteger(replicas) || replicas >= min) return;
    if (Date.now() > deadline) {
      console.log(
        chalk.yellow(
          `deployment/${service} still asks for ${replicas} replica(s) after ${timeoutMs / 1000} s: is its autoscaler working? kubectl -n ${NAMESPACE} describe hpa ${service}`,
        ),
      );
      return;
    }
    await Bun.sleep(2_000);
  }
}
