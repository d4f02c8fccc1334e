/**
 * The canary's admin routes (canary/controller.ts), on the admin port behind its token:
 *
 *   GET  /canary                          every upstream's canary: state, weight, step, figures, history
 *   GET  /canary/<upstream>
 *   POST /canary/<upstream>/start         {"version":"v2"}: the first step of routes.yaml's policy
 *   POST /canary/<upstream>/pause | resume | promote | abort | reset
 *   POST /canary/<upstream>/weight        {"weight":10}: a fixed weight (the steps pause)
 *
 * Each answers the canary's state afterwards; a wrong state is 409, a bad body 400, an unknown
 * upstream 404, all problem+json. Every POST carries `Content-Type: application/json`, body or
 * not (415 before it gets here otherwise: lib/request-guard.ts), and the body is parsed as JSON.
 * Every gateway replica runs its own canary: `make canary` and the cluster script call each of them.
 */
import { Elysia } from "elysia";
import { problemResponse } from "../../../lib/problem.ts";
import { CanaryError } from "../canary/controller.ts";
import type { Gateway } from "../server.ts";

const VERSION = /^[A-Za-z0-9._-]{1,63}$/;
const ACTIONS = ["pause", "resume", "promote", "abort", "reset"] as const;

export function canaryRoutes(gateway: Gateway) {
  const find = (name: string) => {
    const canary = gateway.canary(name);
    if (canary) return canary;
    return problemResponse({
      title: "Not Found",
      status: 404,
      detail: `no upstream named "${name}"; upstreams: ${[...gateway.upstreams.keys()].join(", ")}`,
    });
  };
  const act = (run: () => void): Response | undefined => {
    try {
      run();
      return undefined;
    } catch (err) {
      if (err instanceof CanaryError) return problemResponse({ title: "Conflict", status: 409, detail: err.message });
      throw err;
    }
  };
  const bad = (detail: string) => problemResponse({ title: "Bad Request", status: 400, detail });
  const body = async (request: Request): Promise<Record<string, unknown> | Response> => {
    try {
      const parsed = (await request.json()) as unknown;
      if (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed))
        return parsed as Record<string, unknown>;
    } catch {}
    return bad('the body must be a JSON object, e.g. {"version":"v2"}');
  };

  return new Elysia()
    .get("/canary", () => [...gateway.upstreams.keys()].flatMap((name) => gateway.canary(name)?.view() ?? []))
    .get("/canary/:upstream", ({ params }) => {
      const canary = find(params.upstream);
      return canary instanceof Response ? canary : canary.view();
    })
    .post("/canary/:upstream/start", async ({ params, request }) => {
      const canary = find(params.upstream);
      if (canary instanceof Response) return canary;
      const json = await body(request);
      if (json instanceof Response) return json;
      if (typeof json.version !== "string" || !VERSION.test(json.version))
        return bad('"version" must be the version the new replicas report (x-service-version), e.g. "v2"');
      const version = json.version;
      return act(() => canary.start(version)) ?? canary.view();
    })
    .post("/canary/:upstream/weight", async ({ params, request }) => {
      const canary = find(params.upstream);
      if (canary instanceof Response) return canary;
      const json = await body(request);
      if (json instanceof Response) return json;
      if (typeof json.weight !== "number" || !Number.isInteger(json.weight) || json.weight < 0 || json.weight > 100)
        return bad('"weight" must be an integer from 0 to 100');
      const weight = json.weight;
      return act(() => canary.setWeight(weight)) ?? canary.view();
    })
    .post("/canary/:upstream/:action", ({ params }) => {
      const canary = find(params.upstream);
      if (canary instanceof Response) return canary;
      const action = params.action as (typeof ACTIONS)[number];
      if (!ACTIONS.includes(action))
        return problemResponse({
          title: "Not Found",
          status: 404,
          detail: `no canary action "${params.action}"; actions: start, weight, ${ACTIONS.join(", ")}`,
        });
      return act(() => canary[action]()) ?? canary.view();
    });
}
