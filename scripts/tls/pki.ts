/**
 * A private certificate authority and the certificates Portico's processes present, generated with
 * @peculiar/x509 on WebCrypto (ECDSA P-256, SHA-256): `TLS=1 make dev` and `make certs` write them
 * to `.data/tls/`, the tests to temporary folders, and `make up` turns them into the cluster's
 * Secrets when cert-manager does not provide them.
 *
 * What is issued, and to whom (names are the ones each peer verifies):
 * - `edge`: the gateway's public listener, for localhost / 127.0.0.1 / ::1 (and any EDGE_HOSTS);
 * - `gateway-client`: the gateway's client certificate towards webapp and rpcapp;
 * - `webapp`, `rpcapp`: each service's server certificate, for localhost / 127.0.0.1 and the
 *   headless Service names the gateway resolves in the cluster (`<name>-headless`, with the
 *   namespace and `svc.cluster.local` forms).
 */
import "reflect-metadata";
import { createPrivateKey, X509Certificate as NodeX509 } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as x509 from "@peculiar/x509";

const ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
export const DAY_MS = 86_400_000;

export interface IssuedPem {
  cert: string;
  key: string;
}

export interface CertificateAuthority extends IssuedPem {
  /** Signs leaves; only in memory (and in ca.key for a local CA). */
  keys: CryptoKeyPair;
  certificate: x509.X509Certificate;
}

async function exportKey(key: CryptoKey): Promise<string> {
  return x509.PemConverter.encode(await crypto.subtle.exportKey("pkcs8", key), "PRIVATE KEY");
}

function serial(): string {
  // Positive (top bit clear), 16 random bytes: unique without a counter.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[0]! &= 0x7f;
  return Buffer.from(bytes).toString("hex");
}

/** A new self-signed CA, valid `validDays` (backdated an hour for clock skew). */
export async function createCa(commonName = "Portico local CA", validDays = 365): Promise<CertificateAuthority> {
  const keys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const notBefore = new Date(Date.now() - 3_600_000);
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: `CN=${commonName}`,
    notBefore,
    notAfter: new Date(notBefore.getTime() + validDays * DAY_MS),
    keys,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { keys, certificate, cert: certificate.toString("pem"), key: await exportKey(keys.privateKey) };
}

/** Loads a CA written by `writeCa` (cert and PKCS#8 key PEM). */
export async function loadCa(certPem: string, keyPem: string): Promise<CertificateAuthority> {
  const certificate = new x509.X509Certificate(certPem);
  const privateKey = await crypto.subtle.importKey("pkcs8", x509.PemConverter.decodeFirst(keyPem), ALGORITHM, true, [
    "sign",
  ]);
  const publicKey = await certificate.publicKey.export(ALGORITHM, ["verify"]);
  return { keys: { privateKey, publicKey }, certificate, cert: certPem, key: keyPem };
}

export interface LeafOptions {
  commonName: string;
  dnsNames?: readonly string[];
  ipAddresses?: readonly string[];
  /** `server`: serverAuth; `client`: clientAuth; `both`: either. */
  usage: "server" | "client" | "both";
  validDays?: number;
  /** When validity starts; default an hour ago (clock skew). Tests date certificates with it. */
  validFrom?: Date;
}

/** A certificate for `opts`, signed by `ca`. */
export async function issue(ca: CertificateAuthority, opts: LeafOptions): Promise<IssuedPem> {
  const keys = await crypto.subtle.generateKey(ALGORITHM, true, ["sign", "verify"]);
  const notBefore = opts.validFrom ?? new Date(Date.now() - 3_600_000);
  const purposes = {
    server: [x509.ExtendedKeyUsage.serverAuth],
    client: [x509.ExtendedKeyUsage.clientAuth],
    both: [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth],
  }[opts.usage];
  const names = [
    ...(opts.dnsNames ?? []).map((value) => ({ type: "dns" as const, value })),
    ...(opts.ipAddresses ?? []).map((value) => ({ type: "ip" as const, value })),
  ];
  const certificate = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${opts.commonName}`,
    issuer: ca.certificate.subject,
    notBefore,
    // Never past the CA's own end: a chain that breaks earlier than the leaf says would leave the
    // leaf's expiry metric, and the renewal that reads it, telling a month too late.
    notAfter: new Date(
      Math.min(notBefore.getTime() + (opts.validDays ?? 90) * DAY_MS, ca.certificate.notAfter.getTime()),
    ),
    publicKey: keys.publicKey,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(purposes, false),
      ...(names.length > 0 ? [new x509.SubjectAlternativeNameExtension(names, false)] : []),
      await x509.AuthorityKeyIdentifierExtension.create(ca.certificate, false),
    ],
  });
  return { cert: certificate.toString("pem"), key: await exportKey(keys.privateKey) };
}

/** The names a service's certificate carries: loopback for `make dev`, its headless Service in the cluster. */
export function serviceNames(service: string, namespace = "portico"): string[] {
  const headless = `${service}-headless`;
  return [
    "localhost",
    headless,
    `${headless}.${namespace}`,
    `${headless}.${namespace}.svc`,
    `${headless}.${namespace}.svc.cluster.local`,
    // Each pod's own record under the headless Service (what the gateway resolves, then dials by IP
    // with this name as the expected server name).
    `*.${headless}.${namespace}.svc.cluster.local`,
  ];
}

export const LOOPBACK_IPS = ["127.0.0.1", "::1"] as const;

/** The identities `make dev` and the cluster use, by file name. */
export function localIdentities(
  opts: { edgeHosts?: readonly string[]; namespace?: string } = {},
): Record<string, LeafOptions> {
  return {
    edge: {
      commonName: "portico gateway",
      dnsNames: ["localhost", ...(opts.edgeHosts ?? [])],
      ipAddresses: [...LOOPBACK_IPS],
      usage: "server",
    },
    "gateway-client": { commonName: "gateway", usage: "client" },
    webapp: {
      commonName: "webapp",
      dnsNames: serviceNames("webapp", opts.namespace),
      ipAddresses: [...LOOPBACK_IPS],
      usage: "server",
    },
    rpcapp: {
      commonName: "rpcapp",
      dnsNames: serviceNames("rpcapp", opts.namespace),
      ipAddresses: [...LOOPBACK_IPS],
      usage: "server",
    },
  };
}

export interface LocalPki {
  dir: string;
  /** ca.crt: what clients (curl --cacert) and the services' client-certificate check trust. */
  caFile: string;
  /** <name>.crt / <name>.key for each identity. */
  certFile: (name: string) => string;
  keyFile: (name: string) => string;
  /** The identities written (re)issued by this call. */
  issued: string[];
}

function writePrivate(path: string, text: string): void {
  writeFileSync(path, text, { mode: 0o600 });
  chmodSync(path, 0o600);
}

/** An IP address as @peculiar/x509 prints it (IPv6 compressed), so "::1" and "0:0:0:0:0:0:0:1" compare equal. */
function canonicalIp(ip: string): string {
  return ip.includes(":") ? new URL(`http://[${ip}]/`).hostname.slice(1, -1) : ip;
}

/** The requested names `cert` lacks: DNS names (case-insensitive) and IP addresses. */
function missingNames(cert: x509.X509Certificate, opts: LeafOptions): string[] {
  const names = cert.getExtension(x509.SubjectAlternativeNameExtension)?.names.items ?? [];
  const dns = new Set(names.filter((n) => n.type === "dns").map((n) => n.value.toLowerCase()));
  const ips = new Set(names.filter((n) => n.type === "ip").map((n) => canonicalIp(n.value)));
  return [
    ...(opts.dnsNames ?? []).filter((name) => !dns.has(name.toLowerCase())),
    ...(opts.ipAddresses ?? []).filter((ip) => !ips.has(canonicalIp(ip))),
  ];
}

/**
 * Whether `certFile` can be kept: it exists, was issued by `ca`, is valid for at least `days` more
 * days, carries every name `opts` asks for (EDGE_HOSTS may have grown since it was issued), and
 * `keyFile` is its key. An interrupted run writes the key before the certificate, and leaves a pair
 * that does not match — which every service refuses to start with.
 */
function stillGood(certFile: string, keyFile: string, ca: NodeX509, days: number, opts: LeafOptions): boolean {
  if (!existsSync(certFile) || !existsSync(keyFile)) return false;
  try {
    const pem = readFileSync(certFile);
    const cert = new NodeX509(pem);
    return (
      cert.checkIssued(ca) &&
      cert.verify(ca.publicKey) &&
      Date.parse(cert.validTo) - Date.now() > days * DAY_MS &&
      missingNames(new x509.X509Certificate(pem), opts).length === 0 &&
      cert.checkPrivateKey(createPrivateKey(readFileSync(keyFile)))
    );
  } catch {
    return false;
  }
}

/**
 * Makes sure `dir` holds a CA and a certificate for each identity, issuing only what is missing,
 * not from this CA, within `renewDays` of expiry, short of a name the identity asks for, or not the
 * pair of its key file. Keys are written 0600, the folder 0700.
 */
export async function ensureLocalPki(
  dir: string,
  identities: Record<string, LeafOptions> = localIdentities(),
  renewDays = 7,
): Promise<LocalPki> {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caFile = join(dir, "ca.crt");
  const caKeyFile = join(dir, "ca.key");
  let ca: CertificateAuthority;
  const issued: string[] = [];
  const caUsable =
    existsSync(caFile) &&
    existsSync(caKeyFile) &&
    Date.parse(new NodeX509(readFileSync(caFile)).validTo) - Date.now() > renewDays * DAY_MS;
  if (caUsable) {
    ca = await loadCa(readFileSync(caFile, "utf8"), readFileSync(caKeyFile, "utf8"));
  } else {
    ca = await createCa();
    writePrivate(caKeyFile, ca.key);
    writeFileSync(caFile, ca.cert);
    issued.push("ca");
  }
  const caCert = new NodeX509(ca.cert);
  const certFile = (name: string) => join(dir, `${name}.crt`);
  const keyFile = (name: string) => join(dir, `${name}.key`);
  for (const [name, opts] of Object.entries(identities)) {
    if (stillGood(certFile(name), keyFile(name), caCert, renewDays, opts)) continue;
    const leaf = await issue(ca, opts);
    // Key first: a watcher that sees the new certificate with the old key waits for the pair.
    writePrivate(keyFile(name), leaf.key);
    writeFileSync(certFile(name), leaf.cert);
    issued.push(name);
  }
  return { dir, caFile, certFile, keyFile, issued };
}
