/**
 * The cluster's TLS Secrets, in cert-manager's layout (type `kubernetes.io/tls`, keys `tls.crt`,
 * `tls.key`, `ca.crt`): one per identity of scripts/tls/pki.ts, and one for the OpenTelemetry
 * Collector (which `make dev` does not run), issued by a CA kept in a Secret of the same layout.
 * `make up` creates each one the namespace does not have yet, renews in place those it made that
 * end within RENEW_BEFORE_DAYS, and leaves the others alone: Secrets that cert-manager manages
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
import ipaddr from "ipaddr.js";
import { stringify } from "yaml";
import { $ } from "zx";
import { CommandFailed, printCommand, run, ScriptError } from "../cli.ts";
import {
  type CertificateAuthority,
  createCa,
  DAY_MS,
  type IssuedPem,
  issue,
  type LeafOptions,
  loadCa,
  localIdentities,
} from "../tls/pki.ts";
import { getSecret, kubectl, NAMESPACE } from "./minikube.ts";

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

/**
 * `make up` renews a certificate it issued once it ends within this many days: cert-manager's
 * `renewBefore` in k8s/examples/cert-manager/issuer.yaml, and well before PorticoCertificateExpiresSoon
 * (21 days, k8s/monitoring/prometheus.yaml) would fire.
 */
export const RENEW_BEFORE_DAYS = 30;

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
  const json = await getSecret(TLS_CA_SECRET, "-o", "json");
  if (json === undefined) return undefined;
  const data = (JSON.parse(json) as { data?: Record<string, string> }).data;
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

/** What `make up` reads of a Secret that exists: whether cert-manager manages it, and its certificate. */
interface ExistingSecret {
  managed: boolean;
  cert?: X509Certificate;
}

/** The Secret `name` as it is: "missing", or what can be read of it (nothing: it is left alone). */
async function readExisting(name: TlsSecretName): Promise<ExistingSecret | "missing" | undefined> {
  const json = await getSecret(name, "-o", "json");
  if (json === undefined) return "missing";
  try {
    const secret = JSON.parse(json) as {
      metadata?: { annotations?: Record<string, string> };
      data?: Record<string, string>;
    };
    const managed = Object.keys(secret.metadata?.annotations ?? {}).some((k) => k.startsWith("cert-manager.io/"));
    const pem = decoded(secret.data, "tls.crt");
    return { managed, ...(pem ? { cert: new X509Certificate(pem) } : {}) };
  } catch {
    return undefined;
  }
}

/**
 * The identity a renewed certificate is issued for: `identity`, plus every name the one it
 * replaces carried (an edge certificate issued with EDGE_HOSTS keeps them on a run without).
 */
function withNamesOf(old: X509Certificate | undefined, identity: LeafOptions): LeafOptions {
  if (!old?.subjectAltName) return identity;
  const dns = new Set(identity.dnsNames ?? []);
  const ips = new Set((identity.ipAddresses ?? []).map((a) => ipaddr.parse(a).toString()));
  for (const entry of old.subjectAltName.split(", ")) {
    if (entry.startsWith("DNS:")) dns.add(entry.slice(4));
    else if (entry.startsWith("IP Address:") && ipaddr.isValid(entry.slice(11)))
      ips.add(ipaddr.parse(entry.slice(11)).toString());
  }
  return { ...identity, dnsNames: [...dns], ipAddresses: [...ips] };
}

/** The addresses `minikube ip` prints (the host part of the NodePort URLs on Linux); none when it fails. */
async function minikubeIps(): Promise<string[]> {
  const out = await run(["minikube", "ip"], { nothrow: true });
  return out.exitCode === 0 ? out.stdout.split(/\s+/).filter((a) => isIP(a) !== 0) : [];
}

/**
 * Creates each missing TLS Secret in the namespace (which must exist), and renews in place each one
 * it issued that ends within RENEW_BEFORE_DAYS, from the same CA (the pods take it without a
 * restart); others are left alone, cert-manager's always. EDGE_HOSTS (comma-separated DNS names)
 * are added to a new edge certificate, as for `make certs`; a renewed one keeps the names it had.
 *
 * A missing certificate that cannot be issued for the CA the pods trust stops make up. A renewal
 * that cannot be made is a warning: the cluster works until the certificate ends, and
 * PorticoCertificateExpiresSoon says so in time.
 */
export async function ensureTlsSecrets(
  env: Env = process.env,
): Promise<{ created: string[]; renewed: string[]; kept: string[]; warnings: string[] }> {
  const missing: TlsSecretName[] = [];
  const kept: TlsSecretName[] = [];
  /** Existing certificates make up issued that end soon, with the certificate each holds now. */
  const due = new Map<TlsSecretName, X509Certificate>();
  const warnings: string[] = [];
  for (const name of Object.keys(TLS_SECRETS) as TlsSecretName[]) {
    const existing = await readExisting(name);
    if (existing === "missing") {
      missing.push(name);
      continue;
    }
    kept.push(name);
    if (existing?.cert && !existing.managed && endsWithin(existing.cert, RENEW_BEFORE_DAYS))
      due.set(name, existing.cert);
  }
  if (missing.length === 0 && due.size === 0) return { created: [], renewed: [], kept, warnings };

  const created: string[] = [];
  let ca: CertificateAuthority | undefined;
  try {
    ca = await existingCa();
  } catch (err) {
    if (missing.length > 0) throw err;
    warnings.push((err as Error).message);
  }
  if (ca) {
    // A certificate from another CA would be refused by the pods that trust this one, and the other way round.
    const strangers: TlsSecretName[] = [];
    for (const name of kept) if (!(await trustsCa(name, ca))) strangers.push(name);
    if (strangers.length > 0 && missing.length > 0)
      throw new ScriptError(
        `${strangers.join(", ")} ${strangers.length === 1 ? "does" : "do"} not name the CA in ${TLS_CA_SECRET} as ca.crt, so ${missing.join(", ")} cannot be issued for the same trust.\n` +
          `Issue ${missing.length === 1 ? "it" : "them"} with the CA that signed the others (cert-manager: k8s/examples/cert-manager/issuer.yaml), or start afresh:\n` +
          `  kubectl -n ${NAMESPACE} delete secret ${[TLS_CA_SECRET, ...kept].join(" ")}\n  make up`,
      );
    const unrenewable = strangers.filter((n) => due.has(n));
    if (unrenewable.length > 0) warnings.push(notRenewed(unrenewable, due, `the CA in ${TLS_CA_SECRET} did not sign`));
    for (const name of unrenewable) due.delete(name);
    const caCert = new X509Certificate(ca.cert);
    if (due.size > 0 && endsWithin(caCert, RENEW_BEFORE_DAYS))
      warnings.push(
        `the CA in ${TLS_CA_SECRET} ends ${caCert.validTo}: make up renews the certificates it signed, not the CA itself (docs/deployment.md, "TLS")`,
      );
    // A certificate that already ends with its CA cannot be renewed past it (pki.ts ends no leaf
    // after its CA): issuing it again would only change its key, on every run until the CA is new.
    for (const [name, cert] of due) if (Date.parse(cert.validTo) >= Date.parse(caCert.validTo)) due.delete(name);
  } else if (kept.length > 0) {
    if (missing.length > 0)
      throw new ScriptError(
        `${kept.join(", ")} ${kept.length === 1 ? "exists" : "exist"} but ${TLS_CA_SECRET} does not: ${missing.join(", ")} cannot be issued by the CA the pods already trust.\n` +
          `Issue ${missing.length === 1 ? "it" : "them"} with that CA (cert-manager: k8s/examples/cert-manager/issuer.yaml), or delete the others and run make up again for a new CA:\n` +
          `  kubectl -n ${NAMESPACE} delete secret ${kept.join(" ")}`,
      );
    if (due.size > 0) warnings.push(notRenewed([...due.keys()], due, `no usable CA in ${TLS_CA_SECRET} can sign`));
    due.clear();
  } else {
    ca = await createCa(`Portico cluster CA (namespace ${NAMESPACE})`);
    created.push(TLS_CA_SECRET);
  }
  if (!ca || (missing.length === 0 && due.size === 0)) return { created: [], renewed: [], kept, warnings };

  const edgeHosts = (env.EDGE_HOSTS ?? "")
    .split(",")
    .map((h) => h.trim())
    .filter(Boolean);
  const edgeIps = missing.includes("portico-edge-tls") ? await minikubeIps() : [];
  const identities = clusterIdentities({ edgeHosts, edgeIps });
  const renewed = [...due.keys()];
  const objects = [
    ...(created.includes(TLS_CA_SECRET) ? [tlsSecretManifest(TLS_CA_SECRET, ca, ca.cert)] : []),
    ...(await issueTlsSecrets(ca, missing, identities)),
  ];
  for (const name of renewed)
    objects.push(tlsSecretManifest(name, await issue(ca, withNamesOf(due.get(name), identities[name])), ca.cert));
  // Every certificate issued first, then one apply: a failure to issue applies nothing.
  await applyStdin(objects.map((o) => stringify(o)).join("---\n"));
  created.push(...missing);
  return { created, renewed, kept: kept.filter((n) => !due.has(n)), warnings };
}

function endsWithin(cert: X509Certificate, days: number): boolean {
  return Date.parse(cert.validTo) - Date.now() < days * DAY_MS;
}

/** The warning for certificates due that this run cannot renew, and `why`. */
function notRenewed(names: TlsSecretName[], due: Map<TlsSecretName, X509Certificate>, why: string): string {
  const ends = names.map((n) => `${n} (ends ${new Date(due.get(n)!.validTo).toISOString().slice(0, 10)})`);
  return `not renewed, as ${why} ${names.length === 1 ? "it" : "them"}: ${ends.join(", ")}; renew ${names.length === 1 ? "it" : "them"} by hand (docs/deployment.md, "TLS")`;
}
