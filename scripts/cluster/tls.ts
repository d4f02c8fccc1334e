/**
 * The cluster's TLS Secrets, in cert-manager's layout (type `kubernetes.io/tls`, keys `tls.crt`,
 * `tls.key`, `ca.crt`): one per identity of scripts/tls/pki.ts, and one for the OpenTelemetry
 * Collector (which `make dev` does not run), issued by a CA kept in a Secret of the same layout. `make up` creates each one the namespace does not have yet and leaves existing
 * ones alone, as cluster/secrets.ts does for the passwords: Secrets that cert-manager manages
 * (k8s/examples/cert-manager/issuer.yaml) are never touched, and a certificate renewed in place is
 * taken by the pods without a restart (docs/deployment.md, "TLS").
 *
 * A missing certificate is issued by the CA in `portico-tls-ca` when that Secret exists (made by an
 * earlier `make up`, or by cert-manager's CA Certificate of the same name), so it is trusted by the
 * pods that already run; when no certificate exists yet, a new self-signed CA is made with them.
 * Keys go to kubectl on its standard input, never on a command line or into a file.
 */
import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import { stringify } from "yaml";
import { $ } from "zx";
import { CommandFailed, printCommand, run, ScriptError } from "../cli.ts";
import {
  type CertificateAuthority,
  createCa,
  type IssuedPem,
  issue,
  type LeafOptions,
  loadCa,
  localIdentities,
} from "../tls/pki.ts";
import { kubectl, NAMESPACE } from "./minikube.ts";

/** Each certificate Secret k8s/ mounts, and the identity it holds (scripts/tls/pki.ts's, or `clusterIdentities`' own for the collector). */
export const TLS_SECRETS = {
  /** The gateway's HTTPS listener (routes.yaml `tls`). */
  "portico-edge-tls": "edge",
  /** The gateway's client certificate towards webapp and rpcapp, and the CA it trusts them by. */
  "portico-gateway-client-tls": "gateway-client",
  /** webapp's HTTPS port; its ca.crt is the CA a client certificate must come from. */
  "portico-webapp-tls": "webapp",
  /** rpcapp's gRPC port, the same way. */
  "portico-rpcapp-tls": "rpcapp",
  /** The OpenTelemetry Collector's OTLP receivers, which the three services send spans to. */
  "portico-otel-collector-tls": "otel-collector",
} as const satisfies Record<string, string>;

/** The collector's Service (k8s/monitoring/otel-collector.yaml), the name the services reach it by. */
export const COLLECTOR_SERVICE = "otel-collector";

export type TlsSecretName = keyof typeof TLS_SECRETS;

/** The CA that signs them: never mounted in a pod (its key signs). */
export const TLS_CA_SECRET = "portico-tls-ca";

/** The keys of every one of them (cert-manager writes the same three). */
export const TLS_SECRET_KEYS = ["tls.crt", "tls.key", "ca.crt"] as const;

type Env = Record<string, string | undefined>;

/** A ClusterIP Service's names inside the cluster: short, with its namespace, and fully qualified. */
export function serviceDnsNames(service: string, namespace = NAMESPACE): string[] {
  return [
    service,
    `${service}.${namespace}`,
    `${service}.${namespace}.svc`,
    `${service}.${namespace}.svc.cluster.local`,
  ];
}

/** The gateway Service's names inside the cluster, for clients that reach it there over HTTPS. */
export function gatewayServiceNames(namespace = NAMESPACE): string[] {
  return serviceDnsNames("gateway", namespace);
}

/**
 * What each Secret's certificate is issued for: the identities `make dev` uses, with the names of
 * `namespace` (webapp and rpcapp: their headless Service, which the gateway verifies); the edge
 * certificate also carries the gateway Service's names, `edgeHosts` (DNS) and `edgeIps` (the
 * address `minikube service` prints), so `curl --cacert` accepts it there. The collector's, which
 * `make dev` has no use for (it runs no collector), carries its Service's names only.
 */
export function clusterIdentities(
  opts: { namespace?: string; edgeHosts?: readonly string[]; edgeIps?: readonly string[] } = {},
): Record<TlsSecretName, LeafOptions> {
  const namespace = opts.namespace ?? NAMESPACE;
  const ids = localIdentities({ namespace, edgeHosts: [...gatewayServiceNames(namespace), ...(opts.edgeHosts ?? [])] });
  const edge = ids.edge!;
  const out = {} as Record<TlsSecretName, LeafOptions>;
  for (const [secret, identity] of Object.entries(TLS_SECRETS) as [TlsSecretName, string][])
    out[secret] =
      identity === "edge"
        ? { ...edge, ipAddresses: [...(edge.ipAddresses ?? []), ...(opts.edgeIps ?? [])] }
        : identity === "otel-collector"
          ? { commonName: COLLECTOR_SERVICE, dnsNames: serviceDnsNames(COLLECTOR_SERVICE, namespace), usage: "server" }
          : ids[identity]!;
  return out;
}

/** The Secret object, as cert-manager writes one: the leaf (or the CA's own certificate), its key, and the CA. */
export function tlsSecretManifest(name: string, pem: IssuedPem, caCert: string): Record<string, unknown> {
  const data: Record<(typeof TLS_SECRET_KEYS)[number], string> = {
    "tls.crt": pem.cert,
    "tls.key": pem.key,
    "ca.crt": caCert,
  };
  return {
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name, namespace: NAMESPACE, labels: { "app.kubernetes.io/part-of": "portico" } },
    type: "kubernetes.io/tls",
    data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString("base64")])),
  };
}

/** Certificates for `names`, signed by `ca`, as Secret objects. */
export async function issueTlsSecrets(
  ca: CertificateAuthority,
  names: readonly TlsSecretName[],
  identities: Record<TlsSecretName, LeafOptions>,
): Promise<Record<string, unknown>[]> {
  const out: Record<string, unknown>[] = [];
  for (const name of names) out.push(tlsSecretManifest(name, await issue(ca, identities[name]), ca.cert));
  return out;
}

/** `kubectl apply -f -` with `text` on its standard input: the command is printed, the text never. */
async function applyStdin(text: string): Promise<void> {
  const argv = kubectl("apply", "-f", "-");
  printCommand(argv, "the Secrets on standard input");
  const out = await $({ input: text, nothrow: true, quiet: true, verbose: false })`${argv}`;
  if (out.exitCode !== 0) throw new CommandFailed(argv, out);
}

function decoded(data: Record<string, string> | undefined, key: string): string | undefined {
  const value = data?.[key];
  return value ? Buffer.from(value, "base64").toString("utf8") : undefined;
}

/** The CA in `portico-tls-ca`, or undefined when the Secret does not exist. */
async function existingCa(): Promise<CertificateAuthority | undefined> {
  const out = await run(kubectl("-n", NAMESPACE, "get", "secret", TLS_CA_SECRET, "-o", "json"), { nothrow: true });
  if (out.exitCode !== 0) return undefined;
  const data = (JSON.parse(out.stdout) as { data?: Record<string, string> }).data;
  const cert = decoded(data, "tls.crt");
  const key = decoded(data, "tls.key");
  if (!cert || !key) throw new ScriptError(`Secret ${TLS_CA_SECRET} has no tls.crt and tls.key to sign with`);
  try {
    return await loadCa(cert, key);
  } catch (err) {
    throw new ScriptError(`Secret ${TLS_CA_SECRET} does not hold a usable CA: ${(err as Error).message}`);
  }
}

/** Whether the CA certificate in a kept Secret (its ca.crt) is `ca`. */
async function trustsCa(name: TlsSecretName, ca: CertificateAuthority): Promise<boolean> {
  const out = await run(kubectl("-n", NAMESPACE, "get", "secret", name, "-o", "jsonpath={.data.ca\\.crt}"), {
    nothrow: true,
  });
  const pem = out.exitCode === 0 ? Buffer.from(out.stdout.trim(), "base64").toString("utf8") : "";
  try {
    return new X509Certificate(pem).fingerprint256 === new X509Certificate(ca.cert).fingerprint256;
  } catch {
    return false;
  }
}

/** The addresses `minikube ip` prints (the host part of the NodePort URLs on Linux); none when it fails. */
async function minikubeIps(): Promise<string[]> {
  const out = await run(["minikube", "ip"], { nothrow: true });
  return out.exitCode === 0 ? out.stdout.split(/\s+/).filter((a) => isIP(a) !== 0) : [];
}

/**
 * Creates each missing TLS Secret in the namespace (which must exist), leaving existing ones alone.
 * EDGE_HOSTS (comma-separated DNS names) are added to a new edge certificate, as for `make certs`.
 */
export async function ensureTlsSecrets(env: Env = process.env): Promise<{ created: string[]; kept: string[] }> {
  const missing: TlsSecretName[] = [];
  const kept: TlsSecretName[] = [];
  for (const name of Object.keys(TLS_SECRETS) as TlsSecretName[]) {
    const exists = await run(kubectl("-n", NAMESPACE, "get", "secret", name, "-o", "name"), { nothrow: true });
    (exists.exitCode === 0 ? kept : missing).push(name);
  }
  if (missing.length === 0) return { created: [], kept };

  let ca = await existingCa();
  const created: string[] = [];
  if (ca) {
    // A certificate from another CA would be refused by the pods that trust this one, and the other way round.
    const strangers: TlsSecretName[] = [];
    for (const name of kept) if (!(await trustsCa(name, ca))) strangers.push(name);
    if (strangers.length > 0)
      throw new ScriptError(
        `${strangers.join(", ")} ${strangers.length === 1 ? "does" : "do"} not name the CA in ${TLS_CA_SECRET} as ca.crt, so ${missing.join(", ")} cannot be issued for the same trust.\n` +
          `Issue ${missing.length === 1 ? "it" : "them"} with the CA that signed the others (cert-manager: k8s/examples/cert-manager/issuer.yaml), or start afresh:\n` +
          `  kubectl -n ${NAMESPACE} delete secret ${[TLS_CA_SECRET, ...kept].join(" ")}\n  make up`,
      );
  } else if (kept.length > 0) {
    throw new ScriptError(
      `${kept.join(", ")} ${kept.length === 1 ? "exists" : "exist"} but ${TLS_CA_SECRET} does not: ${missing.join(", ")} cannot be issued by the CA the pods already trust.\n` +
        `Issue ${missing.length === 1 ? "it" : "them"} with that CA (cert-manager: k8s/examples/cert-manager/issuer.yaml), or delete the others and run make up again for a new CA:\n` +
        `  kubectl -n ${NAMESPACE} delete secret ${kept.join(" ")}`,
    );
  } else {
    ca = await createCa(`Portico cluster CA (namespace ${NAMESPACE})`);
    created.push(TLS_CA_SECRET);
  }

  const edgeHosts = (env.EDGE_HOSTS ?? "")
    .split(",")
    .map((h) => h.trim())
    .filter(Boolean);
  const edgeIps = missing.includes("portico-edge-tls") ? await minikubeIps() : [];
  const identities = clusterIdentities({ edgeHosts, edgeIps });
  const objects = [
    ...(created.includes(TLS_CA_SECRET) ? [tlsSecretManifest(TLS_CA_SECRET, ca, ca.cert)] : []),
    ...(await issueTlsSecrets(ca, missing, identities)),
  ];
  // Every certificate issued first, then one apply: a failure to issue applies nothing.
  await applyStdin(objects.map((o) => stringify(o)).join("---\n"));
  created.push(...missing);
  return { created, kept };
}
