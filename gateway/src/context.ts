/** What the gateway knows about one request while it handles it. */
import type { GatewayConfig, RouteConfig } from "./config/load.ts";
import type { HeaderPairs } from "./proxy/http.ts";
import type { Upstream } from "./upstream/upstream.ts";

export interface RequestContext {
  id: string;
  /** performance.now() at arrival. */
  start: number;
  method: string;
  /** Normalised path (what routes match and upstreams receive). */
  path: string;
  /** Query string including the leading "?", or "". */
  search: string;
  clientIp: string;
  /** The direct peer's address (normalised): the client, or the trusted proxy in front. */
  peer: string;
  peerIsTrusted: boolean;
  /** Arrived on the HTTPS listener (X-Forwarded-Proto: https). */
  secure: boolean;
  route?: RouteConfig;
  /** host:port of the endpoint that served the request, once chosen. */
  endpoint?: string;
  /** The replica that answered (its x-served-by), when it said. */
  servedBy?: string;
  /** A /healthz or /readyz probe, answered by the gateway itself (not access-logged unless LOG_PROBES). */
  probe?: boolean;
  /** The gateway's own headers on every answer: x-request-id, x-gateway, x-gateway-version. */
  stamp: HeaderPairs;
  /** The answer carries `stamp` already (the upstream client put it in the header list it came with). */
  stamped: boolean;
}

/**
 * A request that passed the guards, handed to its route's transport half (proxy/route.ts,
 * grpc/route.ts) with the body read and checked, and the config state it started with: a reload
 * mid-request changes neither its upstream nor its limits.
 */
export interface RoutedRequest {
  req: Request;
  ctx: RequestContext;
  route: RouteConfig;
  upstream: Upstream;
  body: Uint8Array | null;
  limits: GatewayConfig["limits"];
}
