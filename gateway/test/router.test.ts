import { describe, expect, test } from "bun:test";
import { Router } from "../src/routing/router.ts";
import { normalizePath } from "../src/routing/path.ts";

const routes = [
  { name: "projects", path: "/projects", match: "prefix" as const, methods: ["GET", "POST"] as const },
  { name: "verify", path: "/verify", match: "exact" as const, methods: ["POST"] as const },
  { name: "deep", path: "/a/b", match: "prefix" as const, methods: ["GET"] as const },
  { name: "shallow", path: "/a", match: "prefix" as const, methods: ["DELETE"] as const },
];
const router = new Router(routes);
const name = (method: string, path: string) => {
  const m = router.match(method, path);
  return m.kind === "matched" ? m.route.name : m.kind;
};

describe("route matching", () => {
  test("exact routes match with or without a trailing slash", () => {
    expect(name("POST", "/verify")).toBe("verify");
    expect(name("POST", "/verify/")).toBe("verify");
    expect(name("POST", "/verify/x")).toBe("not-found");
  });

  test("prefix routes match whole segments only", () => {
    expect(name("POST", "/projects")).toBe("projects");
    expect(name("POST", "/projects/")).toBe("projects");
    expect(name("GET", "/projects/42")).toBe("projects");
    expect(name("GET", "/projectsX")).toBe("not-found");
  });

  test("the longest prefix wins", () => {
    expect(name("GET", "/a/b/c")).toBe("deep");
    expect(name("DELETE", "/a/c")).toBe("shallow");
  });

  test("a known path with another method is 405 with the allowed methods (HEAD with GET)", () => {
    expect(router.match("DELETE", "/projects")).toEqual({ kind: "method-not-allowed", allow: ["GET", "POST", "HEAD"] });
    expect(name("HEAD", "/projects/1")).toBe("projects");
  });

  test("unknown paths are not found", () => {
    expect(name("GET", "/")).toBe("not-found");
    expect(name("GET", "/nothing")).toBe("not-found");
  });
});

describe("path normalisation", () => {
  test("ordinary paths pass unchanged", () => {
    expect(normalizePath("/projects/1")).toEqual({ ok: true, path: "/projects/1" });
  });

  test("dot segments, encoded dots and doubled slashes are resolved before matching", () => {
    expect(normalizePath("/projects/../verify")).toEqual({ ok: true, path: "/verify" });
    expect(normalizePath("/projects/%2e%2e/verify")).toEqual({ ok: true, path: "/verify" });
    expect(normalizePath("/projects/%2E./admin")).toEqual({ ok: true, path: "/admin" });
    expect(normalizePath("//projects//1")).toEqual({ ok: true, path: "/projects/1" });
    expect(normalizePath("/projects/./1/")).toEqual({ ok: true, path: "/projects/1/" });
  });

  test("percent-encoded letters, digits and - . _ ~ are decoded, so an encoded path cannot miss its route", () => {
    // An upstream decodes `/%61dmin` to `/admin`; matched raw it would miss the /admin route and
    // its guards, and fall to a broader one.
    expect(normalizePath("/%61dmin/x")).toEqual({ ok: true, path: "/admin/x" });
    expect(normalizePath("/projects/%31%2D%5f%7E%2E")).toEqual({ ok: true, path: "/projects/1-_~." });
    const verify = normalizePath("/%76erify");
    expect(verify.ok && name("POST", verify.path)).toBe("verify");
    // Reserved and other characters stay encoded, their hex digits in upper case (RFC 3986 §6.2.2.1).
    expect(normalizePath("/a/%3f%20%c3%a9%3D")).toEqual({ ok: true, path: "/a/%3F%20%C3%A9%3D" });
    expect(normalizePath("/a/%25%34%31")).toEqual({ ok: true, path: "/a/%2541" });
  });

  test("climbing above the root, encoded slashes, backslashes and bad escapes are rejected", () => {
    for (const bad of ["/../etc/passwd", "/projects/..%2fadmin", "/a%5cb", "/a\\b", "/%zz", "/x%00"]) {
      expect(normalizePath(bad)).toMatchObject({ ok: false, status: 400 });
    }
  });

  test("very long paths are 414", () => {
    expect(normalizePath(`/${"a".repeat(5000)}`)).toMatchObject({ ok: false, status: 414 });
  });
});
