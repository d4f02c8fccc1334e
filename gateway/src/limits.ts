/**
 * Limits Bun takes from outside `Bun.serve`'s options, and the per-request deadline that keeps
 * the idle timeout from cutting a slow route short.
 *
 * Measured on Bun 1.4.5:
 *   - The request line + headers limit is the process-wide `http.maxHeaderSize` (the same
 *     setting as `--max-http-header-size`, default 16 KiB); past it Bun answers 431. Setting it
 *     at run time applies to connections opened afterwards.
 *   - `idleTimeout` also bounds a request whose handler is still waiting (the client gets a closed
 *     connection, not a 504) and the reading of its body (bytes trickling in do not reset it). A
 *     client that trickles its *headers* is cut by uWS after ~10–12 s whatever the setting.
 *   - Timers fire on a 4 s grid: `idleTimeout: 2` closes after ~4 s.
 */
import http from "node:http";
import type { Server } from "bun";

export function applyHeaderLimit(maxHeaderBytes: number): void {
  (http as { maxHeaderSize: number }).maxHeaderSize = maxHeaderBytes;
}

/** Bun's largest per-connection timeout, in seconds. */
const MAX_TIMEOUT_SEC = 255;

/**
 * Once a request's body is read, let it wait for its route's timeout (and answer 504 then)
 * rather than be cut at the idle timeout. Only routes slower than the idle timeout pay the call.
 * Past Bun's largest timeout the connection timer is switched off: the route timeout still
 * bounds the wait.
 */
export function extendDeadline(
  server: Server<unknown>,
  req: Request,
  routeTimeoutMs: number,
  idleTimeoutSec: number,
): void {
  if (routeTimeoutMs + 1000 <= idleTimeoutSec * 1000) return;
  const seconds = Math.ceil(routeTimeoutMs / 1000) + 2;
  server.timeout(req, seconds > MAX_TIMEOUT_SEC ? 0 : seconds);
}
