/** What the gateway knows about one request while it handles it. */
import type { RouteConfig } from "./config/load.ts";

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
  peerIsTrusted: boolean;
  route?: RouteConfig;
  /** host:port of the endpoint that served the request, once chosen. */
  endpoint?: string;
  /** The replica that answered (its x-served-by), when it said. */
  servedBy?: string;
}
