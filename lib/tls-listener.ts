/**
 * An HTTPS listener whose certificates can be renewed without a restart and without failing a
 * request: webapp's port and the gateway's public HTTPS port (with SNI) are both one of these.
 *
 * A running Bun.serve cannot change its certificate (`server.reload({ tls })` ignores `tls`, Bun
 * 1.4.5), so a renewal is a handover between two listeners on the same port:
 *
 *   new material, checked ──▶ a second Bun.serve on the port (SO_REUSEPORT) presents it
 *                         ──▶ the old one answers with `Connection: close` for `handoverMs`
 *                         ──▶ old.stop(false): requests in flight finish; "tls certificate reloaded"
 *
 * The watcher waits for the handover, not for the old listener's requests in flight: a long one
 * (a slow upload, a stream) would otherwise hold off the next renewal until it ended.
 *
 * - The material comes from a PemWatcher (lib/tls.ts) that passes on only a complete, matching
 *   version of the files: a certificate written before its key keeps the current listener.
 * - While both listen, the kernel hashes each new connection to one of them: some handshakes still
 *   get the old certificate until the old listener closes, none after.
 * - `Connection: close` on the old listener's answers moves keep-alive clients to new connections
 *   before it closes. Without it `stop(false)` closes their idle connections at once, and a request
 *   written on one at that moment fails with ECONNRESET. Measured (Bun 1.4.5, 16 clients POSTing
 *   over keep-alive, 20 handovers): 98 resets without the delay, 0 with 500 ms or 1 s of it.
 * - Closing the old socket resets the connections still queued in its accept queue unless
 *   net.ipv4.tcp_migrate_req=1 (Linux ≥ 5.14) moves them to the new listener (see
 *   scripts/stack/listener-handover.ts). Measured under 4 clients opening a connection per request,
 *   30 handovers: 7 resets with it 0, none with it 1. A client sees such a reset during the TLS
 *   handshake, before it sent its request, so retrying it is safe.
 *
 * SO_REUSEPORT on the first listener is what lets the second one bind, but it would also let a
 * second process started on the same port share it silently. Where the port is not meant to be
 * shared (`exclusive`), it is first bound once WITHOUT SO_REUSEPORT and released, so a port anyone
 * holds fails as it would without TLS. The trade-off: two processes started in the same instant
 * could both pass that check.
 */
import type { Server, TLSOptions } from "bun";
import type { Registry } from "prom-client";
import type { Logger } from "./log.ts";
import { collectedMetric } from "./telemetry/series.ts";
import type { PemWatcher } from "./tls.ts";

/**
 * The TLS 1.2 suites offered: forward secrecy and AEAD only (Mozilla's "intermediate" list). Bun's
 * default adds ECDHE-…-AES128-SHA and -AES256-SHA (CBC with SHA-1), which scanners flag. TLS 1.3's
 * suites are all AEAD and stay as they are; TLS 1.0 and 1.1 are refused by Bun's defaults.
 */
export const TLS12_CIPHERS = [
  "ECDHE-ECDSA-AES128-GCM-SHA256",
  "ECDHE-RSA-AES128-GCM-SHA256",
  "ECDHE-ECDSA-AES256-GCM-SHA384",
  "ECDHE-RSA-AES256-GCM-SHA384",
  "ECDHE-ECDSA-CHACHA20-POLY1305",
  "ECDHE-RSA-CHACHA20-POLY1305",
].join(":");

/** How long a replaced listener keeps serving, answering `Connection: close`, before it closes. */
export const HANDOVER_MS = 1000;

type Fetch = (request: Request, server: Server<undefined>) => Response | Promise<Response>;

/** What the listener reports about a version of its material: logs and the expiry metric. */
export interface MaterialSummary {
  subject: string;
  /** The earliest expiry among the certificates served. */
  notAfter: Date;
  /** With mutual TLS: when the first certificate of the client CA bundle expires. */
  caNotAfter?: Date;
}

export interface TlsListenerOptions<M extends { version: string }> {
  host: string;
  port: number;
  /** Follows the files; the listener calls start() and stop(), and takes over its onChange. */
  watch: (onChange: (material: M) => Promise<void>) => PemWatcher<M>;
  /** Bun's `tls` option for a version of the material (an array for SNI: the first is the default). */
  tls: (material: M) => TLSOptions | TLSOptions[];
  summarize: (material: M) => MaterialSummary;
  /** Answers every request. */
  fetch: Fetch;
  error?: (err: Error) => Response | Promise<Response>;
  idleTimeout: number;
  maxRequestBodySize?: number;
  /** Refuse a port someone else already holds (see the file comment); false where replicas share it. */
  exclusive: boolean;
  log: Logger;
  /** The certificate's expiry and the reloads are exported on it when given (`certificate="server"`). */
  registry?: Registry;
  handoverMs?: number;
}

/** One certificate a process holds, as the TLS metrics show it. */
export interface CertificateSeries {
  /**
   * Which certificate: `certificate="server"` for the one an HTTPS port presents (the gateway's
   * edge certificate, webapp's, rpcapp's), `"upstream-client"` with `upstream` for the gateway's
   * client certificate towards an upstream, `"upstream-ca"` for the CA it verifies that upstream
   * by, `"client-ca"` for the CA a service requires client certificates from (mutual TLS).
   */
  labels: Readonly<Record<string, string>>;
  notAfter: Date;
  /** Renewals taken into use without a restart (none for a CA: its series has no reloads). */
  reloads?: number;
}

/**
 * A TLS port's series: the certificate it presents (`certificate="server"`) and, with mutual TLS,
 * the CA client certificates must come from (`"client-ca"`: once it expires, every peer's is refused).
 */
export function serverCertificates(
  notAfter: Date,
  reloads: number,
  clientCaNotAfter: Date | undefined,
): CertificateSeries[] {
  const server = { labels: { certificate: "server" }, notAfter, reloads };
  return clientCaNotAfter ? [server, { labels: { certificate: "client-ca" }, notAfter: clientCaNotAfter }] : [server];
}

/** The certificates each registry exports, from every part of the process that holds one. */
const certificateSources = new WeakMap<Registry, Set<() => CertificateSeries[]>>();

/**
 * Exports what `source` returns (read at each scrape) as `tls_certificate_expiry_timestamp_seconds`
 * and `tls_certificate_reloads_total`: one pair of metrics per registry, shared by every certificate
 * the process holds, so one alert rule covers them all.
 */
export function exportCertificates(registry: Registry, source: () => CertificateSeries[]): void {
  let sources = certificateSources.get(registry);
  if (!sources) {
    const all = new Set<() => CertificateSeries[]>();
    sources = all;
    certificateSources.set(registry, all);
    const series = () => [...all].flatMap((read) => read());
    collectedMetric(
      registry,
      "tls_certificate_expiry_timestamp_seconds",
      'When a certificate this process presents or verifies its peers by expires (Unix time, seconds): certificate="server" is its HTTPS port\'s (the earliest when it presents several), "upstream-client" the gateway\'s client certificate towards `upstream`, "upstream-ca" the CA it verifies `upstream` by, "client-ca" the CA client certificates must come from (a bundle: its first to expire). Alert well before it.',
      "gauge",
      () => series().map((c) => ({ labels: { ...c.labels }, value: c.notAfter.getTime() / 1000 })),
    );
    collectedMetric(
      registry,
      "tls_certificate_reloads_total",
      "Renewed certificates taken into use without a restart, by certificate (as for the expiry; none for a CA).",
      "counter",
      () => series().flatMap((c) => (c.reloads === undefined ? [] : [{ labels: { ...c.labels }, value: c.reloads }])),
    );
  }
  sources.add(source);
}

const closeAfter = async (answer: Response | Promise<Response>): Promise<Response> => {
  const response = await answer;
  response.headers.set("connection", "close");
  return response;
};

function withCiphers(tls: TLSOptions | TLSOptions[]): TLSOptions | TLSOptions[] {
  return Array.isArray(tls)
    ? tls.map((entry) => ({ ciphers: TLS12_CIPHERS, ...entry }))
    : { ciphers: TLS12_CIPHERS, ...tls };
}

/** Fails like a plain listener when anyone holds `host:port` (see the file comment). */
function assertPortFree(host: string, port: number): void {
  if (port === 0) return;
  Bun.serve({ hostname: host, port, reusePort: false, fetch: () => new Response(null, { status: 503 }) }).stop(true);
}

export class TlsListener<M extends { version: string }> {
  #server: Server<undefined>;
  /** Listeners being replaced: still serving, with `Connection: close`, until they stop. */
  readonly #retiring = new Set<Server<undefined>>();
  /** Replaced listeners closed, with requests still in flight. */
  readonly #closing = new Set<Promise<void>>();
  readonly #watcher: PemWatcher<M>;
  /** What new handshakes get once any handover is done: the expiry metric's value. */
  #served: MaterialSummary;
  #reloads = 0;
  readonly #handoverMs: number;
  #stopped = false;

  /**
   * Reads the material through the watcher (a TlsFileError naming the file stops the start),
   * listens, and follows renewals.
   */
  constructor(private readonly opts: TlsListenerOptions<M>) {
    this.#handoverMs = opts.handoverMs ?? HANDOVER_MS;
    this.#watcher = opts.watch((material) => this.#replace(material));
    const first = this.#watcher.current;
    this.#served = opts.summarize(first);
    if (opts.registry)
      exportCertificates(opts.registry, () =>
        serverCertificates(this.#served.notAfter, this.#reloads, this.#served.caNotAfter),
      );
    if (opts.exclusive) assertPortFree(opts.host, opts.port);
    this.#server = this.#serve(first, opts.port);
    this.#watcher.start();
  }

  /** The listener new connections reach once any handover is done. */
  get server(): Server<undefined> {
    return this.#server;
  }

  get port(): number {
    return this.#server.port ?? this.opts.port;
  }

  /** What is served now (changes on each renewal). */
  get material(): M {
    return this.#watcher.current;
  }

  /** For the start-up line: who this server is and until when. */
  summary(): { subject: string; notAfter: string } {
    const { subject, notAfter } = this.opts.summarize(this.#watcher.current);
    return { subject, notAfter: notAfter.toISOString() };
  }

  /** Stops watching, and every listener gracefully: requests in flight finish. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#watcher.stop();
    const all = [this.#server, ...this.#retiring];
    this.#retiring.clear();
    await Promise.all([...all.map((server) => server.stop(false)), ...this.#closing]);
  }

  #serve(material: M, port: number): Server<undefined> {
    const { fetch, error, idleTimeout, maxRequestBodySize } = this.opts;
    return Bun.serve({
      hostname: this.opts.host,
      port,
      reusePort: true,
      idleTimeout,
      ...(maxRequestBodySize ? { maxRequestBodySize } : {}),
      tls: withCiphers(this.opts.tls(material)),
      fetch: (request, server) =>
        this.#retiring.has(server) ? closeAfter(fetch(request, server)) : fetch(request, server),
      ...(error ? { error } : {}),
    });
  }

  /**
   * Reads the material now instead of at the next poll, and hands the port over if it changed: for
   * a configuration that names other files (the gateway's routes.yaml reload).
   */
  recheck(): Promise<void> {
    return this.#watcher.check();
  }

  /** Hands the port over to a listener presenting `material`. */
  async #replace(material: M): Promise<void> {
    if (this.#stopped) return;
    const old = this.#server;
    const summary = this.opts.summarize(material);
    try {
      this.#server = this.#serve(material, old.port ?? this.opts.port);
    } catch (err) {
      // Not expected (the files were checked): the watcher keeps the current material, reports
      // this through its onError, and tries the files again at its next poll.
      throw new Error(`cannot serve the renewed tls certificate (${summary.subject}): ${(err as Error).message}`, {
        cause: err,
      });
    }
    this.#retiring.add(old);
    await Bun.sleep(this.#handoverMs);
    // stop() takes a retiring listener over when it comes first.
    if (!this.#retiring.delete(old)) return;
    // Its socket closes at once, so every new handshake gets the new certificate from now on; the
    // requests in flight on it finish, and stop() waits for them too.
    const closing = old.stop(false);
    this.#closing.add(closing);
    const forget = () => void this.#closing.delete(closing);
    // Not awaited: the watcher is free for the next renewal while those requests finish.
    closing.then(forget, forget);
    this.#served = summary;
    this.#reloads++;
    this.opts.log.info(
      { tls: { subject: summary.subject, notAfter: summary.notAfter.toISOString() }, handover_ms: this.#handoverMs },
      "tls certificate reloaded",
    );
  }
}
