/**
 * The access line rpcapp writes when an RPC ends: one JSON line with the schema of every other
 * line (lib/log.ts) — `level`, `time`, the logger's bindings (`service`, `version`, `instance`),
 * `trace_id`, `span_id`, `request_id`, then `method`, `grpc_code`, `duration_ms`, `peer`, and
 * `msg: "rpc"` last, as pino orders them.
 *
 * Built as one string by lib/access-line.ts (why: there) instead of `log.info(fields, "rpc")`.
 */
import type { SpanContext } from "@opentelemetry/api";
import type { Logger } from "pino";
import { AccessLineWriter } from "../../lib/access-line.ts";

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
  readonly #writer: AccessLineWriter;

  /** `log` must come from lib/log.ts `createLogger` (level labels, `msg` as the message key). */
  constructor(log: Logger) {
    this.#writer = new AccessLineWriter(log);
  }

  /** Whether a line at `level` would be written: when not, the caller need not gather its entry. */
  enabled(level: "info" | "error"): boolean {
    return this.#writer.enabled(level);
  }

  write(level: "info" | "error", entry: AccessEntry): void {
    if (!this.#writer.enabled(level)) return;
    const durationMs = Math.round(entry.seconds * 1_000_000) / 1000;
    this.#writer.write(
      level,
      `${AccessLineWriter.spanMembers(entry.span)},"request_id":"${entry.requestId}","method":${entry.quotedMethod},"grpc_code":"${entry.codeName}",` +
        `"duration_ms":${durationMs},"peer":${JSON.stringify(entry.peer)}`,
      '"rpc"',
    );
  }
}
