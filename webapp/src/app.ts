/**
 * webapp's HTTP surface: the cross-cutting hooks (identity headers, request id, trace span,
 * metrics, access log — probes left out unless LOG_PROBES — one error mapper), then every route
 * in one block — the route table is the index of the service.
 */
import { type Context, trace, type Tracer } from "@opentelemetry/api";
import { Elysia, StatusMap } from "elysia";
import type { Registry } from "prom-client";
import type { ServiceIdentity } from "../../lib/env.ts";
import type { Fault } from "../../lib/fault.ts";
import type { Lifecycle } from "../../lib/lifecycle.ts";
import type { Logger } from "../../lib/log.ts";
import { problemResponse } from "../../lib/problem.ts";
import { createMetricsRegistry, HttpServerMetrics, metricsResponse } from "../../lib/telemetry/metrics.ts";
import { endHttpSpan, headersGetter, logFieldsOf, startServerSpan } from "../../lib/telemetry/spans.ts";
import { allowedMethodsOf, type AllowedMethods } from "./allowed-methods.ts";
import { invalidFieldsProblem, problemForError } from "./error-problem.ts";
import { HttpProblem } from "./http-problem.ts";
import { readJsonBody } from "./json-body.ts";
import { requestIdOf } from "../../lib/request-id.ts";
import {
  CreateProjectBody,
  LIST_LIMIT_DEFAULT,
  ListQuery,
  prepareCreateProjectBody,
  ProjectParams,
  projectJson,
} from "./schemas.ts";
import type { ProjectStore } from "./store/store.ts";

export interface AppOptions {
  store: ProjectStore;
  identity: ServiceIdentity;
  log: Logger;
  lifecycle: Lifecycle;
  /** Request bodies above this many bytes get 413, however they are framed. */
  maxBodyBytes: number;
  /** JSON bodies nested deeper than this get 400 before they are parsed. */
  maxJsonDepth: number;
  /** Served on /metrics; a private one (without process metrics) when absent, as in tests. */
  metrics?: { registry: Registry; http: HttpServerMetrics };
  /** The global tracer when absent (a no-op one unless lib/telemetry/tracing.ts started one). */
  tracer?: Tracer;
  /** Access-log /healthz and /readyz too; off by default, as the gateways check /readyz every few seconds. */
  logProbes?: boolean;
  /** Injected errors and delay on the API (lib/fault.ts: release drills); none when absent. */
  fault?: Fault;
}

/** What the hooks keep about a request between onRequest and onAfterResponse. */
interface RequestState {
  startedAt: number;
  /** The trace context: the server span and the request id. */
  trace: Context;
  /** A scrape of /metrics: counted apart from the in-flight gauge (HttpServerMetrics.scrapesInFlight). */
  scrape: boolean;
}

/** Requests whose spans are not worth keeping (probes, scrapes); they still get ids for their logs. */
const UNTRACED_PATHS = new Set(["/healthz", "/readyz", "/metrics"]);
/** Kubernetes' probes and the gateways' health checks: not access-logged unless asked (LOG_PROBES). */
const PROBE_PATHS = new Set(["/healthz", "/readyz"]);

function statusOf(status: number | string | undefined): number {
  if (typeof status === "number") return status;
  return (status !== undefined && (StatusMap as Record<string, number>)[status]) || 200;
}

export function createApp({
  store,
  identity,
  log,
  lifecycle,
  maxBodyBytes,
  maxJsonDepth,
  metrics: given,
  tracer = trace.getTracer("portico"),
  logProbes = false,
  fault,
}: AppOptions) {
  const metrics = given ?? privateMetrics(identity);
  const requests = new WeakMap<Request, RequestState>();
  /** trace_id, span_id and request_id of a request, for its log lines. */
  const traceFields = (request: Request) => {
    const state = requests.get(request);
    return state ? logFieldsOf(state.trace) : {};
  };
  // Built on first use: the route table below must be complete before it is read.
  let allowedMethods: AllowedMethods | undefined;

  const app = new Elysia()
    .onRequest(({ request, set }) => {
      const requestId = requestIdOf(request.headers);
      const { url } = request;
      const pathStart = url.indexOf("/", url.indexOf("//") + 2);
      const queryStart = url.indexOf("?", pathStart);
      const path = queryStart < 0 ? url.slice(pathStart) : url.slice(pathStart, queryStart);
      const attributes = { "http.request.method": request.method, "url.path": path };
      const traced = startServerSpan(
        tracer,
        request.method,
        request.headers,
        headersGetter,
        requestId,
        attributes,
        !UNTRACED_PATHS.has(path),
      );
      const scrape = path === "/metrics";
      requests.set(request, { startedAt: performance.now(), trace: traced, scrape });
      if (scrape) metrics.http.scrapesInFlight++;
      else metrics.http.inFlight++;
      set.headers["x-served-by"] = identity.instance;
      set.headers["x-service-version"] = identity.version;
      lifecycle.closeConnectionWhileDraining(set.headers);
      set.headers["x-request-id"] = requestId;
    })
    .onError(({ code, error, request, path, set }) => {
      let problem = problemForError(error);
      // A 503 (the store unreachable, starting, draining) is not the client's fault: say when to retry.
      let headers: Record<string, string> | undefined =
        problem.status === 503 ? { "retry-after": String(RETRY_AFTER_SECONDS) } : undefined;
      if (code === "NOT_FOUND") {
        allowedMethods ??= allowedMethodsOf(app.routes);
        const allow = allowedMethods(path);
        if (allow.length > 0) {
          problem = {
            title: "Method Not Allowed",
            status: 405,
            detail: `${request.method} is not supported on ${path}; allowed: ${allow.join(", ")}`,
          };
          headers = { allow: allow.join(", ") };
        } else {
          problem = { ...problem, detail: `no route for ${request.method} ${path}` };
        }
      }
      // Only the unexpected is an error worth a log line of its own; the access log covers the rest.
      if (problem.status === 500)
        log.error(
          { err: error, path, ...traceFields(request), request_id: set.headers["x-request-id"] },
          "request failed",
        );
      // The access log reads the status from `set`, not from the Response returned here.
      set.status = problem.status;
      return problemResponse(problem, headers);
    })
    .onAfterResponse(({ request, path, route, set }) => {
      const state = requests.get(request);
      const status = statusOf(set.status);
      const seconds = state === undefined ? 0 : (performance.now() - state.startedAt) / 1000;
      if (state !== undefined) {
        if (state.scrape) metrics.http.scrapesInFlight--;
        else metrics.http.inFlight--;
        metrics.http.observe(route || "none", request.method, status, seconds);
        const span = trace.getSpan(state.trace)!;
        if (route && span.isRecording()) {
          span.updateName(`${request.method} ${route}`);
          span.setAttribute("http.route", route);
        }
        endHttpSpan(span, status, "server");
      }
      if (!logProbes && PROBE_PATHS.has(path)) return;
      log.info(
        {
          method: request.method,
          path,
          route: route || null,
          status: set.status,
          duration_ms: state === undefined ? null : Math.round(seconds * 100_000) / 100,
          ...(state && logFieldsOf(state.trace)),
          request_id: set.headers["x-request-id"],
        },
        "request",
      );
    })

    // A drill's bad release (FAULT_*): the API only, never the probes, so the replica stays in rotation.
    .onBeforeHandle(async ({ path, set }) => {
      if (!fault?.enabled || !path.startsWith("/projects")) return;
      if (fault.delayMs > 0) await Bun.sleep(fault.delayMs);
      if (!fault.fails()) return;
      // The access log, the metrics and the span read the status from `set` (as onError's answers do).
      set.status = 500;
      return problemResponse({
        title: "Internal Server Error",
        status: 500,
        detail: "injected fault (FAULT_ERROR_PERCENT): this replica runs a release drill",
      });
    })
    .get("/healthz", () => ({ status: "ok" }))
    .get("/readyz", async ({ request }) => {
      if (!lifecycle.isReady()) {
        throw notReady(lifecycle.isShuttingDown() ? "webapp is draining before shutdown" : "webapp is starting");
      }
      try {
        await store.ping();
      } catch (err) {
        log.warn({ err, ...traceFields(request) }, "readiness: project store ping failed");
        throw notReady("the project store does not answer");
      }
      return { status: "ready" };
    })
    .get("/version", () => ({ service: identity.service, version: identity.version, instance: identity.instance }))
    // Prometheus scrapes this port; the gateway routes only /projects here, so it is not public.
    .get("/metrics", () => metricsResponse(metrics.registry))

    // Elysia's default `strictPath: false` serves each path with a trailing slash too:
    // `POST /projects/` is the URL the original clients use.
    .post(
      "/projects",
      async ({ body, set }) => {
        const project = await store.create(body.title);
        set.status = 201;
        set.headers.location = `/projects/${project.id}`;
        return projectJson(project);
      },
      {
        parse: ({ request }) => readJsonBody(request, { maxBytes: maxBodyBytes, maxDepth: maxJsonDepth }),
        // Before validation, so length limits apply to the title as stored.
        transform: ({ body }) => prepareCreateProjectBody(body),
        body: CreateProjectBody,
      },
    )
    .get(
      "/projects",
      async ({ query }) => {
        const limit = query.limit ?? LIST_LIMIT_DEFAULT;
        // One row more than asked says whether another page exists, so the last page has next: null.
        const rows = await store.list({ limit: limit + 1, after: query.after ?? 0 });
        const items = rows.slice(0, limit);
        return { items: items.map(projectJson), next: rows.length > limit ? items[items.length - 1]!.id : null };
      },
      // Before validation: the query parser keeps the last of a repeated parameter, which would
      // let `limit=abc&limit=2` pass where `limit=2&limit=abc` is refused.
      { transform: ({ request }) => refuseRepeatedQuery(request, ["limit", "after"]), query: ListQuery },
    )
    .get(
      "/projects/:id",
      async ({ params }) => {
        const project = await store.get(params.id);
        if (!project)
          throw new HttpProblem({ title: "Not Found", status: 404, detail: `project ${params.id} does not exist` });
        return projectJson(project);
      },
      { params: ProjectParams },
    );

  return app;
}

/** The store's connection retries Redis every 250 ms; a second is the shortest Retry-After there is. */
const RETRY_AFTER_SECONDS = 1;

const notReady = (detail: string) => new HttpProblem({ title: "Not ready", status: 503, detail });

function privateMetrics(identity: ServiceIdentity): { registry: Registry; http: HttpServerMetrics } {
  const registry = createMetricsRegistry(identity, { processMetrics: false });
  return { registry, http: new HttpServerMetrics(registry) };
}

/** 400 naming each of `names` given more than once in the request's query. */
function refuseRepeatedQuery(request: Request, names: readonly string[]): void {
  const queryStart = request.url.indexOf("?");
  if (queryStart < 0) return;
  const query = new URLSearchParams(request.url.slice(queryStart + 1));
  const errors = names
    .filter((name) => query.getAll(name).length > 1)
    .map((field) => ({ field, message: `${field} is given more than once; give it once` }));
  if (errors.length > 0) throw new HttpProblem(invalidFieldsProblem(errors, "query"));
}
