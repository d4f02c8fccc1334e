/**
 * MAX_PROJECTS through HTTP: a full store answers POST /projects with a 507 problem (not a crash,
 * not a 503 to retry), while reads go on. The stores' own quota tests: store-contract.ts.
 */
import { describe, expect, test } from "bun:test";
import { loadConfig } from "../src/config.ts";
import { openSqliteStore } from "../src/store/sqlite.ts";
import { expectProblem, webappFixture } from "./fixture.ts";

describe("MAX_PROJECTS", () => {
  test("the create past the maximum gets 507 Insufficient Storage as problem+json, without Retry-After; reads go on", async () => {
    const { postJson, createProject, request } = webappFixture({
      store: openSqliteStore(":memory:", { maxProjects: 2 }),
    });
    await createProject("one");
    await createProject("two");
    const res = await postJson("/projects", { title: "three" });
    const problem = await expectProblem(res, 507);
    expect(problem).toMatchObject({
      title: "Insufficient Storage",
      detail: "the project store is full: it holds its maximum of 2 projects, and no more can be created",
    });
    expect(res.headers.get("retry-after")).toBeNull();
    const list = (await (await request("GET", "/projects")).json()) as { items: unknown[] };
    expect(list.items).toHaveLength(2);
  });

  test("defaults to 100 000; must be a positive integer", () => {
    expect(loadConfig({}).maxProjects).toBe(100_000);
    expect(loadConfig({ MAX_PROJECTS: "5" }).maxProjects).toBe(5);
    expect(() => loadConfig({ MAX_PROJECTS: "0" })).toThrow('MAX_PROJECTS="0" is not an integer in [1, 1000000000]');
  });
});
