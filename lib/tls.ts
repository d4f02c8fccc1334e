/**
 * TLS material from PEM files, shared by every service: read and checked once (a certificate and a
 * key that belong together, a CA that parses), then watched, so a renewed certificate is picked up
 * without a restart.
 *
 * Watching is polling: each `intervalMs` the files are read and hashed. A Kubernetes Secret volume
 * renews its files by swapping a `..data` symlink, which inotify on the file itself does not see,
 * and cert-manager or a person may write the certificate and the key one after the other; a poll
 * that finds a pair that does not match keeps the old material and tries again at the next tick, so
 * a half-written update is never served. Nor is a certificate outside its validity window (expired,
 * or not valid yet): every handshake with it would fail, so at start it stops the service, and on a
 * renewal the current certificate stays.
 */
import { createHash, createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { EnvError, envInt } from "./env.ts";

/** Where a service's certificate, key and (for mutual TLS) CA bundle are. */
export interface TlsPaths {
  /** PEM certificate chain: the leaf first, then intermediates. */
  cert: string;
  /** PEM private key of the leaf. */
  key: string;
  /** PEM CA bundle: the CA that peers' certificates must be signed by (mutual TLS). */
  ca?: string;
}

/** The files' contents, checked. */
export interface TlsMaterial {
  cert: string;
  key: string;
  ca?: string;
  /** SHA-256 over the three files: a change of any one is a new version. */
  version: string;
  /** The leaf's subject, names and expiry, for logs and metrics. */
  subject: string;
  subjectAltName: string;
  notAfter: Date;
  /** With a CA bundle: when the first of its certificates expires (caNotAfter), for the expiry metric. */
  caNotAfter?: Date;
}

export class TlsFileError extends Error {
  override name = "TlsFileError";
}

/** One PEM block (RFC 7468): its label and its base64 body. */
const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([\s\S]*?)-----END \1-----/g;

/**
 * Reads a PEM file whose every block is complete: a file caught half-written (a chain cut inside
 * its intermediate, a CA bundle cut after its first certificates) has a BEGIN line without its
 * END, and is refused here rather than served. Text outside the blocks (a bundle's comments) is
 * allowed, as RFC 7468 allows it. Every CERTIFICATE block must parse.
 */
function readPem(path: string, what: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new TlsFileError(`${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  const begins = text.split("-----BEGIN ").length - 1;
  if (begins === 0) throw new TlsFileError(`${what} ${path}: not a PEM file`);
  let blocks = 0;
  for (const block of text.matchAll(PEM_BLOCK)) {
    blocks++;
    if (block[1] !== "CERTIFICATE") continue;
    try {
      new X509Certificate(block[0]);
    } catch (err) {
      throw new TlsFileError(`${what} ${path}: certificate ${blocks} does not parse (${(err as Error).message})`);
    }
  }
  if (blocks !== begins)
    throw new TlsFileError(
      `${what} ${path}: ${begins - blocks} of its ${begins} PEM blocks are incomplete (a BEGIN line without its END: the file is being written?)`,
    );
  return text;
}

/**
 * When the first certificate of a PEM bundle (already read by readPem) expires: for a CA bundle,
 * the day peers issued by that CA stop being accepted.
 */
export function caNotAfter(pem: string): Date {
  let earliest = Number.POSITIVE_INFINITY;
  for (const block of pem.matchAll(PEM_BLOCK))
    if (block[1] === "CERTIFICATE") earliest = Math.min(earliest, Date.parse(new X509Certificate(block[0]).validTo));
  return new Date(earliest);
}

/**
 * Refuses a leaf outside its validity window at `now`. The message names the dates, not `now`:
 * a watcher reports a refused version once per message, so it must not change from poll to poll.
 */
function checkValidity(leaf: X509Certificate, path: string, now: number): void {
  const notBefore = new Date(leaf.validFrom);
  const notAfter = new Date(leaf.validTo);
  if (now > notAfter.getTime())
    throw new TlsFileError(
      `certificate ${path} expired at ${notAfter.toISOString()}: every TLS handshake with it would fail; renew it (locally: make certs)`,
    );
  if (now < notBefore.getTime())
    throw new TlsFileError(
      `certificate ${path} is not valid before ${notBefore.toISOString()}: every TLS handshake with it would fail until then; check this machine's clock, or the issuer's`,
    );
}

/** Reads and checks `paths`: each parses, the key is the certificate's, and the certificate is valid now. */
export function readTlsMaterial(paths: TlsPaths): TlsMaterial {
  const cert = readPem(paths.cert, "certificate");
  const key = readPem(paths.key, "private key");
  const ca = paths.ca === undefined ? undefined : readPem(paths.ca, "CA bundle");
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(cert);
  } catch (err) {
    throw new TlsFileError(`certificate ${paths.cert}: ${(err as Error).message}`);
  }
  let matches: boolean;
  try {
    matches = leaf.checkPrivateKey(createPrivateKey(key));
  } catch (err) {
    throw new TlsFileError(`private key ${paths.key}: ${(err as Error).message}`);
  }
  if (!matches) throw new TlsFileError(`private key ${paths.key} is not the key of certificate ${paths.cert}`);
  checkValidity(leaf, paths.cert, Date.now());
  if (ca !== undefined) {
    try {
      new X509Certificate(ca);
    } catch (err) {
      throw new TlsFileError(`CA bundle ${paths.ca}: ${(err as Error).message}`);
    }
  }
  const version = createHash("sha256")
    .update(cert)
    .update("\0")
    .update(key)
    .update("\0")
    .update(ca ?? "")
    .digest("hex");
  return {
    cert,
    key,
    ...(ca === undefined ? {} : { ca, caNotAfter: caNotAfter(ca) }),
    version,
    subject: leaf.subject,
    subjectAltName: leaf.subjectAltName ?? "",
    notAfter: new Date(leaf.validTo),
  };
}

export interface WatcherOptions<T> {
  intervalMs: number;
  /** A new, valid version of the files; not called for the first one. */
  onChange: (material: T) => void | Promise<void>;
  /** The files changed but cannot be used (yet): the current material stays. Called once per bad version. */
  onError: (err: Error) => void;
}
export type TlsWatcherOptions = WatcherOptions<TlsMaterial>;

/** Polls what `read` returns and reports each new valid version. */
export class PemWatcher<T extends { version: string }> {
  #current: T;
  #timer: ReturnType<typeof setInterval> | undefined;
  #lastError = "";
  #busy = false;

  constructor(
    private readonly read: () => T,
    private readonly opts: WatcherOptions<T>,
    initial: T = read(),
  ) {
    this.#current = initial;
  }

  get current(): T {
    return this.#current;
  }

  start(): this {
    this.#timer ??= setInterval(() => void this.check(), this.opts.intervalMs);
    this.#timer.unref?.();
    return this;
  }

  /**
   * One poll; resolves once a change (if any) has been applied by `onChange`. Files that cannot be
   * read or checked, or a version `onChange` could not put into use (it threw), leave the current
   * material as it is: reported once through `onError`, tried again at the next poll. Never rejects.
   */
  async check(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      const next = this.read();
      if (next.version === this.#current.version) {
        this.#lastError = "";
        return;
      }
      await this.opts.onChange(next);
      this.#lastError = "";
      this.#current = next;
    } catch (err) {
      const message = (err as Error).message;
      if (message !== this.#lastError) this.opts.onError(err as Error);
      this.#lastError = message;
    } finally {
      this.#busy = false;
    }
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/** Polls a certificate, its key and CA bundle (`paths`) and reports each new valid version. */
export class TlsFileWatcher extends PemWatcher<TlsMaterial> {
  constructor(
    readonly paths: TlsPaths,
    opts: TlsWatcherOptions,
    initial?: TlsMaterial,
  ) {
    super(() => readTlsMaterial(paths), opts, initial);
  }
}

/** What a TLS client uses: the CA it trusts and, for mutual TLS, its own certificate and key. */
export interface ClientTlsPaths {
  ca: string;
  cert?: string;
  key?: string;
}

export interface ClientTlsMaterial {
  ca: string;
  cert?: string;
  key?: string;
  version: string;
  /** The client certificate's expiry (with `cert`), for the expiry metric. */
  notAfter?: Date;
  /** When the first certificate of the CA bundle expires, for the expiry metric. */
  caNotAfter: Date;
}

/** Reads and checks a client's files: the CA parses; a certificate and key, if given, belong together and are valid now. */
export function readClientTls(paths: ClientTlsPaths): ClientTlsMaterial {
  const ca = readPem(paths.ca, "CA bundle");
  try {
    new X509Certificate(ca);
  } catch (err) {
    throw new TlsFileError(`CA bundle ${paths.ca}: ${(err as Error).message}`);
  }
  if (paths.cert === undefined || paths.key === undefined) {
    return { ca, version: createHash("sha256").update(ca).digest("hex"), caNotAfter: caNotAfter(ca) };
  }
  const pair = readTlsMaterial({ cert: paths.cert, key: paths.key });
  return {
    ca,
    cert: pair.cert,
    key: pair.key,
    version: createHash("sha256").update(ca).update("\0").update(pair.version).digest("hex"),
    notAfter: pair.notAfter,
    caNotAfter: caNotAfter(ca),
  };
}

/** A service's own TLS settings from the environment (webapp, rpcapp). */
export interface ServiceTlsSettings {
  paths: TlsPaths;
  /** Whether a client certificate signed by `paths.ca` is required (mutual TLS). */
  requireClientCert: boolean;
  reloadIntervalMs: number;
}

type Env = Record<string, string | undefined>;

/**
 * TLS_CERT_FILE and TLS_KEY_FILE (both or neither) turn TLS on; TLS_CLIENT_CA_FILE makes it mutual:
 * only clients with a certificate signed by that CA complete the handshake. TLS_RELOAD_INTERVAL_MS
 * is how often the files are checked for a renewal. Undefined: plain text.
 */
export function serviceTlsFromEnv(env: Env = process.env): ServiceTlsSettings | undefined {
  const cert = env.TLS_CERT_FILE?.trim() || undefined;
  const key = env.TLS_KEY_FILE?.trim() || undefined;
  const ca = env.TLS_CLIENT_CA_FILE?.trim() || undefined;
  if (!cert && !key) {
    if (ca) throw new EnvError("TLS_CLIENT_CA_FILE is set but TLS_CERT_FILE and TLS_KEY_FILE are not");
    return undefined;
  }
  if (!cert || !key)
    throw new EnvError(
      `${cert ? "TLS_KEY_FILE" : "TLS_CERT_FILE"} is required when ${cert ? "TLS_CERT_FILE" : "TLS_KEY_FILE"} is set`,
    );
  return {
    paths: { cert, key, ...(ca ? { ca } : {}) },
    requireClientCert: ca !== undefined,
    reloadIntervalMs: envInt("TLS_RELOAD_INTERVAL_MS", 5000, { min: 100 }, env),
  };
}
