/**
 * Access lines written as one string, with the schema of every other line (lib/log.ts): `level`,
 * `time`, the logger's bindings (`service`, `version`, `instance`), then the caller's members, and
 * `msg` last, as pino orders them — handed to the logger's own destination instead of going
 * through `log.info(fields, msg)`. Per line, pino calls the mixin (which looks up the active
 * context and allocates its fields), merges it into the fields object, runs the redaction pass
 * and stringifies the result: ~70 objects, 50 of them strings, for the gateway's access line
 * (bench/census.ts). None of that is needed for members the services build themselves from fields
 * that cannot hold a credential. The logger's serialised bindings, time function and destination
 * are pino's own (`pino.symbols`, its integration API), so the line cannot drift from the rest
 * of the output. Used by the gateway's access log (gateway/src/telemetry/access-log.ts) and
 * rpcapp's (rpcapp/src/access-log.ts).
 */
import type { SpanContext } from "@opentelemetry/api";
import pino, { type Logger } from "pino";

const symbols = pino.symbols;

/** The parts of a pino logger this writer uses (see `pino.symbols`). */
interface PinoParts {
  /** The bindings as serialised JSON members, each with a leading comma. */
  [symbols.chindingsSym]: string;
  /** `,"time":"…"` for the logger's timestamp setting ("" without one). */
  [symbols.timeSym]: () => string;
  [symbols.streamSym]: pino.DestinationStream;
}

export class AccessLineWriter {
  readonly #log: Logger & PinoParts;
  readonly #time: () => string;
  #timeMs = -1;
  #timeField = "";

  /** `log` must come from lib/log.ts `createLogger` (level labels, `msg` as the message key). */
  constructor(log: Logger) {
    this.#log = log as Logger & PinoParts;
    const time = this.#log[symbols.timeSym];
    // With ISO times (lib/log.ts), lines in the same millisecond share one formatted time: under
    // load many requests end in the same millisecond, and formatting a Date showed in the profile.
    this.#time = time === pino.stdTimeFunctions.isoTime ? () => this.#isoTime() : time;
  }

  #isoTime(): string {
    const now = Date.now();
    if (now !== this.#timeMs) {
      this.#timeMs = now;
      this.#timeField = `,"time":"${new Date(now).toISOString()}"`;
    }
    return this.#timeField;
  }

  /** `,"trace_id":…,"span_id":…` for a span's ids (hex, nothing to escape), or "" without one. */
  static spanMembers(span: SpanContext | undefined): string {
    return span ? `,"trace_id":"${span.traceId}","span_id":"${span.spanId}"` : "";
  }

  /** Whether a line at `level` would be written (the logger's level, which may change). */
  enabled(level: "info" | "error"): boolean {
    return this.#log.isLevelEnabled(level);
  }

  /**
   * Writes `{"level":…,"time":…,<bindings><members>,"msg":<msg>}`. `members`: serialised JSON
   * members, each with a leading comma; `quotedMsg`: the message as a JSON string.
   */
  write(level: "info" | "error", members: string, quotedMsg: string): void {
    const log = this.#log;
    log[symbols.streamSym].write(
      `{"level":"${level}"${this.#time()}${log[symbols.chindingsSym]}${members},"msg":${quotedMsg}}\n`,
    );
  }
}
