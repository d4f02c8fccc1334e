/**
 * The public HTTPS listener (HTTPS_PORT), from routes.yaml's `tls` block: TLS 1.2 and 1.3 with
 * one or more certificates chosen by SNI, renewed files taken into use without a restart and
 * without a failed request (the handover lib/tls-listener.ts describes), HSTS on its answers.
 *
 * Every local gateway process binds the same port (SO_REUSEPORT), as on the plain port.
 *
 * What Bun 1.4.5 serves over TLS, measured: HTTP/1.1 only (no ALPN, so no HTTP/2 — `curl --http2`
 * falls back to HTTP/1.1); TLS 1.0 and 1.1 refused by its defaults; the first entry of the `tls`
 * array answers a handshake without SNI or with a name no other entry lists.
 */
import { createHash } from "node:crypto";
import type { TLSOptions } from "bun";
import type { Registry } from "prom-client";
import type { Logger } from "../../../lib/log.ts";
import { PemWatcher, readTlsMaterial, type TlsMaterial } from "../../../lib/tls.ts";
import { TlsListener } from "../../../lib/tls-listener.ts";
import type { ListenerTls } from "../config/tls.ts";

/** One certificate and the SNI names it answers (none: only as the default). */
export interface EdgeCertificate extends TlsMaterial {
  serverNames: string[];
}

/** Every certificate of the current `tls` block, read and checked. */
export interface EdgeMaterial {
  certificates: EdgeCertificate[];
  version: string;
}

/** Reads the files the block names (a TlsFileError names the bad one). */
export function readEdgeMaterial(tls: ListenerTls): EdgeMaterial {
  const hash = createHash("sha256");
  const certificates = tls.certificates.map((c) => {
    const material = readTlsMaterial(c.paths);
    hash.update(material.version).update("\0").update(c.serverNames.join(",")).update("\0");
    return { ...material, serverNames: c.serverNames };
  });
  return { certificates, version: hash.digest("hex") };
}

/** Bun's `tls` array: the default certificate first (no serverName), then one entry per SNI name. */
export function bunTlsOptions(material: EdgeMaterial): TLSOptions[] {
  const [first] = material.certificates;
  if (!first) throw new Error("the tls block has no certificate");
  const entries: TLSOptions[] = [{ cert: first.cert, key: first.key }];
  for (const c of material.certificates)
    for (const serverName of c.serverNames) entries.push({ cert: c.cert, key: c.key, serverName });
  return entries;
}

function summarize(material: EdgeMaterial): { subject: string; notAfter: Date } {
  const soonest = material.certificates.reduce((a, b) => (b.notAfter < a.notAfter ? b : a));
  return {
    subject: material.certificates.map((c) => c.subject).join("; "),
    notAfter: soonest.notAfter,
  };
}

export interface EdgeTlsOptions {
  host: string;
  port: number;
  /** The block in service now: read again on each poll, so a routes.yaml reload takes effect too. */
  current: () => ListenerTls | undefined;
  fetch: (request: Request, server: import("bun").Server<undefined>) => Response | Promise<Response>;
  error: (err: Error) => Response;
  idleTimeout: number;
  maxRequestBodySize: number;
  log: Logger;
  registry?: Registry;
}

/** Starts the HTTPS listener for `opts.current()` (which must be set). */
export function startEdgeTls(opts: EdgeTlsOptions): TlsListener<EdgeMaterial> {
  const initial = opts.current();
  if (!initial) throw new Error("startEdgeTls without a tls block");
  let last = initial;
  // A reload that removes the block keeps the last certificates (turning HTTPS off needs a restart).
  const block = () => {
    last = opts.current() ?? last;
    return last;
  };
  return new TlsListener<EdgeMaterial>({
    host: opts.host,
    port: opts.port,
    exclusive: false,
    idleTimeout: opts.idleTimeout,
    maxRequestBodySize: opts.maxRequestBodySize,
    watch: (onChange) =>
      new PemWatcher(() => readEdgeMaterial(block()), {
        intervalMs: initial.reloadIntervalMs,
        onChange,
        onError: (err) =>
          opts.log.warn({ err }, "tls files changed but cannot be used yet; the current certificates stay"),
      }),
    tls: bunTlsOptions,
    summarize,
    fetch: opts.fetch,
    error: opts.error,
    log: opts.log,
    ...(opts.registry ? { registry: opts.registry } : {}),
  });
}
