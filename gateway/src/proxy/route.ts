/**
 * The HTTP half of the request path (server.ts hands it a routed request): the upstream path
 * (prefix rewrite) and outgoing headers, the tries through upstream/dispatch.ts with the HTTP
 * transport (./http.ts), and the answer — the upstream's response as it streams, or the
 * gateway's problem+json when no try got one or it is larger than the limit.
 */
import type { RequestContext, RoutedRequest } from "../context.ts";
import { gatewayProblem } from "../errors.ts";
import type { GatewayTelemetry } from "../telemetry/index.ts";
import { clientGoneProblem, dispatch, noEndpointProblem } from "../upstream/dispatch.ts";
import { isIdempotentMethod } from "../upstream/outcome.ts";
import { trimTrailingSlash } from "../routing/router.ts";
import { forwardedHeaders } from "./headers.ts";
import { InvalidUpstreamResponse } from "./http.ts";
import { limitResponseSize } from "./response-limit.ts";

export interface HttpRouteDeps {
  telemetry: GatewayTelemetry;
  /** This gateway's instance name, for the `Via` header. */
  instance: string;
}

export async function proxyHttp(routed: RoutedRequest, deps: HttpRouteDeps): Promise<Response> {
  // Taken apart here, not in the parameter list: destructured parameters cost an async function a
  // scope object more per call (bench/census.ts).
  const { req, ctx, route, upstream, body, limits } = routed;
  const upstreamPath =
    route.http?.rewritePrefix !== undefined ? rewrite(ctx.path, route.path, route.http.rewritePrefix) : ctx.path;
  const pathAndQuery = upstreamPath + ctx.search;
  const headers = req.headers;
  const options = { client: req, extraHeaders: gatewayRequestHeaders(headers, ctx, deps.instance), stamp: ctx.stamp };
  route.auth?.stripCredentials(headers);
  const method = req.method;
  // The client's request (`req`): a try whose client went away is cancelled, and a retry is not
  // sent for one already gone (upstream/client-watch.ts).
  const outcome = await dispatch(
    upstream,
    route,
    ctx,
    isIdempotentMethod(method),
    (endpoint, timeoutMs) => endpoint.httpPool().send(method, pathAndQuery, headers, body, timeoutMs, limits, options),
    deps.telemetry.httpTries(upstream.name, method, pathAndQuery, headers),
    upstream.stickyKey(req.headers),
    req,
  );
  const requestId = ctx.id;
  const extensions = { upstream: upstream.name };
  switch (outcome.kind) {
    case "no-endpoint":
      return noEndpointProblem(upstream.name, outcome, requestId);
    case "cancelled":
      return clientGoneProblem(upstream.name, ctx.endpoint, requestId);
    case "response": {
      ctx.servedBy = outcome.response.headers.get("x-served-by") ?? undefined;
      const maxBytes = limits.maxResponseBytes;
      const limited = limitResponseSize(outcome.response, maxBytes);
      if (!limited.ok)
        return gatewayProblem({
          status: 502,
          title: "Upstream response too large",
          requestId,
          detail: `${upstream.name} answered with ${limited.declared} bytes; the limit is ${maxBytes}`,
          extensions,
        });
      ctx.stamped = true;
      return limited.response;
    }
    case "timeout":
      return gatewayProblem({
        status: 504,
        title: "Upstream timed out",
        requestId,
        detail: `${upstream.name} did not answer within ${route.timeoutMs} ms`,
        extensions,
      });
    case "connect-error":
    case "error":
      return gatewayProblem({
        status: 502,
        title: outcome.error instanceof InvalidUpstreamResponse ? outcome.error.title : "Upstream unavailable",
        requestId,
        detail: `${upstream.name} (${ctx.endpoint}): ${outcome.error.message}`,
        extensions,
      });
  }
}

/**
 * The outgoing request's own headers, as lines the upstream client writes after the client's
 * (`headers`, changed in place: no copy), whose copies of those names are removed here.
 */
function gatewayRequestHeaders(headers: Headers, ctx: RequestContext, gatewayInstance: string): [string, string][] {
  // Hop-by-hop headers went in server.ts, before the guards.
  const lines = forwardedHeaders(headers, {
    clientIp: ctx.clientIp,
    peer: ctx.peer,
    peerIsTrusted: ctx.peerIsTrusted,
    proto: ctx.secure ? "https" : "http",
  });
  // The client sets Host to the endpoint's address; the client's Host travels as X-Forwarded-Host.
  headers.delete("host");
  headers.delete("x-request-id");
  lines.push(["x-request-id", ctx.id]);
  // RFC 9110 §7.6.3: each proxy appends itself to the chain it received.
  const via = headers.get("via");
  if (via !== null) headers.delete("via");
  lines.push(["via", via ? `${via}, 1.1 ${gatewayInstance}` : `1.1 ${gatewayInstance}`]);
  return lines;
}

/**
 * The upstream path: the route's path (matched as the router does, trailing slashes aside)
 * replaced by `replacement` — on an exact route the whole path, on a prefix route its first
 * segments. The two join with one slash: `/v2/` for `/old` makes `/old/users` `/v2/users`.
 */
function rewrite(path: string, routePath: string, replacement: string): string {
  const prefix = trimTrailingSlash(routePath);
  // Empty, or from a slash on: the router matches whole segments.
  const rest = path.slice(prefix === "/" ? 0 : prefix.length);
  if (rest === "") return replacement;
  return (replacement.endsWith("/") ? replacement.slice(0, -1) : replacement) + rest;
}
