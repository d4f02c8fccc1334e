/**
 * The gateway as a TLS client of one upstream: the CA it trusts, the client certificate it presents
 * (mutual TLS) and the name the upstream's certificate must carry. Endpoints are dialled by
 * address (discovery resolved the name), so the expected name is given explicitly: the upstream's
 * `tls.serverName`, else the host name its endpoints were configured with (the headless Service,
 * whose names each service's certificate carries), else — when the endpoints are IP literals —
 * each endpoint's own IP.
 *
 * The files are polled (lib/tls.ts); a renewal is used by connections opened after it (the HTTP/1.1
 * pools and the HTTP/2 sessions keep the connections they have until they close). The client
 * certificate's expiry and reloads are on /metrics (telemetry/metrics.ts:
 * `tls_certificate_expiry_timestamp_seconds{certificate="upstream-client",upstream=…}`), and so is
 * the CA's expiry (`certificate="upstream-ca"`).
 */
import { isIP } from "node:net";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import type { SecureClientSessionOptions } from "node:http2";
import type { Logger } from "../../../lib/log.ts";
import { type ClientTlsMaterial, PemWatcher, readClientTls } from "../../../lib/tls.ts";
import type { UpstreamTls } from "../config/tls.ts";
import type { ClientTls } from "../proxy/h1-client.ts";

export class UpstreamTlsClient {
  readonly #watcher: PemWatcher<ClientTlsMaterial>;
  readonly #defaultName: string | undefined;
  /** One options object per endpoint host and material version, built once. */
  #clientOptions = new Map<string, ClientTls>();
  /** Renewed files taken into use (the reloads metric). */
  reloads = 0;

  constructor(
    readonly upstream: string,
    settings: UpstreamTls,
    configuredEndpoints: readonly string[],
    log?: Logger,
  ) {
    this.#defaultName = settings.serverName ?? configuredHostName(configuredEndpoints);
    this.#watcher = new PemWatcher(
      () => readClientTls(settings.paths),
      {
        intervalMs: settings.reloadIntervalMs,
        onChange: () => {
          this.#clientOptions = new Map();
          this.reloads++;
          log?.info({ upstream, event: "tls-reloaded" }, "upstream TLS files reloaded: new connections use them");
        },
        onError: (err) =>
          log?.warn(
            { upstream, event: "tls-reload-failed", err: err.message },
            "upstream TLS files changed but cannot be used yet: keeping the previous ones",
          ),
      },
      settings.material,
    ).start();
  }

  /** When the client certificate in use expires; undefined without one (no mutual TLS). */
  get notAfter(): Date | undefined {
    return this.#watcher.current.notAfter;
  }

  /** When the first certificate of the CA bundle the upstream is verified by expires. */
  get caNotAfter(): Date {
    return this.#watcher.current.caNotAfter;
  }

  /** The name `address`'s certificate must carry. */
  serverNameFor(address: string): string {
    return this.#defaultName ?? hostOf(address);
  }

  /** TLS for a new HTTP/1.1 connection to `address` (host:port). */
  clientOptions(address: string): ClientTls {
    const host = hostOf(address);
    let options = this.#clientOptions.get(host);
    if (!options) {
      const { ca, cert, key } = this.#watcher.current;
      options = { ca, ...(cert && key ? { cert, key } : {}), serverName: this.serverNameFor(address) };
      this.#clientOptions.set(host, options);
    }
    return options;
  }

  /**
   * Options for `http2.connect` to `address`, from the files as they are now. An expected name that
   * is an IP address cannot be the SNI `servername` (node:http2 throws: RFC 6066 §3 allows host
   * names only), so none is sent and the certificate is checked against that address instead.
   */
  http2Options(address: string): SecureClientSessionOptions {
    const { ca, cert, key } = this.#watcher.current;
    const name = this.serverNameFor(address);
    return {
      ca,
      ...(cert && key ? { cert, key } : {}),
      ...(isIP(name) === 0
        ? { servername: name }
        : { checkServerIdentity: (_host: string, peer: PeerCertificate) => checkServerIdentity(name, peer) }),
      ALPNProtocols: ["h2"],
    };
  }

  /** Re-reads the files now (tests, and SIGHUP). */
  check(): Promise<void> {
    return this.#watcher.check();
  }

  close(): void {
    this.#watcher.stop();
  }
}

function hostOf(address: string): string {
  const colon = address.lastIndexOf(":");
  const host = colon > 0 ? address.slice(0, colon) : address;
  return host.startsWith("[") ? host.slice(1, -1) : host;
}

/** The one host name the endpoints were configured with; undefined when they are IP literals or name several hosts. */
function configuredHostName(endpoints: readonly string[]): string | undefined {
  const names = new Set(endpoints.map(hostOf).filter((h) => isIP(h) === 0));
  return names.size === 1 ? [...names][0] : undefined;
}
