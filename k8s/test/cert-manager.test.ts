/**
 * The cert-manager alternative (k8s/examples/cert-manager/issuer.yaml): strictly valid for the
 * fields it uses (checks/custom-resources.ts), a chain that produces every Secret k8s/ mounts with
 * the names and purposes `make up` would give them (checks/cert-manager.ts), and deliberately not
 * deployed by `kubectl apply -k k8s/` nor walked as part of k8s/.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { relative } from "node:path";
import { serviceNames } from "../../scripts/tls/pki.ts";
import { CERT_MANAGER_EXAMPLE, checkCertManagerExample, mountedTlsSecrets } from "./checks/cert-manager.ts";
import type { Certificate } from "./checks/custom-resources.ts";
import { deployedFiles } from "./checks/cross-checks.ts";
import {
  formatProblem,
  loadManifests,
  manifestFiles,
  parseManifests,
  REPO_ROOT,
  withEdit,
} from "./checks/manifests.ts";
import { StrictValidator } from "./checks/strict-schema.ts";

const file = relative(REPO_ROOT, CERT_MANAGER_EXAMPLE);
const example = parseManifests(readFileSync(CERT_MANAGER_EXAMPLE, "utf8"), file);
const deployed = loadManifests();
const certificates = example
  .filter((m) => m.object.kind === "Certificate")
  .map((m) => m.object as unknown as Certificate);

describe("k8s/examples/cert-manager/issuer.yaml", () => {
  test("is cert-manager.io/v1 objects only, each valid for the fields it uses", async () => {
    expect(new Set(example.map((m) => m.object.apiVersion))).toEqual(new Set(["cert-manager.io/v1"]));
    expect(example.map((m) => m.object.kind)).toEqual([
      "Issuer",
      "Certificate",
      "Issuer",
      "Certificate",
      "Certificate",
      "Certificate",
      "Certificate",
      "Certificate",
    ]);
    const { problems, notes } = await new StrictValidator(example).validate(example);
    expect({ problems: problems.map(formatProblem), notes }).toEqual({ problems: [], notes: [] });
  });

  test("issues every Secret the Deployments mount, from the CA make up would use, with make up's names and purposes", () => {
    expect(checkCertManagerExample(example, deployed).map(formatProblem)).toEqual([]);
    const mounted = [...mountedTlsSecrets(deployed)].sort();
    expect(mounted).toEqual([
      "portico-edge-tls",
      "portico-gateway-client-tls",
      "portico-otel-collector-tls",
      "portico-rpcapp-tls",
      "portico-webapp-tls",
    ]);
    expect(
      certificates
        .filter((c) => !c.spec.isCA)
        .map((c) => c.spec.secretName)
        .sort(),
    ).toEqual(mounted);
    // Each service's certificate carries exactly the names serviceNames() gives, which the gateway verifies.
    for (const service of ["webapp", "rpcapp"]) {
      const cert = certificates.find((c) => c.spec.secretName === `portico-${service}-tls`)!;
      expect({ service, dnsNames: cert.spec.dnsNames }).toEqual({
        service,
        dnsNames: serviceNames(service, "portico"),
      });
    }
  });

  test("is not deployed by kubectl apply -k k8s/, nor read as part of k8s/", () => {
    expect(manifestFiles()).not.toContain(CERT_MANAGER_EXAMPLE);
    expect(deployedFiles().has(CERT_MANAGER_EXAMPLE)).toBe(false);
    expect(deployed.some((m) => String(m.object.apiVersion).startsWith("cert-manager.io/"))).toBe(false);
  });
});

describe("an edit that breaks the example fails with its line", () => {
  const files = [CERT_MANAGER_EXAMPLE];
  const cases = [
    {
      what: "a service certificate without the name the gateway verifies",
      from: "    - webapp-headless\n",
      to: "",
      expected: "Certificate/portico-webapp spec.dnsNames: lacks webapp-headless (the names its peers verify)",
    },
    {
      what: "a service certificate that another service's name would pass",
      from: "    - rpcapp-headless\n",
      to: "    - rpcapp-headless\n    - webapp-headless\n",
      expected: "Certificate/portico-rpcapp spec.dnsNames: adds webapp-headless",
    },
    {
      what: "the gateway's client certificate usable as a server's",
      from: "usages: [digital signature, client auth]",
      to: "usages: [digital signature, client auth, server auth]",
      expected: 'Certificate/portico-gateway-client spec.usages: must include "client auth" and not "server auth"',
    },
    {
      what: "a certificate into a Secret nothing mounts",
      from: "secretName: portico-rpcapp-tls",
      to: "secretName: portico-rpc-tls",
      expected: "no Certificate writes portico-rpcapp-tls, which k8s/ mounts",
      // Reported on the Secret's absence: no object, so no line.
      unlocated: true,
    },
    {
      what: "a CA renewed with a new key",
      from: "    rotationPolicy: Never",
      to: "    rotationPolicy: Always",
      expected: "Certificate/portico-ca spec.privateKey.rotationPolicy: must be Never",
    },
    {
      what: "a certificate signed by the self-signed issuer instead of the CA",
      from: "  issuerRef:\n    name: portico-ca\n",
      to: "  issuerRef:\n    name: portico-selfsigned\n",
      expected: "Certificate/portico-edge spec.issuerRef: must be the Issuer that signs with portico-tls-ca",
    },
  ];
  test.each(cases)("$what", (gap) => {
    const { from, to, expected } = gap;
    const { manifests: edited, line } = withEdit(file, from, to, files);
    const problems = checkCertManagerExample(edited, deployed).map(formatProblem);
    expect(problems).toContainEqual(expect.stringContaining(expected));
    // Reported on the edited object, at or above the edited line (but for a missing object).
    const reported = problems.find((p) => p.includes(expected))!;
    const at = /:(\d+): /.exec(reported)?.[1];
    if ("unlocated" in gap) expect(at).toBeUndefined();
    else expect(Number(at)).toBeLessThanOrEqual(line + 1);
  });

  test.each([
    {
      what: "a misspelt dnsNames (cert-manager would issue without the names)",
      from: "  dnsNames:\n    - localhost\n    - webapp",
      to: "  dnsName:\n    - localhost\n    - webapp",
      field: "spec.dnsName: unknown field",
    },
    {
      what: "a usage spelt as in Go, not as cert-manager takes it",
      from: "usages: [digital signature, server auth]",
      to: "usages: [digital signature, serverAuth]",
      field: "spec.usages[1]:",
    },
    {
      what: "a duration in days (Go durations have none)",
      from: "duration: 2160h # 90 days",
      to: "duration: 90d",
      field: "spec.duration:",
    },
    {
      what: "a misspelt issuer kind",
      from: "  selfSigned: {}",
      to: "  selfsigned: {}",
      field: "spec.selfsigned: unknown field",
    },
  ])("the schema rejects $what", async ({ from, to, field }) => {
    const { manifests: edited, line } = withEdit(file, from, to, files);
    const { problems } = await new StrictValidator(edited).validate(edited);
    expect(problems.map(formatProblem)).toContainEqual(
      expect.stringMatching(new RegExp(`^${file}:${line}: .*${field.replace(/[.[\]]/g, "\\$&")}`)),
    );
  });
});
