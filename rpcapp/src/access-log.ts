/**
 * The access line rpcapp writes when an RPC ends: one JSON line with the schema of every other
 * line (lib/log.ts) — `level`, `time`, the logger's bindings (`service`, `version`, `instance`),
 * `trace_id`, `span_id`, `request_id`, then `method`, `grpc_code`, `duration_ms`, `peer`, and
 * `msg: "rpc"` last, as pino orders them.
 *
 * Built here as one string and handed to the logger's own destination, instead of going through
 * `log.info(fields, "rpc")`: per line, pino calls the mixin (which looks up the active context and
 * allocates its fields), merges it into the fields object, runs the redaction pass and
 * stringifies the result. None of that is needed for fields we choose ourselves, none of which can
 * hold a credential; the logger's serialised bindings and time function are pino's own
 * (`pino.symbols`, its integration API), so the line cannot drift from the rest of the output.
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

export interface AccessEntry {
  /** The method as a JSON string, quotes included (serialised once per method). */
  quotedMethod: string;
  /** The status code's name, `OK`, `INVALID_ARGUMENT`… (JSON-safe: letters and underscores). */
  codeName: string;
  seconds: number;
  /** The server span's ids; absent when the call ended before its metadata arrived. */
  span: SpanContext | undefined;
  /** Checked by lib/request-id.ts against a pattern with no JSON-special character, or a UUID. */
  requestId: string;
  peer: string;
}

export class AccessLog {
  readonly #log: Logger & PinoParts;
  readonly #time: () => string;
  #timeMs = -1;
  #timeField = "";

  /** `log` must come from lib/log.ts `createLogger` (level labels, `msg` as the message key). */
  constructor(log: Logger) {
    this.#log = log as Logger & PinoParts;
    const time = this.#log[symbols.timeSym];
    // With ISO times (lib/log.ts), lines in the same millisecond share one formatted time: under
    // load many calls end in the same millisecond, and formatting a Date showed in the profile.
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

  write(level: "info" | "error", entry: AccessEntry): void {
    const log = this.#log;
    if (!log.isLevelEnabled(level)) return;
    const ids = entry.span ? `,"trace_id":"${entry.span.traceId}","span_id":"${entry.span.spanId}"` : "";
    const durationMs = Math.round(entry.seconds * 1_000_000) / 1000;
    log[symbols.streamSym].write(
      `{"level":"${level}"${this.#time()}${log[symbols.chindingsSym]}${ids},"request_id":"${entry.requestId}",` +
        `"method":${entry.quotedMethod},"grpc_code":"${entry.codeName}","duration_ms":${durationMs},` +
        `"peer":${JSON.stringify(entry.peer)},"msg":"rpc"}\n`,
    );
  }
}
