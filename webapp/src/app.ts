/**
 * webapp's HTTP surface: the cross-cutting hooks (identity headers, request id, access log, one
 * error mapper), then every route in one block — the route table is the index of the service.
 */
import { Elysia } from "elysia";
import type { ServiceIdentity } from "../../lib/env.ts";
import type { Lifecycle } from "../../lib/lifecycle.ts";
import type { Logger } from "../../lib/log.ts";
import { problemResponse } from "../../lib/problem.ts";
import { allowedMethodsOf, type AllowedMethods } from "./allowed-methods.ts";
import { problemForError } from "./error-problem.ts";
import { HttpProblem } from "./http-problem.ts";
import { readJsonBody } from "./json-body.ts";
import { requestIdOf } from "../../lib/request-id.ts";
import { CreateProjectBody, LIST_LIMIT_DEFAULT, ListQuery, prepareCreateProjectBody, ProjectParams, projectJson } from "./schemas.ts";
import type { ProjectStore } from "./store/store.ts";

export interface AppOptions {
  store: ProjectStore;
  identity: ServiceIdentity;
  log: Logger;
  lifecycle: Lifecycle;
  /** Request bodies above this many bytes get 413, however they are framed. */
  maxBodyBytes: number;
}

export function createApp({ store, identity, log, lifecycle, maxBodyBytes }: AppOptions) {
  const startedAt = new WeakMap<Request, number>();
  // Built on first use: the route table below must be complete before it is read.
  let allowedMethods: AllowedMethods | undefined;

  const app = new Elysia()
    .onRequest(({ request, set }) => {
      startedAt.set(request, performance.now());
      set.headers["x-served-by"] = identity.instance;
      set.headers["x-service-version"] = identity.version;
      set.headers["x-request-id"] = requestIdOf(request.headers);
    })
    .onError(({ code, error, request, path, set }) => {
      let problem = problemForError(error);
      let headers: Record<string, string> | undefined;
      if (code === "NOT_FOUND") {
        allowedMethods ??= allowedMethodsOf(app.routes);
        const allow = allowedMethods(path);
        if (allow.length > 0) {
          problem = { title: "Method Not Allowed", status: 405, detail: `${request.method} is not supported on ${path}; allowed: ${allow.join(", ")}` };
          headers = { allow: allow.join(", ") };
        } else {
          problem = { ...problem, detail: `no route for ${request.method} ${path}` };
        }
      }
      // Only the unexpected is an error worth a log line of its own; the access log covers the rest.
      if (problem.status === 500) log.error({ err: error, path, request_id: set.headers["x-request-id"] }, "request failed");
      // The access log reads the status from `set`, not from the Response returned here.
      set.status = problem.status;
      return problemResponse(problem, headers);
    })
    .onAfterResponse(({ request, path, route, set }) => {
      const started = startedAt.get(request);
      log.info(
        {
          method: request.method,
          path,
          route: route || null,
          status: set.status,
          duration_ms: started === undefined ? null : Math.round((performance.now() - started) * 100) / 100,
          request_id: set.headers["x-request-id"],
        },
        "request",
      );
    })

    .get("/healthz", () => ({ status: "ok" }))
    .get("/readyz", async () => {
      if (!lifecycle.isReady()) {
        throw notReady(lifecycle.isShuttingDown() ? "webapp is draining before shutdown" : "webapp is starting");
      }
      try {
        await store.ping();
      } catch (err) {
        log.warn({ err }, "readiness: project store ping failed");
        throw notReady("the project store does not answer");
      }
      return { status: "ready" };
    })
    .get("/version", () => ({ service: identity.service, version: identity.version, instance: identity.instance }))

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
        parse: ({ request }) => readJsonBody(request, maxBodyBytes),
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
      { query: ListQuery },
    )
    .get(
      "/projects/:id",
      async ({ params }) => {
        const project = await store.get(params.id);
        if (!project) throw new HttpProblem({ title: "Not Found", status: 404, detail: `project ${params.id} does not exist` });
        return projectJson(project);
      },
      { params: ProjectParams },
    );

  return app;
}

const notReady = (detail: string) => new HttpProblem({ title: "Not ready", status: 503, detail });
