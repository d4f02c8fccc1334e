/**
 * Structured logging: JSON lines on stdout, one schema for every service.
 *
 * pino writes synchronously to fd 1 here: its transports run in worker threads, which break
 * inside a `bun build --compile` binary (docs/design.md, "Known traps"). Pretty output is a pipe, not a mode:
 * `make dev` pipes every process through scripts/stack/pretty.ts.
 */
import pino, { type Logger } from "pino";
import type { ServiceIdentity } from "./env.ts";
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
}

export function createLogger(identity: ServiceIdentity, opts: LoggerOptions = {}): Logger {
  return pino(
    {
      level: opts.level ?? process.env.LOG_LEVEL ?? "info",
      base: { service: identity.service, version: identity.version, instance: identity.instance },
      timestamp: pino.stdTimeFunctions.isoTime,
      messageKey: "msg",
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACTED_PATHS, censor: "[redacted]" },
      mixin: opts.mixin ?? (activeLogFields as () => Record<string, unknown>),
    },
    opts.destination ?? pino.destination({ fd: 1, sync: true }),
  );
}
