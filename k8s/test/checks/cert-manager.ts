/**
 * k8s/examples/cert-manager/issuer.yaml against what `make up` issues (scripts/cluster/tls.ts) and
 * what k8s/ mounts: a chain that ends in the CA Secret `make up` would use, a Certificate for each
 * Secret the Deployments mount, each with the names and the one purpose (server or client) of its
 * identity. Its schema is checked by strict-schema.ts (custom-resources.ts).
 */
import { join } from "node:path";
import { clusterIdentities, TLS_CA_SECRET, TLS_SECRETS, type TlsSecretName } from "../../../scripts/cluster/tls.ts";
import type { Certificate, Issuer } from "./custom-resources.ts";
import { workloadsOf } from "./cross-checks.ts";
import { K8S_DIR, type Manifest, type Problem, problemAt } from "./manifests.ts";

export const CERT_MANAGER_EXAMPLE = join(K8S_DIR, "examples/cert-manager/issuer.yaml");

const PURPOSE = { server: "server auth", client: "client auth" } as const;

/** The TLS Secrets k8s/'s workloads mount (secret and projected volumes). */
export function mountedTlsSecrets(deployed: Manifest[]): Set<string> {
  const out = new Set<string>();
  for (const w of workloadsOf(deployed))
    for (const v of w.deployment.spec?.template.spec?.volumes ?? []) {
      const names = [v.secret?.secretName, ...(v.projected?.sources ?? []).map((s) => s.secret?.name)];
      for (const name of names) if (name && name in TLS_SECRETS) out.add(name);
    }
  return out;
}

/** Problems of the example (`example`'s manifests), given what k8s/ deploys (`deployed`). */
export function checkCertManagerExample(example: Manifest[], deployed: Manifest[]): Problem[] {
  const problems: Problem[] = [];
  const issuers = example.filter((m) => m.object.kind === "Issuer" || m.object.kind === "ClusterIssuer");
  const certificates = example.filter((m) => m.object.kind === "Certificate");
  const issuerOf = (c: Certificate) =>
    issuers.find(
      (m) => m.object.metadata?.name === c.spec.issuerRef.name && m.object.kind === (c.spec.issuerRef.kind ?? "Issuer"),
    );
  for (const m of example)
    if (m.object.metadata?.namespace !== undefined && m.object.metadata.namespace !== "portico")
      problems.push(problemAt(m, ["metadata", "namespace"], 'must be "portico", where the pods mount the Secrets'));

  // The CA: a Certificate with isCA, from a self-signed issuer, into the Secret make up would use.
  const ca = certificates.find((m) => (m.object as unknown as Certificate).spec.isCA);
  const caSpec = (ca?.object as unknown as Certificate | undefined)?.spec;
  if (!ca || !caSpec) {
    problems.push({ file: example[0]?.file ?? "", object: "", field: "", message: "no CA Certificate (isCA: true)" });
    return problems;
  }
  if (caSpec.secretName !== TLS_CA_SECRET)
    problems.push(
      problemAt(
        ca,
        ["spec", "secretName"],
        `must be ${TLS_CA_SECRET}, the CA \`make up\` issues missing certificates from`,
      ),
    );
  if (!(issuerOf(ca.object as unknown as Certificate)?.object as unknown as Issuer | undefined)?.spec.selfSigned)
    problems.push(problemAt(ca, ["spec", "issuerRef"], "must name a selfSigned Issuer in this file"));
  if (caSpec.privateKey?.rotationPolicy !== "Never")
    problems.push(
      problemAt(
        ca,
        ["spec", "privateKey", "rotationPolicy"],
        "must be Never: a renewed CA with a new key is not trusted by the certificates the old one signed",
      ),
    );
  const caIssuers = issuers.filter((m) => (m.object as unknown as Issuer).spec.ca?.secretName === caSpec.secretName);
  if (caIssuers.length === 0)
    problems.push(problemAt(ca, ["spec", "secretName"], "no Issuer signs with this CA (spec.ca.secretName)"));

  // One Certificate per Secret k8s/ mounts, from that CA, for its identity.
  const identities = clusterIdentities();
  const leaves = certificates.filter((m) => m !== ca);
  const bySecret = new Map(leaves.map((m) => [(m.object as unknown as Certificate).spec.secretName, m]));
  for (const secret of mountedTlsSecrets(deployed))
    if (!bySecret.has(secret))
      problems.push({
        file: ca.file,
        object: "",
        field: "",
        message: `no Certificate writes ${secret}, which k8s/ mounts`,
      });
  for (const m of leaves) {
    const { spec } = m.object as unknown as Certificate;
    if (!(spec.secretName in TLS_SECRETS)) {
      problems.push(
        problemAt(
          m,
          ["spec", "secretName"],
          `${spec.secretName} is not a Secret k8s/ mounts (${Object.keys(TLS_SECRETS).join(", ")})`,
        ),
      );
      continue;
    }
    const identity = identities[spec.secretName as TlsSecretName];
    if (!caIssuers.some((i) => i === issuerOf(m.object as unknown as Certificate)))
      problems.push(problemAt(m, ["spec", "issuerRef"], `must be the Issuer that signs with ${TLS_CA_SECRET}`));
    const missing = (identity.dnsNames ?? []).filter((n) => !(spec.dnsNames ?? []).includes(n));
    // The edge takes the public host names a person adds; a service certificate carries its own names only.
    const extra =
      identity.usage === "server" && TLS_SECRETS[spec.secretName as TlsSecretName] !== "edge"
        ? (spec.dnsNames ?? []).filter((n) => !(identity.dnsNames ?? []).includes(n))
        : [];
    if (missing.length > 0 || extra.length > 0)
      problems.push(
        problemAt(
          m,
          ["spec", "dnsNames"],
          [
            missing.length > 0 ? `lacks ${missing.join(", ")} (the names its peers verify)` : "",
            extra.length > 0 ? `adds ${extra.join(", ")}, which another service could then answer for` : "",
          ]
            .filter(Boolean)
            .join("; "),
        ),
      );
    const wanted = PURPOSE[identity.usage === "client" ? "client" : "server"];
    const other = PURPOSE[identity.usage === "client" ? "server" : "client"];
    if (!spec.usages?.includes(wanted) || spec.usages.includes(other))
      problems.push(
        problemAt(m, ["spec", "usages"], `must include "${wanted}" and not "${other}" (as make up issues it)`),
      );
    if (spec.isCA) problems.push(problemAt(m, ["spec", "isCA"], "a leaf certificate is no CA"));
  }
  return problems;
}
