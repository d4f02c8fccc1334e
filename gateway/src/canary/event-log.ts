/**
 * The log lines of a canary, one per change: started, each step's verdict with its figures, a
 * failed analysis (warn: traffic moved back to the stable version), promoted, paused, reset.
 */
import type { Logger } from "../../../lib/log.ts";
import type { CanaryEvent } from "./controller.ts";

export function logCanaryEvent(log: Logger, upstream: string, event: CanaryEvent): void {
  const base = { upstream, canary: event.type };
  switch (event.type) {
    case "started":
      log.info({ ...base, version: event.version, weight: event.weight }, "canary started");
      break;
    case "step":
      log.info(
        { ...base, weight: event.weight, step: event.report },
        `canary step ${event.report.step} passed (${event.report.weight}%); now ${event.weight}%`,
      );
      break;
    case "promoted":
      log.info({ ...base, version: event.version, reason: event.reason }, "canary promoted: every request to it");
      break;
    case "aborted":
      log.warn(
        { ...base, version: event.version, reason: event.reason, ...(event.report ? { step: event.report } : {}) },
        "canary aborted: its weight is 0, the stable version takes every request it can serve",
      );
      break;
    case "weight":
      log.info({ ...base, version: event.version, weight: event.weight }, "canary weight set by hand (steps paused)");
      break;
    default:
      log.info({ ...base, version: event.version ?? null }, `canary ${event.type}`);
  }
}
