import { describe, expect, test } from "bun:test";
import { expectProblem, webappFixture } from "./fixture.ts";

/** A body sent as a stream: no content-length, so only the bytes read can reveal its size. */
function chunkedBody(totalBytes: number, chunkBytes = 1024): ReadableStream<Uint8Array> {
  let sent = 0;
  return new ReadableStream({
    pull(controller) {
      if (sent >= totalBytes) return controller.close();
      const n = Math.min(chunkBytes, totalBytes - sent);
      controller.enqueue(new Uint8Array(n).fill(0x20));
      sent += n;
    },
  });
}

describe("POST /projects refuses a bad title with 400 naming the field", () => {
  const cases: [string, unknown][] = [
    ["a missing title", {}],
    ["a number title", { title: 5 }],
    ["a null title", { title: null }],
    ["an object title", { title: { text: "x" } }],
    ["an empty title", { title: "" }],
    ["a whitespace-only title", { title: " \t\n " }],
    ["a 201-character title", { title: "x".repeat(201) }],
  ];
  for (const [what, body] of cases) {
    test(`${what}: ${JSON.stringify(body).slice(0, 40)}`, async () => {
      const { postJson } = webappFixture();
      const problem = await expectProblem(await postJson("/projects", body), 400);
      expect(problem.errors).toEqual([{ field: "title", message: expect.stringContaining("title") }]);
    });
  }

  test("a body that is not a JSON object (null, a string, a number, an array) is refused as a whole", async () => {
    const { postJson } = webappFixture();
    for (const body of ["null", '"An awesome project"', "42", '[{"title":"x"}]']) {
      const problem = await expectProblem(await postJson("/projects", body), 400);
      expect(problem.errors?.map((e) => e.field)).toEqual(["body"]);
    }
  });
});

describe("POST /projects refuses a body it cannot read as JSON", () => {
  test("malformed JSON → 400 saying why", async () => {
    const { postJson } = webappFixture();
    const problem = await expectProblem(await postJson("/projects", '{"title": "unterminated'), 400);
    expect(problem.detail).toContain("not valid JSON");
  });

  test("an empty body → 400", async () => {
    const { postJson } = webappFixture();
    expect((await expectProblem(await postJson("/projects", ""), 400)).detail).toContain("empty");
  });

  test("bytes that are not UTF-8 → 400", async () => {
    const { request } = webappFixture();
    const res = await request("POST", "/projects", {
      body: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]),
      headers: { "content-type": "application/json" },
    });
    expect((await expectProblem(res, 400)).detail).toContain("UTF-8");
  });

  test("a non-JSON content type, or none, → 415", async () => {
    const { request } = webappFixture();
    const form = await request("POST", "/projects", {
      body: "title=x",
      headers: { "content-type": "application/x-www-form-urlencoded" },
    });
    expect((await expectProblem(form, 415)).detail).toContain("application/x-www-form-urlencoded");
    const text = await request("POST", "/projects", {
      body: '{"title":"x"}',
      headers: { "content-type": "text/plain" },
    });
    await expectProblem(text, 415);
    const none = await request("POST", "/projects", { body: new Blob(['{"title":"x"}']) });
    expect(none.headers.get("content-type")).toBe("application/problem+json");
    await expectProblem(none, 415);
  });

  test("a compressed body (content-encoding gzip) → 415 naming the coding, not a 400 about its bytes", async () => {
    const { request } = webappFixture();
    const gzip = await request("POST", "/projects", {
      body: Bun.gzipSync(new TextEncoder().encode('{"title":"zipped"}')),
      headers: { "content-type": "application/json", "content-encoding": "gzip" },
    });
    expect((await expectProblem(gzip, 415)).detail).toContain('content-encoding "gzip"');
    // identity is no coding at all.
    const identity = await request("POST", "/projects", {
      body: '{"title":"plain"}',
      headers: { "content-type": "application/json", "content-encoding": "identity" },
    });
    expect(identity.status).toBe(201);
  });
});

describe("POST /projects refuses a title that is not valid Unicode", () => {
  for (const [what, title] of [
    ["a lone high surrogate", "\\ud800"],
    ["a lone low surrogate inside text", "x\\udc00y"],
    ["a high surrogate at the end", "ok\\udbff"],
  ]) {
    test(`${what} → 400 naming title, nothing stored`, async () => {
      const { postJson, request } = webappFixture();
      const problem = await expectProblem(await postJson("/projects", `{"title":"${title}"}`), 400);
      expect(problem.errors).toEqual([{ field: "title", message: expect.stringContaining("is not valid Unicode") }]);
      expect(((await (await request("GET", "/projects")).json()) as { items: unknown[] }).items).toEqual([]);
    });
  }

  test("a surrogate pair (an emoji written as two escapes) is stored as that character", async () => {
    const { postJson } = webappFixture();
    const res = await postJson("/projects", '{"title":"fun \\ud83d\\ude00"}');
    expect(res.status).toBe(201);
    expect(((await res.json()) as { title: string }).title).toBe("fun \u{1F600}");
  });
});

describe("POST /projects enforces MAX_JSON_DEPTH before parsing", () => {
  test("a title nested 5000 deep → 400 naming body, not a 500", async () => {
    const { postJson } = webappFixture();
    const problem = await expectProblem(
      await postJson("/projects", `{"title":${"[".repeat(5000)}${"]".repeat(5000)}}`),
      400,
    );
    expect(problem.errors).toEqual([{ field: "body", message: expect.stringContaining("deeper than 32 levels") }]);
  });

  test("the limit is exact; brackets inside strings do not count", async () => {
    const { postJson } = webappFixture({ maxJsonDepth: 3 });
    expect((await postJson("/projects", { title: "[[[[[[{{{{", extra: { a: {} } })).status).toBe(201);
    const problem = await expectProblem(await postJson("/projects", { title: "x", extra: { a: { b: {} } } }), 400);
    expect(problem.errors?.map((e) => e.field)).toEqual(["body"]);
  });

  test("an unterminated hostile body (1 MiB of brackets) is refused as too deep", async () => {
    const { postJson } = webappFixture({ maxBodyBytes: 2 * 1024 * 1024 });
    const problem = await expectProblem(await postJson("/projects", "[".repeat(1024 * 1024)), 400);
    expect(problem.errors?.map((e) => e.field)).toEqual(["body"]);
  });
});

describe("POST /projects enforces MAX_BODY_BYTES", () => {
  const max = 1024;

  test("a body of exactly the limit is accepted", async () => {
    const { postJson } = webappFixture({ maxBodyBytes: max });
    const prefix = '{"title":"t","pad":"';
    const body = `${prefix + "p".repeat(max - prefix.length - 2)}"}`;
    expect(body.length).toBe(max);
    expect((await postJson("/projects", body)).status).toBe(201);
  });

  test("a declared content-length over the limit → 413 before reading", async () => {
    const { postJson } = webappFixture({ maxBodyBytes: max });
    const res = await postJson("/projects", { title: "small" }, { "content-length": String(max + 1) });
    expect((await expectProblem(res, 413)).detail).toContain(`${max} bytes`);
  });

  test("a body over the limit → 413", async () => {
    const { postJson } = webappFixture({ maxBodyBytes: max });
    await expectProblem(await postJson("/projects", { title: "x".repeat(max) }), 413);
  });

  test("a chunked body without content-length over the limit → 413, reading stops early", async () => {
    const { app } = webappFixture({ maxBodyBytes: max });
    let pulled = 0;
    const source = chunkedBody(50 * max);
    const reader = source.getReader();
    const counted = new ReadableStream<Uint8Array>({
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done) return controller.close();
        pulled += value.byteLength;
        controller.enqueue(value);
      },
    });
    const req = new Request("http://localhost/projects", {
      method: "POST",
      body: counted,
      headers: { "content-type": "application/json" },
    });
    expect(req.headers.get("content-length")).toBeNull();
    await expectProblem(await app.handle(req), 413);
    expect(pulled).toBeLessThan(5 * max);
  });
});

describe("path and query parameters are checked, with 400 naming the parameter", () => {
  for (const id of ["abc", "0", "-1", "1.5", "1e3", "0x10", "%20", "%ZZ", "1234567890123456"]) {
    test(`GET /projects/${id} → 400 naming id`, async () => {
      const { request } = webappFixture();
      const problem = await expectProblem(await request("GET", `/projects/${id}`), 400);
      expect(problem.errors?.map((e) => e.field)).toEqual(["id"]);
    });
  }

  test("an id that is valid but unknown → 404", async () => {
    const { request } = webappFixture();
    expect((await expectProblem(await request("GET", "/projects/42"), 404)).detail).toContain("42");
  });

  const badQueries: [string, string[]][] = [
    ["limit=0", ["limit"]],
    ["limit=101", ["limit"]],
    ["limit=abc", ["limit"]],
    ["limit=", ["limit"]],
    ["limit=2.5", ["limit"]],
    ["after=-1", ["after"]],
    ["after=x", ["after"]],
    ["limit=0&after=x", ["limit", "after"]],
    // Given twice, whichever value comes last (the query parser keeps the last one).
    ["limit=abc&limit=2", ["limit"]],
    ["limit=2&limit=abc", ["limit"]],
    ["limit=500&limit=2", ["limit"]],
    ["after=1&after=5", ["after"]],
    ["limit=2&after=1&limit=3&after=4", ["limit", "after"]],
  ];
  for (const [query, fields] of badQueries) {
    test(`GET /projects?${query} → 400 naming ${fields.join(" and ")}`, async () => {
      const { request } = webappFixture();
      const problem = await expectProblem(await request("GET", `/projects?${query}`), 400);
      expect(problem.errors?.map((e) => e.field).sort()).toEqual([...fields].sort());
    });
  }
});
