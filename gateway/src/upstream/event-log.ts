/**
 * The log lines of an upstream's state changes, one per change: what an operator reads when
 * traffic moves (ejections, breakers, health, discovery). A name that has no addresses is a state
 * (a spare slot, a Service with no ready pod), not a failure: debug when first seen, info when a
 * name loses its addresses, never a warning; a DNS failure is.
 */
import type { Logger } from "../../../lib/log.ts";
import type { UpstreamEvent } from "./upstream.ts";

export function logUpstreamEvent(log: Logger, event: UpstreamEvent): void {
  const base = { upstream: event.upstream };
  switch (event.type) {
    case "ejected":
      log.warn({ ...base, endpoint: event.endpoint.address, ejection_ms: event.durationMs }, "endpoint ejected");
      break;
    case "readmitted":
      log.info({ ...base, endpoint: event.endpoint.address, reason: event.reason }, "endpoint readmitted");
      break;
    case "breaker":
      log[event.state === "closed" ? "info" : "warn"](
        { ...base, endpoint: event.endpoint.address, state: event.state },
        "circuit breaker",
      );
      break;
    case "health":
      log.info(
        {
          ...base,
          endpoint: event.endpoint.address,
          health: event.health,
          // Why the check that tipped it failed (a TLS refusal, a status, a timeout).
          ...(event.reason ? { reason: event.reason } : {}),
        },
        "endpoint health changed",
      );
      break;
    case "endpoints":
      log.info({ ...base, added: event.added, removed: event.removed }, "endpoints discovered");
      break;
    case "resolve-failed":
      log.warn({ ...base, host: event.host, error: event.error }, "endpoint discovery failed");
      break;
    case "no-addresses":
      // A spare slot or a Service with no ready pod: worth a line only when a name loses its addresses.
      log[event.hadAddresses ? "info" : "debug"](
        { ...base, host: event.host, error: event.error },
        "endpoint host has no addresses",
      );
      break;
  }
}
