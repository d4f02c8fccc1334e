/**
 * rpcapp's small HTTP side on METRICS_PORT: liveness, readiness, version and Prometheus metrics for
 * probes, scrapers and people, beside the gRPC health service. Kept separate from the gRPC port so
 * probes and scrapes never queue behind RPCs.
 */
import type { Server } from "bun";
import type { Registry } from "prom-client";
import type { ServiceIdentity } from "../../lib/env.ts";
import type { Lifecycle } from "../../lib/lifecycle.ts";
import { problemResponse } from "../../lib/problem.ts";
import { requestIdOrNew } from "../../lib/request-id.ts";
import { metricsResponse } from "../../lib/telemetry/metrics.ts";

export interface StatusServerOptions {
  host: string;
  port: number;
  identity: ServiceIdentity;
  lifecycle: Lifecycle;
  /** Served on /metrics when given. */
  registry?: Registry;
}

export function startStatusServer(opts: StatusServerOptions): Server<undefined> {
  const { identity, lifecycle } = opts;

  // Every answer carries the identity headers and echoes (or creates) the request id.
  const addHeaders = (req: Request, res: Response) => {
    res.headers.set("x-served-by", identity.instance);
    res.headers.set("x-service-version", identity.version);
    res.headers.set("x-request-id", requestIdOrNew(req.headers.get("x-request-id")));
    return res;
  };
  const withHeaders = (handler: (req: Request) => Response) => (req: Request) => addHeaders(req, handler(req));
  const { registry } = opts;

  return Bun.serve({
    hostname: opts.host,
    port: opts.port,
    routes: {
      "/healthz": withHeaders(() => Response.json({ status: "ok" })),
      "/readyz": withHeaders(() =>
        lifecycle.isReady()
          ? Response.json({ status: "ready" })
          : problemResponse({
              title: "Not ready",
              status: 503,
              detail: lifecycle.isShuttingDown() ? "rpcapp is draining before shutdown" : "rpcapp is starting",
            }),
      ),
      "/version": withHeaders(() =>
        Response.json({ service: identity.service, version: identity.version, instance: identity.instance }),
      ),
      "/metrics": async (req: Request) =>
        addHeaders(
          req,
          registry
            ? await metricsResponse(registry)
            : problemResponse({ title: "Not Found", status: 404, detail: "this server was started without metrics" }),
        ),
    },
    fetch: withHeaders((req) =>
      problemResponse({
        title: "Not Found",
        status: 404,
        detail: `no route for ${new URL(req.url).pathname}; try /healthz, /readyz, /version or /metrics`,
      }),
    ),
  });
}
