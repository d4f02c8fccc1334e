/**
 * `tls.redirectHttp`: the plain listener sends clients to HTTPS with 308 (the method and body are
 * kept, unlike 301). Probes (/healthz, /readyz) are answered before this, so kubelet and load
 * balancers keep checking the plain port. A request a trusted proxy already received over HTTPS
 * (X-Forwarded-Proto: https from an address in trustedProxies) is served, not redirected: that is
 * a TLS-terminating load balancer in front.
 */
import type { RequestContext } from "../context.ts";
import { gatewayProblem } from "../errors.ts";

/** Whether a trusted proxy in front received this request over HTTPS. */
export function forwardedSecure(headers: Headers, ctx: RequestContext): boolean {
  if (!ctx.peerIsTrusted) return false;
  const proto = headers.get("x-forwarded-proto");
  if (!proto) return false;
  // The first value is the client's hop (each proxy appends).
  const comma = proto.indexOf(",");
  return (comma < 0 ? proto : proto.slice(0, comma)).trim().toLowerCase() === "https";
}

/** The host name of a Host header, without its port (`[::1]:8080` → `[::1]`). */
function hostName(host: string): string {
  if (host.startsWith("[")) {
    const end = host.indexOf("]");
    return end < 0 ? host : host.slice(0, end + 1);
  }
  const colon = host.indexOf(":");
  return colon < 0 ? host : host.slice(0, colon);
}

/** 308 to the same path and query over https on `port` (left out when 443). */
export function httpsRedirect(headers: Headers, ctx: RequestContext, port: number, requestId: string): Response {
  const host = headers.get("host");
  if (!host)
    return gatewayProblem({
      status: 400,
      title: "Bad request",
      requestId,
      detail: "this listener redirects to HTTPS and needs a Host header to say where",
    });
  const location = `https://${hostName(host)}${port === 443 ? "" : `:${port}`}${ctx.path}${ctx.search}`;
  return new Response(null, { status: 308, headers: { location } });
}
