/**
 * routes.yaml's TLS settings, compiled: the public HTTPS listener's certificates (`tls`) and each
 * upstream's client side (`upstreams.<name>.tls`). The files are read and checked at load, so a
 * missing file or a key that is not its certificate's is a config error with file and line, like
 * any other; once running, the watchers in edge/tls-listener.ts and upstream/tls.ts follow renewals.
 * Relative paths are looked up as `proto` paths are: in the working directory, then beside the
 * routes file (paths.ts).
 */
import { configFilePath } from "./paths.ts";
import type { Static } from "@sinclair/typebox";
import {
  type ClientTlsMaterial,
  type ClientTlsPaths,
  readClientTls,
  readTlsMaterial,
  TlsFileError,
  type TlsMaterial,
  type TlsPaths,
} from "../../../lib/tls.ts";
import type { ListenerTlsSchema, UpstreamTlsSchema } from "./schema.ts";

export interface UpstreamTls {
  paths: ClientTlsPaths;
  /** The name the upstream's certificate must carry; undefined: each endpoint's own host name. */
  serverName?: string;
  reloadIntervalMs: number;
  /** The files as read at load. */
  material: ClientTlsMaterial;
}

export interface ListenerCertificate {
  paths: TlsPaths;
  /** SNI names; empty for the default certificate when none are listed. */
  serverNames: string[];
  material: TlsMaterial;
}

export interface ListenerTls {
  certificates: ListenerCertificate[];
  redirectHttp: boolean;
  /** The port in the redirect's Location; undefined: the HTTPS listener's own. */
  redirectPort?: number;
  /** The Strict-Transport-Security value to send, if any. */
  hsts?: string;
  reloadIntervalMs: number;
}

type Report = (path: (string | number)[], message: string) => void;

const DEFAULT_RELOAD_MS = 5_000;

export function compileUpstreamTls(
  raw: Static<typeof UpstreamTlsSchema> | undefined,
  baseDir: string,
  report: Report,
): UpstreamTls | undefined {
  if (!raw || raw.enabled === false) return undefined;
  if ((raw.cert === undefined) !== (raw.key === undefined)) {
    report([raw.cert === undefined ? "key" : "cert"], "cert and key go together: give both (mutual TLS) or neither");
    return undefined;
  }
  const paths: ClientTlsPaths = {
    ca: configFilePath(baseDir, raw.ca),
    ...(raw.cert && raw.key ? { cert: configFilePath(baseDir, raw.cert), key: configFilePath(baseDir, raw.key) } : {}),
  };
  let material: ClientTlsMaterial;
  try {
    material = readClientTls(paths);
  } catch (err) {
    report([fieldOf(err, paths)], (err as Error).message);
    return undefined;
  }
  return {
    paths,
    ...(raw.serverName ? { serverName: raw.serverName } : {}),
    reloadIntervalMs: raw.reloadIntervalMs ?? DEFAULT_RELOAD_MS,
    material,
  };
}

export function compileListenerTls(
  raw: Static<typeof ListenerTlsSchema> | undefined,
  baseDir: string,
  report: Report,
): ListenerTls | undefined {
  if (!raw || raw.enabled === false) return undefined;
  const certificates: ListenerCertificate[] = [];
  const seen = new Set<string>();
  raw.certificates.forEach((c, i) => {
    const paths = { cert: configFilePath(baseDir, c.cert), key: configFilePath(baseDir, c.key) };
    for (const name of c.serverNames ?? []) {
      const lower = name.toLowerCase();
      if (seen.has(lower)) report(["certificates", i, "serverNames"], `"${name}" is already another certificate's`);
      seen.add(lower);
    }
    try {
      certificates.push({ paths, serverNames: c.serverNames ?? [], material: readTlsMaterial(paths) });
    } catch (err) {
      report(["certificates", i, fieldOf(err, paths)], (err as Error).message);
    }
  });
  // hstspreload.org takes a site only with includeSubDomains and a max-age of a year or more; a
  // preload asked for without them would be sent and never acted on.
  if (raw.hsts?.preload) {
    if (!raw.hsts.includeSubDomains)
      report(["hsts", "preload"], "preload needs includeSubDomains: true (hstspreload.org refuses a site without it)");
    if (raw.hsts.maxAgeSec < 31_536_000)
      report(
        ["hsts", "preload"],
        `preload needs maxAgeSec of at least 31536000 (a year), not ${raw.hsts.maxAgeSec}: hstspreload.org refuses less`,
      );
  }
  const hsts = raw.hsts
    ? [
        `max-age=${raw.hsts.maxAgeSec}`,
        ...(raw.hsts.includeSubDomains ? ["includeSubDomains"] : []),
        ...(raw.hsts.preload ? ["preload"] : []),
      ].join("; ")
    : undefined;
  return {
    certificates,
    redirectHttp: raw.redirectHttp ?? false,
    ...(raw.redirectPort ? { redirectPort: raw.redirectPort } : {}),
    ...(hsts ? { hsts } : {}),
    reloadIntervalMs: raw.reloadIntervalMs ?? DEFAULT_RELOAD_MS,
  };
}

/** Which key of the block a file error belongs to, for the line number. */
function fieldOf(err: unknown, paths: { cert?: string; key?: string; ca?: string }): string {
  const message = err instanceof TlsFileError ? err.message : "";
  if (paths.key && message.includes(paths.key)) return "key";
  if (paths.ca && message.includes(paths.ca)) return "ca";
  return "cert";
}
