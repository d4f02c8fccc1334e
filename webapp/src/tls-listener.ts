/**
 * HTTPS on webapp's PORT (TLS_CERT_FILE, TLS_KEY_FILE; mutual with TLS_CLIENT_CA_FILE), with a
 * renewed certificate taken into use without a restart and without failing a request: the
 * handover between two listeners that lib/tls-listener.ts describes, on a port no other process
 * may share (a second webapp on the same port fails as it does without TLS).
 */
import type { Server } from "bun";
import type { Registry } from "prom-client";
import type { Logger } from "../../lib/log.ts";
import { type ServiceTlsSettings, TlsFileWatcher, type TlsMaterial } from "../../lib/tls.ts";
import { TlsListener as HandoverListener } from "../../lib/tls-listener.ts";

export { HANDOVER_MS } from "../../lib/tls-listener.ts";
/** Elysia's default for `app.listen` (Bun's own is 10 s), kept so TLS changes nothing else. */
const IDLE_TIMEOUT_S = 30;

export interface TlsListenerOptions {
  host: string;
  port: number;
  settings: ServiceTlsSettings;
  /** Answers every request: the Elysia app's `fetch`. */
  fetch: (request: Request) => Response | Promise<Response>;
  log: Logger;
  /** The certificate's expiry and the reloads are exported on it when given. */
  registry?: Registry;
  handoverMs?: number;
}

export class TlsListener {
  readonly mutual: boolean;
  readonly #listener: HandoverListener<TlsMaterial>;

  /** Reads and checks the files (a TlsFileError naming the file stops the start), listens, follows renewals. */
  constructor(opts: TlsListenerOptions) {
    const { settings, log } = opts;
    const mutual = settings.requireClientCert;
    this.mutual = mutual;
    this.#listener = new HandoverListener<TlsMaterial>({
      host: opts.host,
      port: opts.port,
      exclusive: true,
      idleTimeout: IDLE_TIMEOUT_S,
      watch: (onChange) =>
        new TlsFileWatcher(settings.paths, {
          intervalMs: settings.reloadIntervalMs,
          onChange,
          // Once per bad version: the current certificate keeps serving and the next poll tries again.
          onError: (err) =>
            log.warn({ err }, "tls files changed but cannot be used yet; the current certificate stays"),
        }),
      tls: (material) => ({
        cert: material.cert,
        key: material.key,
        // Ask for a client certificate and refuse the handshake without one signed by the CA.
        ...(mutual ? { ca: material.ca, requestCert: true, rejectUnauthorized: true } : {}),
      }),
      // The material carries what the summary reads: subject, expiry, and the client CA's expiry.
      summarize: (material) => material,
      fetch: (request) => opts.fetch(request),
      log,
      ...(opts.registry ? { registry: opts.registry } : {}),
      ...(opts.handoverMs !== undefined ? { handoverMs: opts.handoverMs } : {}),
    });
  }

  /** The listener new connections reach once any handover is done. */
  get server(): Server<undefined> {
    return this.#listener.server;
  }

  /** What is served now (changes on each renewal). */
  get material(): TlsMaterial {
    return this.#listener.material;
  }

  /** For the start-up line: who this server is, until when, and whether TLS is mutual. */
  summary(): { subject: string; notAfter: string; mutual: boolean } {
    return { ...this.#listener.summary(), mutual: this.mutual };
  }

  /** Stops watching, and every listener gracefully: requests in flight finish. */
  stop(): Promise<void> {
    return this.#listener.stop();
  }
}
