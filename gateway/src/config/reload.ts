/**
 * Hot reload of routes.yaml: on a change of the file, or on SIGHUP, the file is read, parsed and
 * validated; a good config is swapped into the gateway at once, a bad one is rejected — logged
 * with file:line, kept as the last reload error (admin API /config, the dashboard) — and the last
 * good config keeps serving.
 *
 * The file's directory is watched, not the file: in Kubernetes the mounted ConfigMap is a chain
 * of symlinks (routes.yaml → ..data/routes.yaml, ..data → ..2024_…) and the kubelet updates it by
 * swapping `..data`, which a watch on the file itself never sees
 * (https://kubernetes.io/docs/concepts/configuration/configmap/#mounted-configmaps-are-updated-automatically).
 * Editors that save by rename are caught the same way. Only events that name the file or the
 * kubelet's `..` entries count (`concernsConfig`): a log written beside the file costs nothing
 * and cannot hold a reload back. The first event that counts schedules one read `debounceMs`
 * later, which the events after it within that time join; a change is applied only if the
 * file's text changed. A slow poll backs the watch up on file systems where inotify sees
 * nothing (or names no file).
 */
import { createHash } from "node:crypto";
import { type FSWatcher, readFileSync, watch } from "node:fs";
import { basename, dirname, resolve } from "node:path";
import type { Logger } from "../../../lib/log.ts";
import {
  ConfigError,
  type ConfigProblem,
  type GatewayConfig,
  parseConfig,
  readConfigFile,
  type UpstreamConfig,
} from "./load.ts";

/** A config together with the text it was parsed from. */
export interface LoadedConfig {
  config: GatewayConfig;
  text: string;
  /** First 12 hex digits of the text's SHA-256: tells at a glance whether two gateways run the same file. */
  digest: string;
}

export interface ReloadError {
  /** Epoch ms of the rejected attempt. */
  at: number;
  message: string;
  /** Each with its line and column in the file (empty when the file could not be read or applied). */
  problems: ConfigProblem[];
}

export interface ReloadStatus {
  file: string;
  digest: string;
  /** Epoch ms the config in force was loaded (at start-up, or by the last good reload). */
  loadedAt: number;
  /** Epoch ms of the last good reload; null: none since start-up. */
  lastReloadAt: number | null;
  /** The last rejected edit, until a good one replaces it. */
  lastError: ReloadError | null;
  reloads: number;
  failures: number;
}

export type ReloadReason = "watch" | "signal" | "poll";

export interface ConfigReloaderOptions {
  /** ROUTES_FILE, as given (messages name it so). */
  file: string;
  /** The config in force, as loaded at start-up. */
  initial: LoadedConfig;
  /** Puts a validated config into service (Gateway.reload); a throw rejects it like a bad file. */
  apply: (config: GatewayConfig) => void | Promise<void>;
  log: Logger;
  /** What `${VAR}` references read (settings.ts keeps the environment for them). */
  env: Readonly<Record<string, string | undefined>>;
  debounceMs?: number;
  /** How often the file is re-read in case the watch missed a change (0: never). */
  pollMs?: number;
}

/** Reads and validates a config file, keeping its text. Throws ConfigError naming every problem. */
export function loadConfigFile(file: string, env: Readonly<Record<string, string | undefined>>): LoadedConfig {
  const { text, dir } = readConfigFile(file);
  // Relative proto paths resolve as at start-up (load.ts): working directory, then the file's folder.
  return { config: parseConfig(text, file, env, dir), text, digest: digestOf(text) };
}

/**
 * Whether a reloaded upstream has the same settings as the one in service, so the gateway can
 * keep it — its endpoints' health, breakers and connections — across the reload. The parsed
 * proto is left out: routes carry their own resolved methods; so is the canary policy, which the
 * gateway hands to the upstream's running canary as it is (server.ts).
 */
export function sameUpstream(a: UpstreamConfig, b: UpstreamConfig): boolean {
  const settings = ({ protoRoot: _parsed, canary: _policy, tls, ...rest }: UpstreamConfig) =>
    JSON.stringify({ ...rest, tls: tlsSettings(tls) });
  return settings(a) === settings(b);
}

/**
 * Whether two upstreams check their endpoints the same way (the schedule — interval, thresholds —
 * aside): a rebuilt upstream keeps its endpoints' "unhealthy" verdict only then (upstream.ts).
 */
export function sameHealthCheck(a: UpstreamConfig, b: UpstreamConfig): boolean {
  const check = ({ protocol, tls, healthCheck: { path, service, timeoutMs } }: UpstreamConfig) =>
    JSON.stringify({ protocol, tls: tlsSettings(tls), path, service, timeoutMs });
  return check(a) === check(b);
}

/** An upstream's TLS settings as compared: the files' contents are followed by the upstream's own watcher, so only where they are counts. */
function tlsSettings(tls: UpstreamConfig["tls"]) {
  return tls && { ...tls, material: undefined };
}

export class ConfigReloader {
  #status: ReloadStatus;
  #text: string;
  /** Digest of the text last tried (good or bad): the same text is not tried twice unless asked. */
  #lastTried: string | null;
  #queue: Promise<void> = Promise.resolve();
  #debounce: Timer | undefined;
  #poll: Timer | undefined;
  #watcher: FSWatcher | undefined;
  readonly #onSignal = () => {
    this.opts.log.info({ file: this.opts.file }, "SIGHUP: reloading the config");
    void this.reload("signal", true);
  };

  constructor(private readonly opts: ConfigReloaderOptions) {
    const { initial } = opts;
    this.#text = initial.text;
    this.#lastTried = initial.digest;
    this.#status = {
      file: opts.file,
      digest: initial.digest,
      loadedAt: Date.now(),
      lastReloadAt: null,
      lastError: null,
      reloads: 0,
      failures: 0,
    };
  }

  get status(): ReloadStatus {
    return this.#status;
  }

  /** The text of the config in force. */
  get source(): string {
    return this.#text;
  }

  /** Watches the file's directory, polls as a backstop, and reloads on SIGHUP. */
  start(): void {
    const dir = dirname(resolve(this.opts.file));
    try {
      const name = basename(resolve(this.opts.file));
      this.#watcher = watch(dir, { persistent: false }, (_event, filename) => {
        if (concernsConfig(filename, name)) this.#schedule();
      });
      this.#watcher.on("error", (err) =>
        this.opts.log.warn(
          { err: err.message, dir },
          "config watch failed; changes are found by polling and SIGHUP only",
        ),
      );
    } catch (err) {
      this.opts.log.warn(
        { err: (err as Error).message, dir },
        "cannot watch the config directory; changes are found by polling and SIGHUP only",
      );
    }
    const pollMs = this.opts.pollMs ?? 10_000;
    if (pollMs > 0) {
      this.#poll = setInterval(() => void this.reload("poll"), pollMs);
      this.#poll.unref();
    }
    process.on("SIGHUP", this.#onSignal);
  }

  stop(): void {
    this.#watcher?.close();
    clearTimeout(this.#debounce);
    clearInterval(this.#poll);
    process.off("SIGHUP", this.#onSignal);
  }

  /**
   * Reads the file and, if its text changed (or `force`), validates and applies it. Reloads run
   * one at a time, in the order asked. Resolves with whether a new config went into service.
   */
  reload(reason: ReloadReason, force = false): Promise<boolean> {
    const run = this.#queue.then(() => this.#reloadNow(reason, force));
    this.#queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  #schedule(): void {
    // A kubelet swap or an editor's save is several events within milliseconds: read once after
    // the first. Not postponed by later events: a stream of them would hold the reload back.
    if (this.#debounce) return;
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      void this.reload("watch");
    }, this.opts.debounceMs ?? 150);
    this.#debounce.unref();
  }

  async #reloadNow(reason: ReloadReason, force: boolean): Promise<boolean> {
    const { file, log } = this.opts;
    let loaded: LoadedConfig;
    try {
      const text = readFileSync(resolve(file), "utf8");
      const digest = digestOf(text);
      if (!force && digest === this.#lastTried) return false;
      this.#lastTried = digest;
      loaded = { config: parseConfig(text, file, this.opts.env, dirname(resolve(file))), text, digest };
    } catch (err) {
      if (err instanceof ConfigError) return this.#reject(reason, err.message, err.problems);
      // Unreadable (mid-swap, or deleted): try again on the next event rather than remembering it.
      this.#lastTried = null;
      return this.#reject(reason, `cannot read ${file}: ${(err as Error).message}`, []);
    }
    try {
      await this.opts.apply(loaded.config);
    } catch (err) {
      return this.#reject(reason, `the config is valid but could not be applied: ${(err as Error).message}`, []);
    }
    const now = Date.now();
    this.#text = loaded.text;
    this.#status = {
      ...this.#status,
      digest: loaded.digest,
      loadedAt: now,
      lastReloadAt: now,
      lastError: null,
      reloads: this.#status.reloads + 1,
    };
    log.info(
      {
        file,
        reason,
        digest: loaded.digest,
        routes: loaded.config.routes.length,
        upstreams: [...loaded.config.upstreams.keys()],
      },
      "config reloaded",
    );
    return true;
  }

  #reject(reason: ReloadReason, message: string, problems: ConfigProblem[]): false {
    const { file, log } = this.opts;
    this.#status = {
      ...this.#status,
      lastError: { at: Date.now(), message, problems },
      failures: this.#status.failures + 1,
    };
    log.error(
      {
        file,
        reason,
        digest: this.#status.digest,
        problems: problems.map((p) => `${file}:${p.line}:${p.column} ${p.field || "(top level)"}: ${p.message}`),
      },
      `config reload rejected; the last good config keeps serving: ${message.split("\n")[0]}`,
    );
    return false;
  }
}

/**
 * Whether a change in the config file's directory, as `fs.watch` names it, can concern the file
 * `configName`: the file itself (an edit, an editor's rename over it), one of the kubelet's
 * `..data`, `..data_tmp`, `..<timestamp>` entries of a mounted ConfigMap, or an event that names
 * nothing (some platforms). Anything else — a log, an editor's swap file — cannot.
 */
export function concernsConfig(filename: string | Buffer | null | undefined, configName: string): boolean {
  if (filename === null || filename === undefined) return true;
  const name = typeof filename === "string" ? filename : filename.toString();
  return name === configName || name.startsWith("..");
}

function digestOf(text: string): string {
  return createHash("sha256").update(text).digest("hex").slice(0, 12);
}
