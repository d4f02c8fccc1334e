/**
 * With TLS on, webapp's plain-HTTP side on METRICS_PORT: /healthz, /readyz and /metrics, because
 * kubelet probes and Prometheus present no client certificate to the mutual-TLS PORT.
 *
 * The same Elysia app answers them (its hooks, its readiness, its registry), so nothing here can
 * drift from what PORT serves; every other path is 404 on this port, so the projects are reachable
 * over TLS only.
 */
import type { Server } from "bun";
import type { ServiceIdentity } from "../../lib/env.ts";
import { problemResponse } from "../../lib/problem.ts";
import { requestIdOf } from "../../lib/request-id.ts";

/** What METRICS_PORT serves; Elysia answers each with a trailing slash too. */
export const STATUS_PATHS: ReadonlySet<string> = new Set(["/healthz", "/readyz", "/metrics"]);

export interface StatusListenerOptions {
  host: string;
  port: number;
  /** The Elysia app's `fetch`: answers the status paths. */
  fetch: (request: Request) => Response | Promise<Response>;
  identity: ServiceIdentity;
}

function pathOf(url: string): string {
  const path = new URL(url).pathname;
  return path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
}

export function startStatusListener(opts: StatusListenerOptions): Server<undefined> {
  const { fetch, identity } = opts;
  return Bun.serve({
    hostname: opts.host,
    port: opts.port,
    // Like PORT without TLS: a second webapp on a taken port must fail, not share it.
    reusePort: false,
    idleTimeout: 30,
    fetch: (request) => {
      const path = pathOf(request.url);
      if (STATUS_PATHS.has(path)) return fetch(request);
      return problemResponse(
        {
          title: "Not Found",
          status: 404,
          detail: `no route for ${request.method} ${path} on this port, which serves only ${[...STATUS_PATHS].join(", ")}; the API is on PORT, over TLS`,
        },
        {
          "x-served-by": identity.instance,
          "x-service-version": identity.version,
          "x-request-id": requestIdOf(request.headers),
        },
      );
    },
  });
}
