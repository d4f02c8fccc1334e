/**
 * Structured logging: JSON lines on stdout, one schema for every service.
 *
 * pino writes synchronously to fd 1 here: its transports run in worker threads, which break
 * inside a `bun build --compile` binary (docs/design.md, "Known traps"). Pretty output is a pipe, not a mode:
 * `make dev` pipes every process through scripts/stack/pretty.ts.
 */
import { writeSync } from "node:fs";
import pino, { type Logger } from "pino";
import { envEnum, type ServiceIdentity } from "./env.ts";
import { activeLogFields } from "./telemetry/spans.ts";

export type { Logger };

/** Fields that may carry credentials: never written, whatever a caller passes in. */
export const REDACTED_PATHS = [
  "authorization",
  "cookie",
  "set-cookie",
  "x-api-key",
  "headers.authorization",
  "headers.cookie",
  "headers['set-cookie']",
  "headers['x-api-key']",
  "req.headers.authorization",
  "req.headers.cookie",
  "req.headers['x-api-key']",
];

export interface LoggerOptions {
  level?: string;
  /**
   * Adds fields to every line. By default: `trace_id`, `span_id` and `request_id` of the request
   * being handled (lib/telemetry/spans.ts), so lines from any module correlate without passing ids.
   */
  mixin?: () => Record<string, unknown>;
  /** Where lines go; stdout unless a test captures them. */
  destination?: pino.DestinationStream;
  /**
   * Writes stdout through one buffer, in batches, instead of one write(2) per line;
   * `bufferedLogger(log)` then gives the lines that may wait — a line per request, the gateway's
   * access log (docs/design.md, "Hot-path costs") — which go out when 4 KiB have gathered, every
   * this many ms, and at exit. This logger's own lines are written at once (the buffer is flushed
   * after each), in order with the buffered ones. A crash can lose the last interval's buffered
   * lines. Unset or 0: every line is written synchronously, and `bufferedLogger(log)` is `log`.
   */
  flushIntervalMs?: number;
}

/** Characters gathered before a buffered logger writes without waiting for its interval. */
const BUFFERED_WRITE_CHARS = 4096;

/** The sibling that writes to the same buffer without flushing it, per logger made with flushIntervalMs. */
const bufferedSiblings = new WeakMap<Logger, Logger>();

/**
 * Lines gathered in memory and written to a file descriptor together, synchronously: in order,
 * nothing in flight at exit, one write(2) per ~4 KiB. Not sonic-boom's asynchronous mode (what
 * `pino.destination({ sync: false })` gives): it measures the byte length of its growing pending
 * string on every line, which cost more per line under Bun 1.4.5 than writing each line
 * synchronously (11.6 vs 10.8 µs per access line; this: see bench/README.md, "What we tried").
 */
class LineBuffer {
  #lines: string[] = [];
  #chars = 0;

  constructor(
    private readonly fd: number,
    intervalMs: number,
  ) {
    setInterval(() => this.flush(), intervalMs).unref();
    process.on("exit", () => this.flush());
  }

  write(line: string): void {
    this.#lines.push(line);
    this.#chars += line.length;
    if (this.#chars >= BUFFERED_WRITE_CHARS) this.flush();
  }

  flush(): void {
    if (this.#lines.length === 0) return;
    const bytes = Buffer.from(this.#lines.length === 1 ? this.#lines[0]! : this.#lines.join(""));
    this.#lines = [];
    this.#chars = 0;
    let offset = 0;
    while (offset < bytes.length) {
      try {
        offset += writeSync(this.fd, bytes, offset);
      } catch (err) {
        // A full non-blocking pipe: wait for the reader, as a synchronous logger would.
        if ((err as NodeJS.ErrnoException).code === "EAGAIN") Bun.sleepSync(1);
        // Anything else (EPIPE: nobody reads stdout any more): drop the lines rather than fail requests.
        else return;
      }
    }
  }
}

/** pino's levels, as LOG_LEVEL takes them. */
const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** LOG_LEVEL, checked (EnvError naming it); unset or empty: info. */
export function logLevelFromEnv(env: Record<string, string | undefined> = process.env): string {
  return envEnum("LOG_LEVEL", LOG_LEVELS, "info", env);
}

/** `opts.level`, else LOG_LEVEL; throws EnvError for a LOG_LEVEL pino has no level for. */
export function createLogger(identity: ServiceIdentity, opts: LoggerOptions = {}): Logger {
  const options: pino.LoggerOptions = {
    level: opts.level ?? logLevelFromEnv(),
    base: { service: identity.service, version: identity.version, instance: identity.instance },
    timestamp: pino.stdTimeFunctions.isoTime,
    messageKey: "msg",
    formatters: { level: (label) => ({ level: label }) },
    redact: { paths: REDACTED_PATHS, censor: "[redacted]" },
    mixin: opts.mixin ?? (activeLogFields as () => Record<string, unknown>),
  };
  if (opts.destination || !opts.flushIntervalMs)
    return pino(options, opts.destination ?? pino.destination({ fd: 1, sync: true }));
  const buffer = new LineBuffer(1, opts.flushIntervalMs);
  const log = pino(options, {
    write(line: string) {
      buffer.write(line);
      buffer.flush();
    },
  });
  bufferedSiblings.set(log, pino(options, { write: (line: string) => buffer.write(line) }));
  return log;
}

/**
 * A logger for lines that may wait in `log`'s buffer (see LoggerOptions.flushIntervalMs): same
 * fields, level and redaction; `log` itself when it was made without a buffer. Level changes
 * made later on `log` are not followed.
 */
export function bufferedLogger(log: Logger): Logger {
  return bufferedSiblings.get(log) ?? log;
}
