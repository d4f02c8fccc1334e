/**
 * What the admin API answers to a path it does not have (404) or a method a path does not serve
 * (405, with Allow), admin/app.ts: problem+json like its other errors, never Elysia's plain-text
 * NOT_FOUND. Each case is asked twice: in process (`app.handle`, Elysia's own router) and on a
 * real listener (`app.listen`, where Elysia hands its routes to Bun.serve), with and without
 * ADMIN_TOKEN — and without the token in hand, nothing but the 401 it already answers.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { createAdminApp } from "../src/admin/app.ts";
import { AdminAuth } from "../src/admin/auth.ts";
import { inProcessGateway } from "./admin-fixture.ts";

const TOKEN = "admin-not-found-test-token";
const JSON_TYPE = { "content-type": "application/json" };
const BEARER = { authorization: `Bearer ${TOKEN}` };

const { gateway, dashboard, identity, lifecycle } = inProcessGateway();

type App = ReturnType<typeof createAdminApp>;
const listening: App[] = [];
afterAll(async () => {
  for (const app of listening) await app.stop(true);
  dashboard.close();
  gateway.close();
});

/** The same request in process and over a real listener; both answers, with the body read. */
async function ask(app: App, method: string, path: string, headers: Record<string, string> = {}) {
  if (!app.server) {
    app.listen({ port: 0, hostname: "127.0.0.1" });
    listening.push(app);
  }
  const answers = [
    await app.handle(new Request(`http://127.0.0.1${path}`, { method, headers })),
    await fetch(`http://127.0.0.1:${app.server!.port}${path}`, { method, headers }),
  ];
  return Promise.all(
    answers.map(async (res) => {
      const text = await res.text();
      return {
        status: res.status,
        type: res.headers.get("content-type"),
        allow: res.headers.get("allow"),
        // A listener answers HEAD without a body.
        body: text && res.headers.get("content-type") === "application/problem+json" ? JSON.parse(text) : text,
      };
    }),
  );
}

/** Both answers are a problem+json of `status`, with `allow` as the Allow header (null: none). */
async function expectProblem(
  app: App,
  [method, path, headers]: [string, string, Record<string, string>?],
  status: number,
  allow: string | null = null,
) {
  for (const [i, res] of (await ask(app, method, path, headers)).entries()) {
    const where = `${method} ${path} ${i === 0 ? "in process" : "on the listener"}`;
    expect([where, res.status, res.type, res.allow]).toEqual([where, status, "application/problem+json", allow]);
    if (method !== "HEAD") expect([where, res.body.status]).toEqual([where, status]);
  }
}

describe("without ADMIN_TOKEN", () => {
  const app = createAdminApp(gateway, identity, lifecycle, undefined, { dashboard });

  test("a path the admin API does not have is 404 problem+json, whatever the method", async () => {
    await expectProblem(app, ["GET", "/nope"], 404);
    await expectProblem(app, ["HEAD", "/nope"], 404);
    await expectProblem(app, ["POST", "/nope", JSON_TYPE], 404);
    await expectProblem(app, ["GET", "/dashboard/nope"], 404);
    await expectProblem(app, ["GET", "/canary/web/pause/now"], 404);
  });

  test("a method a path does not serve is 405 problem+json, with the methods it does serve in Allow", async () => {
    for (const method of ["POST", "PUT", "PATCH", "DELETE"])
      await expectProblem(app, [method, "/config", JSON_TYPE], 405, "GET, HEAD");
    await expectProblem(app, ["OPTIONS", "/config"], 405, "GET, HEAD");
    await expectProblem(app, ["POST", "/metrics", JSON_TYPE], 405, "GET, HEAD");
    // Also for a trailing slash, which Elysia serves as the path without it.
    await expectProblem(app, ["DELETE", "/config/", JSON_TYPE], 405, "GET, HEAD");
    // Paths with parameters, from the canary's routes and the dashboard's: none listed twice.
    await expectProblem(app, ["GET", "/canary/web/pause"], 405, "POST");
    await expectProblem(app, ["HEAD", "/canary/web/start"], 405, "POST");
    await expectProblem(app, ["POST", "/canary/web", JSON_TYPE], 405, "GET, HEAD");
    await expectProblem(app, ["POST", "/dashboard/snapshot.json", JSON_TYPE], 405, "GET, HEAD");
  });

  test("HEAD is served wherever GET is, as Allow says", async () => {
    for (const res of await ask(app, "HEAD", "/config")) expect(res.status).toBe(200);
  });

  test("the request guard still answers first: a POST without a JSON type is 415, not 405", async () => {
    await expectProblem(app, ["POST", "/metrics"], 415);
  });
});

describe("with ADMIN_TOKEN", () => {
  const app = createAdminApp(gateway, identity, lifecycle, undefined, { auth: new AdminAuth(TOKEN) });

  test("without the token, an unknown path or a wrong method is the same 401 as any other request", async () => {
    await expectProblem(app, ["GET", "/nope"], 401);
    await expectProblem(app, ["DELETE", "/config", JSON_TYPE], 401);
    await expectProblem(app, ["GET", "/canary/web/pause"], 401);
    await expectProblem(app, ["GET", "/config"], 401);
  });

  test("the open routes need no token, and their methods are no secret", async () => {
    await expectProblem(app, ["POST", "/metrics", JSON_TYPE], 405, "GET, HEAD");
    await expectProblem(app, ["OPTIONS", "/healthz"], 405, "GET, HEAD");
  });

  test("with the token, 404 and 405 as without ADMIN_TOKEN", async () => {
    await expectProblem(app, ["GET", "/nope", BEARER], 404);
    await expectProblem(app, ["DELETE", "/config", { ...JSON_TYPE, ...BEARER }], 405, "GET, HEAD");
    await expectProblem(app, ["GET", "/canary/web/pause", BEARER], 405, "POST");
    // No dashboard on this gateway: its paths are unknown ones.
    await expectProblem(app, ["GET", "/dashboard/snapshot.json", BEARER], 404);
  });
});
