/**
 * TLS for the gRPC port (TLS_CERT_FILE, TLS_KEY_FILE; mutual with TLS_CLIENT_CA_FILE), with the
 * certificate renewed without a restart.
 *
 * grpc-js can swap the certificate of a listening server: credentials built with
 * `experimental.createCertificateProviderServerCredentials` call `setSecureContext` on its TLS server
 * whenever their provider reports new files, so NEW handshakes get the new certificate while open
 * connections keep theirs (measured on Bun: both hold). grpc-js' own provider,
 * `FileWatcherCertificateProvider`, is not used: it hands over whatever the files hold, and a
 * certificate written before its key (a half-written renewal) makes `setSecureContext` fail with
 * KEY_VALUES_MISMATCH, upon which grpc-js drops EVERY new connection until the pair matches again,
 * logging an error at each poll. Here the files are read by lib/tls.ts's TlsFileWatcher, which only
 * passes on a complete, checked pair, and `MaterialProvider` hands that to grpc-js.
 *
 * The TLS 1.2 suites are the HTTPS listeners' (lib/tls-listener.ts `TLS12_CIPHERS`: forward secrecy
 * and AEAD only). grpc-js takes no cipher option but GRPC_SSL_CIPHER_SUITES, read once when it
 * loads; without either, its secure contexts use the runtime's `tls.DEFAULT_CIPHERS`, which on Bun
 * 1.4 accepts ECDHE-…-AES128-SHA and -AES256-SHA (CBC with SHA-1) from a TLS 1.2 client. So
 * `startRpcTls` sets `tls.DEFAULT_CIPHERS` for the process (rpcapp's only other TLS is the OTLP
 * exporter's, as a client, which these suites suit as well), unless GRPC_SSL_CIPHER_SUITES says.
 */
import * as grpc from "@grpc/grpc-js";
import tls from "node:tls";
import type { Registry } from "prom-client";
import type { Logger } from "../../lib/log.ts";
import { exportCertificates, serverCertificates, TLS12_CIPHERS } from "../../lib/tls-listener.ts";
import { readTlsMaterial, type ServiceTlsSettings, TlsFileWatcher, type TlsMaterial } from "../../lib/tls.ts";

type CertificateProvider = grpc.experimental.CertificateProvider;
type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener;
type CaListener = grpc.experimental.CaCertificateUpdateListener;

/**
 * A grpc-js certificate provider that serves checked material and nothing else: the identity (cert
 * and key) and, for mutual TLS, the CA that client certificates must be signed by.
 */
export class MaterialProvider implements CertificateProvider {
  readonly #identityListeners = new Set<IdentityListener>();
  readonly #caListeners = new Set<CaListener>();
  #material: TlsMaterial;

  constructor(material: TlsMaterial) {
    this.#material = material;
  }

  /** Hands `material` to every listener: grpc-js sets it on its TLS servers for the next handshakes. */
  update(material: TlsMaterial): void {
    this.#material = material;
    for (const listener of this.#identityListeners) listener(this.#identity());
    for (const listener of this.#caListeners) listener(this.#ca());
  }

  #identity() {
    return { certificate: Buffer.from(this.#material.cert), privateKey: Buffer.from(this.#material.key) };
  }

  #ca() {
    return this.#material.ca === undefined ? null : { caCertificate: Buffer.from(this.#material.ca) };
  }

  // grpc-js registers its listeners before its TLS server's own watcher and reads nothing back: an
  // answer given synchronously would be lost, and the server would refuse every connection. So the
  // current material is handed over on the next tick, as grpc-js' own provider does (before the
  // port accepts its first connection).
  addIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.add(listener);
    process.nextTick(() => this.#identityListeners.has(listener) && listener(this.#identity()));
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.delete(listener);
  }

  addCaCertificateListener(listener: CaListener): void {
    this.#caListeners.add(listener);
    process.nextTick(() => this.#caListeners.has(listener) && listener(this.#ca()));
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.#caListeners.delete(listener);
  }
}

export interface RpcTls {
  credentials: grpc.ServerCredentials;
  /** Whether clients must present a certificate signed by TLS_CLIENT_CA_FILE. */
  mutual: boolean;
  /** For the start-up line: who this server is, until when, and whether TLS is mutual. */
  summary(): { subject: string; notAfter: string; mutual: boolean };
  /** Stops watching the files. */
  stop(): void;
}

/**
 * Reads and checks the files (a TlsFileError naming the file stops the start), builds the gRPC
 * server credentials, and polls the files every `reloadIntervalMs` for a renewal.
 */
export function startRpcTls(settings: ServiceTlsSettings, opts: { log: Logger; registry?: Registry }): RpcTls {
  const { log } = opts;
  if (!process.env.GRPC_SSL_CIPHER_SUITES) tls.DEFAULT_CIPHERS = TLS12_CIPHERS;
  const first = readTlsMaterial(settings.paths);
  const provider = new MaterialProvider(first);
  let reloads = 0;

  const watcher = new TlsFileWatcher(
    settings.paths,
    {
      intervalMs: settings.reloadIntervalMs,
      onChange: (material) => {
        provider.update(material);
        reloads++;
        log.info(
          { tls: { subject: material.subject, notAfter: material.notAfter.toISOString() } },
          "tls certificate reloaded",
        );
      },
      // Once per bad version: the current certificate keeps serving and the next poll tries again.
      onError: (err) => log.warn({ err }, "tls files changed but cannot be used yet; the current certificate stays"),
    },
    first,
  ).start();
  // Labelled as the gateway's and webapp's are, so that one alert rule covers every certificate
  // (k8s/monitoring/prometheus.yaml, PorticoCertificateExpiresSoon).
  if (opts.registry)
    exportCertificates(opts.registry, () =>
      serverCertificates(watcher.current.notAfter, reloads, watcher.current.caNotAfter),
    );

  const mutual = settings.requireClientCert;
  // The provider serves the CA too only when client certificates are required: grpc-js then asks
  // for one (requestCert) and refuses a handshake without a valid one (rejectUnauthorized).
  const credentials = grpc.experimental.createCertificateProviderServerCredentials(
    provider,
    mutual ? provider : null,
    mutual,
  );
  return {
    credentials,
    mutual,
    summary: () => ({
      subject: watcher.current.subject,
      notAfter: watcher.current.notAfter.toISOString(),
      mutual,
    }),
    stop: () => watcher.stop(),
  };
}
