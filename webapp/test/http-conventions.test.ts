import { describe, expect, test } from "bun:test";
import { brokenStore, expectProblem, IDENTITY, webappFixture } from "./fixture.ts";

describe("identity and request-id headers", () => {
  test("every kind of answer carries x-served-by, x-service-version and x-request-id", async () => {
    const { request, postJson } = webappFixture({ maxBodyBytes: 16 });
    const answers = [
      await request("GET", "/healthz"),
      await postJson("/projects", { title: "too long for 16 bytes" }),
      await postJson("/projects", "{"),
      await request("GET", "/projects/nope"),
      await request("GET", "/no/such/path"),
      await request("DELETE", "/projects"),
    ];
    expect(answers.map((r) => r.status)).toEqual([200, 413, 400, 400, 404, 405]);
    for (const res of answers) {
      expect(res.headers.get("x-served-by")).toBe(IDENTITY.instance);
      expect(res.headers.get("x-service-version")).toBe(IDENTITY.version);
      expect(res.headers.get("x-request-id")).toBeTruthy();
    }
  });

  test("echoes the caller's x-request-id, and generates a UUID when there is none or it is unusable", async () => {
    const { request } = webappFixture();
    const echoed = await request("GET", "/healthz", { headers: { "x-request-id": "req-123/abc" } });
    expect(echoed.headers.get("x-request-id")).toBe("req-123/abc");

    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
    const generated = await request("GET", "/healthz");
    expect(generated.headers.get("x-request-id")).toMatch(uuid);
    const tooLong = await request("GET", "/healthz", { headers: { "x-request-id": "x".repeat(129) } });
    expect(tooLong.headers.get("x-request-id")).toMatch(uuid);
  });
});

describe("unknown paths and methods", () => {
  test("an unknown path → 404 problem naming it", async () => {
    const { request } = webappFixture();
    expect((await expectProblem(await request("GET", "/nowhere"), 404)).detail).toContain("/nowhere");
  });

  test("a wrong method on a known path → 405 problem with the allow header", async () => {
    const { request } = webappFixture();
    const cases: [string, string, string][] = [
      ["DELETE", "/projects", "GET, HEAD, POST"],
      ["PUT", "/projects/", "GET, HEAD, POST"],
      ["POST", "/projects/7", "GET, HEAD"],
      ["PATCH", "/projects/abc", "GET, HEAD"],
      ["POST", "/healthz", "GET, HEAD"],
    ];
    for (const [method, path, allow] of cases) {
      const res = await request(method, path);
      await expectProblem(res, 405);
      expect({ method, path, allow: res.headers.get("allow") }).toEqual({ method, path, allow });
    }
  });

  test("HEAD on a GET route answers like GET, without a body", async () => {
    const { request, createProject } = webappFixture();
    const { id } = await createProject("head");
    const res = await request("HEAD", `/projects/${id}`);
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("");
  });
});

describe("health, readiness and version", () => {
  test("/healthz answers 200 while starting, ready and draining", async () => {
    const { request, lifecycle } = webappFixture({ starting: true });
    expect((await request("GET", "/healthz")).status).toBe(200);
    lifecycle.markReady();
    expect(await (await request("GET", "/healthz")).json()).toEqual({ status: "ok" });
    await lifecycle.shutdown();
    expect((await request("GET", "/healthz")).status).toBe(200);
  });

  test("/readyz is 503 while starting, 200 once ready, 503 again while draining", async () => {
    const { request, lifecycle } = webappFixture({ starting: true });
    expect((await expectProblem(await request("GET", "/readyz"), 503)).detail).toContain("starting");
    lifecycle.markReady();
    const ready = await request("GET", "/readyz");
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: "ready" });
    await lifecycle.shutdown();
    expect((await expectProblem(await request("GET", "/readyz"), 503)).detail).toContain("draining");
  });

  test("/readyz is 503 when the store does not answer", async () => {
    const { request } = webappFixture({ store: brokenStore() });
    const problem = await expectProblem(await request("GET", "/readyz"), 503);
    expect(problem.detail).toContain("store");
    expect(JSON.stringify(problem)).not.toContain("/secret/path.db");
  });

  test("/version reports service, version and instance", async () => {
    const { request } = webappFixture();
    expect(await (await request("GET", "/version")).json()).toEqual(IDENTITY);
  });
});

describe("server faults", () => {
  test("a failing store gives a 500 problem without internals, and the error is logged", async () => {
    const { postJson, request, logs, accessLogFor } = webappFixture({ store: brokenStore() });
    const res = await postJson("/projects", { title: "x" }, { "x-request-id": "broken-1" });
    const problem = await expectProblem(res, 500);
    expect(JSON.stringify(problem)).not.toContain("/secret/path.db");
    expect(logs.find((l) => l.msg === "request failed" && l.request_id === "broken-1")).toBeDefined();
    expect((await accessLogFor("broken-1")).status).toBe(500);
    await expectProblem(await request("GET", "/projects"), 500);
  });
});

describe("access log", () => {
  test("writes one JSON line per request with method, path, route, status, duration_ms and request_id", async () => {
    const { request, postJson, logs, accessLogFor } = webappFixture();
    await postJson("/projects/", { title: "logged" }, { "x-request-id": "log-1" });
    await request("GET", "/projects/1?verbose=1", { headers: { "x-request-id": "log-2" } });
    await request("DELETE", "/projects/1", { headers: { "x-request-id": "log-3" } });
    await request("GET", "/missing", { headers: { "x-request-id": "log-4" } });

    const line = await accessLogFor("log-1");
    expect(line).toMatchObject({
      level: "info",
      method: "POST",
      path: "/projects/",
      route: "/projects",
      status: 201,
      request_id: "log-1",
    });
    expect(line.duration_ms).toBeNumber();
    expect(await accessLogFor("log-2")).toMatchObject({
      method: "GET",
      path: "/projects/1",
      route: "/projects/:id",
      status: 200,
    });
    expect(await accessLogFor("log-3")).toMatchObject({ method: "DELETE", route: null, status: 405 });
    expect(await accessLogFor("log-4")).toMatchObject({ path: "/missing", route: null, status: 404 });
    expect(logs.filter((l) => l.msg === "request")).toHaveLength(4);
  });
});
