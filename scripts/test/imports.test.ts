/**
 * The import rules, over every .ts/.js file git knows (tracked, or new and not ignored):
 * no import circle anywhere, type-only imports included; lib/ (shared by every service) imports
 * only lib/, proto/ and packages, its tests also the stack harness scripts/stack/testing/; no
 * service or lib source imports scripts/ or bench/ (tests may); every import names a file that
 * exists in the repository, or a builtin or declared package.
 */
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import {
  buildGraph,
  describeCycle,
  type Edge,
  fileEdges,
  findCycles,
  type Graph,
  importsOf,
  isBuiltin,
  isTest,
} from "./import-graph.ts";

const ROOT = resolve(import.meta.dir, "../..");
const graph = await buildGraph(ROOT);
const pkg = (await Bun.file(`${ROOT}/package.json`).json()) as Record<string, Record<string, string> | undefined>;
const declared = new Set([...Object.keys(pkg.dependencies ?? {}), ...Object.keys(pkg.devDependencies ?? {})]);

const under = (dir: string, path: string | undefined) => path?.startsWith(`${dir}/`) ?? false;
/** "file imports spec" lines for every edge of a matching file that breaks `allowed`. */
function violations(g: Graph, applies: (file: string) => boolean, allowed: (e: Edge, file: string) => boolean) {
  return [...g].flatMap(([file, edges]) =>
    applies(file) ? edges.filter((e) => !allowed(e, file)).map((e) => `${file} imports ${e.spec}`) : [],
  );
}

describe("the import graph of the repository", () => {
  test("covers the services, lib/, scripts/ and their tests", () => {
    for (const dir of ["gateway/src", "webapp/src", "rpcapp/src", "lib", "scripts", "k8s/test"])
      expect({ dir, found: [...graph.keys()].some((f) => under(dir, f)) }).toEqual({ dir, found: true });
    expect([...graph.keys()].filter((f) => under("lib", f) && !isTest(f)).length).toBeGreaterThan(5);
    expect([...graph.values()].flat().filter((e) => e.target && !e.typeOnly).length).toBeGreaterThan(100);
    expect([...graph.values()].flat().filter((e) => e.typeOnly).length).toBeGreaterThan(10);
  });

  test("has no import circle (type-only imports included)", () => {
    expect(findCycles(fileEdges(graph)).map((c) => describeCycle(graph, c))).toEqual([]);
  });

  test("lib/ imports only lib/, proto/ and packages; its tests also the stack harness and the local PKI", () => {
    const allowed = (e: Edge, file: string) =>
      e.pkg !== undefined ||
      under("lib", e.target) ||
      under("proto", e.target) ||
      (isTest(file) && (under("scripts/stack/testing", e.target) || e.target === "scripts/tls/pki.ts"));
    expect(violations(graph, (f) => under("lib", f), allowed)).toEqual([]);
  });

  test("no gateway/, webapp/, rpcapp/ or lib/ source imports scripts/ or bench/ (tests may)", () => {
    const isService = (f: string) => ["gateway", "webapp", "rpcapp", "lib"].some((d) => under(d, f)) && !isTest(f);
    const allowed = (e: Edge) => !under("scripts", e.target) && !under("bench", e.target);
    expect(violations(graph, isService, allowed)).toEqual([]);
  });

  test("every import names a file in the repository or a package that is a builtin or in package.json", () => {
    const allowed = (e: Edge) =>
      e.pkg !== undefined
        ? isBuiltin(e.pkg) || declared.has(e.pkg)
        : !e.target!.startsWith("../") && existsSync(join(ROOT, e.target!));
    expect(violations(graph, () => true, allowed)).toEqual([]);
  });
});

describe("the circle finder", () => {
  test("finds a planted circle and writes its path, with type-only steps marked", () => {
    // The shape of the gateway circle being removed: transports -> telemetry -> outcome -(type)-> transport.
    const planted: Graph = new Map([
      ["gateway/src/proxy/http.ts", importsOf("gateway/src/proxy/http.ts", 'import { t } from "../telemetry.ts";')],
      [
        "gateway/src/telemetry.ts",
        importsOf(
          "gateway/src/telemetry.ts",
          'import type { HttpOutcome } from "./proxy/http.ts";\nimport { classify } from "./upstream/outcome.ts";\nclassify();',
        ),
      ],
      [
        "gateway/src/upstream/outcome.ts",
        importsOf("gateway/src/upstream/outcome.ts", 'import type { HttpOutcome } from "../proxy/http.ts";'),
      ],
      ["gateway/src/leaf.ts", importsOf("gateway/src/leaf.ts", 'import { x } from "./telemetry.ts";\nx();')],
    ]);
    const cycles = findCycles(fileEdges(planted));
    expect(cycles.map((c) => describeCycle(planted, c))).toEqual([
      "gateway/src/proxy/http.ts -> gateway/src/telemetry.ts -(type)-> gateway/src/proxy/http.ts" +
        " (also in this knot: gateway/src/upstream/outcome.ts)",
    ]);
  });

  test("finds each separate knot and a file importing itself, and nothing in a tree", () => {
    const adjacency = new Map([
      ["a", ["b"]],
      ["b", ["c"]],
      ["c", ["a", "d"]],
      ["d", ["e"]],
      ["e", ["d"]],
      ["f", ["f"]],
      ["g", ["a", "h"]],
      ["h", []],
    ]);
    expect(findCycles(adjacency).map((c) => c.path)).toEqual([
      ["d", "e", "d"],
      ["a", "b", "c", "a"],
      ["f", "f"],
    ]);
    expect(
      findCycles(
        new Map([
          ["x", ["y", "z"]],
          ["y", ["z"]],
          ["z", []],
        ]),
      ),
    ).toEqual([]);
  });

  test("Bun's transpiler alone misses type-only imports; the graph keeps them, marked", () => {
    const edges = importsOf("a.ts", 'import type { T } from "./t.ts";\nimport { v } from "./v.ts";\nv();');
    expect(new Bun.Transpiler({ loader: "ts" }).scan('import type { T } from "./t.ts";').imports).toEqual([]);
    expect(edges.map((e) => [e.spec, e.typeOnly])).toEqual([
      ["./v.ts", false],
      ["./t.ts", true],
    ]);
  });
});
