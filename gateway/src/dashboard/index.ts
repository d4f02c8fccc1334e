/**
 * The live dashboard of the gateway tier, on the admin port:
 *
 *   GET /dashboard                    the page (static; it follows the events below)
 *   GET /dashboard/assets/:name       its script, style and uPlot, embedded
 *   GET /dashboard/events             Server-Sent Events: the whole tier, merged, every second
 *   GET /dashboard/snapshot.json      this gateway alone (?seconds=1…300 of route history), what
 *                                     the other replicas fetch from it
 *
 * `Dashboard` owns the per-route figures the request path feeds (traffic.ts, through the
 * telemetry's RouteRecorder) and the merged view of every replica the peer directory lists
 * (tier.ts, ../peers.ts), which runs only while a page is open. The admin app (../admin/app.ts)
 * mounts its routes.
 */
import { Elysia } from "elysia";
import type { ServiceIdentity } from "../../../lib/env.ts";
import type { Lifecycle } from "../../../lib/lifecycle.ts";
import { problemResponse } from "../../../lib/problem.ts";
import type { ConfigReloader } from "../config/reload.ts";
import type { RateLimiter } from "../ratelimit/limiter.ts";
import type { Gateway } from "../server.ts";
import { dashboardAsset, dashboardPage } from "./assets.ts";
import { tierEventStream } from "./events.ts";
import type { PeerDirectory } from "../peers.ts";
import { type GatewaySnapshot, type SnapshotSources, takeSnapshot } from "./snapshot.ts";
import { TierView } from "./tier.ts";
import { TrafficRecorder, WINDOW_SECONDS } from "./traffic.ts";

export interface DashboardOptions {
  gateway: Gateway;
  identity: ServiceIdentity;
  lifecycle: Lifecycle;
  peers: PeerDirectory;
  rateLimiter?: RateLimiter;
  reloader?: ConfigReloader;
  /** The per-route figures, when made before the dashboard (main.ts hands the same to the telemetry). */
  traffic?: TrafficRecorder;
  /** ADMIN_TOKEN: the peers' snapshot routes require it (../admin/auth.ts). */
  peerToken?: string;
}

export class Dashboard {
  /** The request path records into it (the telemetry's RouteRecorder). */
  readonly traffic: TrafficRecorder;
  readonly tier: TierView;
  readonly #sources: SnapshotSources;

  constructor(opts: DashboardOptions) {
    const { reloader, rateLimiter } = opts;
    this.traffic = opts.traffic ?? new TrafficRecorder();
    this.#sources = { ...opts, traffic: this.traffic, ...(reloader ? { reloadStatus: () => reloader.status } : {}) };
    if (rateLimiter) {
      // Denials as the limiter counts them: a 429 from an upstream is not one.
      const { stats } = rateLimiter;
      const previous = stats.onDecision;
      stats.onDecision = (route, outcome, source) => {
        previous?.(route, outcome, source);
        if (outcome === "denied") this.traffic.deny(route);
      };
    }
    this.tier = new TierView({
      directory: opts.peers,
      local: (seconds) => this.snapshot(seconds),
      selfInstance: opts.identity.instance,
      ...(opts.peerToken ? { token: opts.peerToken } : {}),
    });
  }

  /** Ends the open event streams (before the admin listener stops: it waits for them). */
  close(): void {
    this.tier.close();
  }

  snapshot(seconds: number = WINDOW_SECONDS): GatewaySnapshot {
    return takeSnapshot(this.#sources, seconds);
  }

  /** The dashboard's routes, for the admin app. */
  routes() {
    return new Elysia()
      .get("/dashboard", () => dashboardPage())
      .get(
        "/dashboard/assets/:name",
        ({ params }) =>
          dashboardAsset(params.name) ??
          problemResponse({ title: "Not Found", status: 404, detail: `no dashboard asset ${params.name}` }),
      )
      .get("/dashboard/events", ({ request }) => tierEventStream(this.tier, request.signal))
      .get("/dashboard/snapshot.json", ({ query }) => {
        const raw = query.seconds;
        // Digits only: Number() would also take "1e2", "0x10" or " 5".
        const seconds = raw === undefined ? WINDOW_SECONDS : /^\d{1,4}$/.test(raw) ? Number(raw) : Number.NaN;
        if (!Number.isInteger(seconds) || seconds < 1 || seconds > WINDOW_SECONDS) {
          return problemResponse({
            title: "Bad request",
            status: 400,
            detail: `seconds must be a whole number from 1 to ${WINDOW_SECONDS}, got ${JSON.stringify(raw)}`,
          });
        }
        return Response.json(this.snapshot(seconds), { headers: { "cache-control": "no-store" } });
      });
  }
}
