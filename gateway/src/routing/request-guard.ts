/**
 * Requests refused before routing, whatever the routes say:
 *
 *   - a method the gateway does not route (TRACE, CONNECT, WebDAV's PROPFIND, …) → 405 with
 *     `Allow`. RFC 9110 would allow 501 for a method the server does not implement; 405 keeps
 *     every answer to a client's mistake a 4xx. (Bun's parser already closes the connection on
 *     methods it does not know at all, e.g. `FOO` or a lower-case `get`.)
 *   - a `Host` that is not one host[:port] → 400. Bun joins repeated Host headers with ", "
 *     (RFC 9112 §3.2 requires a 400) and passes a Host with a path in it, which would otherwise
 *     travel upstream as X-Forwarded-Host.
 */
import { HTTP_METHODS } from "../config/schema.ts";

export interface Refusal {
  status: 400 | 405;
  title: string;
  detail: string;
  headers?: Record<string, string>;
}

const ROUTABLE: ReadonlySet<string> = new Set(HTTP_METHODS);
const ALLOW = HTTP_METHODS.join(", ");
/**
 * A host (a name, IPv4 or [IPv6]) and an optional port; empty is legal (HTTP/1.0). RFC 3986's
 * reg-name also admits `!$&'()*+,;=`, which no DNS name holds and which would reach the upstream
 * in X-Forwarded-Host: `a,b` reads as a list there.
 */
const HOST = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%]*)(?::\d{1,5})?$/;

export function refuseRequest(method: string, host: string | null): Refusal | undefined {
  if (!ROUTABLE.has(method))
    return {
      status: 405,
      title: "Method not allowed",
      detail: `${method} is not served by this gateway`,
      headers: { allow: ALLOW },
    };
  if (host !== null && !HOST.test(host))
    return { status: 400, title: "Bad request", detail: "the Host header is not one host[:port]" };
  return undefined;
}
