import { describe, expect, test } from "bun:test";
import { webappFixture } from "./fixture.ts";

describe("POST /projects", () => {
  test("the seed request (POST /projects/, 'Content-type' header) gets 201 with an integer id and url 'Project-<title>'", async () => {
    const { request } = webappFixture();
    const res = await request("POST", "/projects/", {
      body: '{"title":"An awesome project"}',
      headers: { "Content-type": "application/json" },
    });
    expect(res.status).toBe(201);
    const body = await res.json();
    expect(Number.isInteger(body.id)).toBe(true);
    expect(body).toMatchObject({ url: "Project-An awesome project", title: "An awesome project" });
    expect(new Date(body.created_at).toISOString()).toBe(body.created_at);
    expect(res.headers.get("location")).toBe(`/projects/${body.id}`);
  });

  test("POST /projects without the trailing slash creates too, and every id is new", async () => {
    const { postJson } = webappFixture();
    const ids: number[] = [];
    for (const title of ["a", "b", "c"]) {
      const res = await postJson("/projects", { title });
      expect(res.status).toBe(201);
      ids.push((await res.json()).id);
    }
    expect(new Set(ids).size).toBe(3);
  });

  test("trims the title, accepts exactly 200 characters and ignores unknown fields", async () => {
    const { postJson } = webappFixture();
    const trimmed = await (await postJson("/projects", { title: "  Spaced out \n" })).json();
    expect(trimmed).toMatchObject({ title: "Spaced out", url: "Project-Spaced out" });

    const longest = "x".repeat(200);
    const res = await postJson("/projects", { title: ` ${longest} `, owner: "someone", id: 999 });
    expect(res.status).toBe(201);
    const body = await res.json();
    expect(body.title).toBe(longest);
    expect(body.id).not.toBe(999);
    expect(Object.keys(body).sort()).toEqual(["created_at", "id", "title", "url"]);
  });

  test("accepts a JSON media type with parameters or a +json suffix", async () => {
    const { postJson } = webappFixture();
    expect(
      (await postJson("/projects", { title: "a" }, { "content-type": "application/json; charset=utf-8" })).status,
    ).toBe(201);
    expect(
      (await postJson("/projects", { title: "b" }, { "content-type": "application/vnd.portico+json" })).status,
    ).toBe(201);
  });
});

describe("GET /projects/:id", () => {
  test("returns the project as it was created", async () => {
    const { request, createProject } = webappFixture();
    const created = await createProject("Read me");
    const res = await request("GET", `/projects/${created.id}`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual(created);
  });
});

describe("GET /projects", () => {
  test("an empty store lists no items and no next cursor, with or without the trailing slash", async () => {
    const { request } = webappFixture();
    for (const path of ["/projects", "/projects/"]) {
      const res = await request("GET", path);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ items: [], next: null });
    }
  });

  test("pages through every project in id order with ?limit and ?after=<next>", async () => {
    const { request, createProject } = webappFixture();
    const created = [];
    for (let i = 1; i <= 5; i++) created.push(await createProject(`p${i}`));

    const pages: number[][] = [];
    let after: number | null = 0;
    while (after !== null) {
      const res = await request("GET", `/projects?limit=2&after=${after}`);
      const page = (await res.json()) as { items: { id: number }[]; next: number | null };
      pages.push(page.items.map((p) => p.id));
      after = page.next;
    }
    const ids = created.map((p) => p.id);
    expect(pages).toEqual([ids.slice(0, 2), ids.slice(2, 4), ids.slice(4)]);
  });

  test("returns 20 projects by default and at most 100 when asked", async () => {
    const { request, createProject } = webappFixture();
    for (let i = 0; i < 105; i++) await createProject(`p${i}`);
    const byDefault = await (await request("GET", "/projects")).json();
    expect(byDefault.items).toHaveLength(20);
    expect(byDefault.next).toBe(byDefault.items[19].id);

    const most = await (await request("GET", "/projects?limit=100")).json();
    expect(most.items).toHaveLength(100);
    const rest = await (await request("GET", `/projects?limit=100&after=${most.next}`)).json();
    expect(rest.items).toHaveLength(5);
    expect(rest.next).toBeNull();
  });
});
