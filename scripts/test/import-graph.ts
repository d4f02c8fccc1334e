/**
 * The repository's import graph, for the import rules in imports.test.ts. Bun's transpiler says
 * which imports are loaded at run time; it erases type-only imports, so TypeScript's
 * `preProcessFile` (a lexer pass, no type checking) supplies those too: a circle made of
 * `import type` still ties modules together for the compiler and for a reader.
 */
import { existsSync } from "node:fs";
import { builtinModules } from "node:module";
import { dirname, join, normalize } from "node:path";
import ts from "typescript";

export interface Edge {
  /** The specifier as written. */
  spec: string;
  /** Repository-relative path of the imported file, or undefined for a package. */
  target: string | undefined;
  /** The package name (`node:fs`, `bun`, `@grpc/grpc-js`), for a non-relative import. */
  pkg: string | undefined;
  /** Erased at run time: `import type`, or an import used only in types. */
  typeOnly: boolean;
}

export type Graph = Map<string, Edge[]>;

/** Tracked .ts/.js files, and new ones not yet committed (not ignored), that exist on disk. */
export function sourceFiles(root: string): string[] {
  const ls = Bun.spawnSync(["git", "ls-files", "--cached", "--others", "--exclude-standard", "--", "*.ts", "*.js"], {
    cwd: root,
  });
  if (ls.exitCode !== 0) throw new Error(`git ls-files failed in ${root}: ${ls.stderr.toString()}`);
  return ls.stdout
    .toString()
    .split("\n")
    .filter((f) => f && existsSync(join(root, f)));
}

function packageName(spec: string): string {
  if (spec.startsWith("node:") || spec.startsWith("bun:")) return spec;
  const parts = spec.split("/");
  return spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!;
}

/** Every import of one file: specifier, what it resolves to, and whether it is type-only. */
export function importsOf(file: string, source: string): Edge[] {
  const loader = file.endsWith(".js") ? "js" : "ts";
  const runtime = new Set(new Bun.Transpiler({ loader }).scan(source).imports.map((i) => i.path));
  const all = new Set([...runtime, ...ts.preProcessFile(source, true, true).importedFiles.map((f) => f.fileName)]);
  return [...all].map((spec) => {
    const relative = spec.startsWith("./") || spec.startsWith("../");
    return {
      spec,
      target: relative ? normalize(join(dirname(file), spec)) : undefined,
      pkg: relative ? undefined : packageName(spec),
      typeOnly: !runtime.has(spec),
    };
  });
}

export async function buildGraph(root: string, files = sourceFiles(root)): Promise<Graph> {
  const graph: Graph = new Map();
  for (const file of files) graph.set(file, importsOf(file, await Bun.file(join(root, file)).text()));
  return graph;
}

export interface Cycle {
  /** A path that starts and ends on the same file: the shortest from the component's first file. */
  path: string[];
  /** Every file tied into the same knot (the strongly connected component), sorted. */
  members: string[];
}

/**
 * One circle per strongly connected component (Tarjan). Edges to files outside the graph are
 * ignored. Iterative, so a long chain of imports cannot overflow the stack.
 */
export function findCycles(graph: Map<string, string[]>): Cycle[] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const components: string[][] = [];
  let next = 0;
  for (const start of graph.keys()) {
    if (index.has(start)) continue;
    const work: { node: string; i: number }[] = [{ node: start, i: 0 }];
    index.set(start, next);
    low.set(start, next++);
    stack.push(start);
    onStack.add(start);
    while (work.length) {
      const frame = work.at(-1)!;
      const targets = graph.get(frame.node) ?? [];
      if (frame.i < targets.length) {
        const to = targets[frame.i++]!;
        if (!graph.has(to)) continue;
        if (!index.has(to)) {
          index.set(to, next);
          low.set(to, next++);
          stack.push(to);
          onStack.add(to);
          work.push({ node: to, i: 0 });
        } else if (onStack.has(to)) low.set(frame.node, Math.min(low.get(frame.node)!, index.get(to)!));
        continue;
      }
      work.pop();
      const parent = work.at(-1);
      if (parent) low.set(parent.node, Math.min(low.get(parent.node)!, low.get(frame.node)!));
      if (low.get(frame.node) === index.get(frame.node)) {
        const component: string[] = [];
        let member: string;
        do {
          member = stack.pop()!;
          onStack.delete(member);
          component.push(member);
        } while (member !== frame.node);
        const selfLoop = (graph.get(frame.node) ?? []).includes(frame.node);
        if (component.length > 1 || selfLoop) components.push(component.reverse());
      }
    }
  }
  return components.map((c) => ({ path: shortestCircle(graph, new Set(c), c[0]!), members: [...c].sort() }));
}

/** Breadth-first from `from` back to itself, inside one component. */
function shortestCircle(graph: Map<string, string[]>, members: Set<string>, from: string): string[] {
  const cameFrom = new Map<string, string>();
  const queue = [from];
  for (let head = 0; head < queue.length; head++) {
    const node = queue[head]!;
    for (const to of graph.get(node) ?? []) {
      if (!members.has(to)) continue;
      if (to === from) {
        const path = [from];
        for (let at: string | undefined = node; at !== from && at !== undefined; at = cameFrom.get(at)) path.push(at);
        return [from, ...path.slice(1).reverse(), from];
      }
      if (!cameFrom.has(to)) {
        cameFrom.set(to, node);
        queue.push(to);
      }
    }
  }
  return [from, from];
}

/** The graph as plain adjacency, file to the files it imports (packages dropped). */
export function fileEdges(graph: Graph): Map<string, string[]> {
  return new Map([...graph].map(([file, edges]) => [file, edges.flatMap((e) => (e.target ? [e.target] : []))]));
}

/** A circle written out, each step marked when the import is type-only, then the rest of its knot. */
export function describeCycle(graph: Graph, { path, members }: Cycle): string {
  let text = path[0]!;
  for (let i = 1; i < path.length; i++) {
    const edge = graph.get(path[i - 1]!)?.find((e) => e.target === path[i]);
    text += ` ${edge?.typeOnly ? "-(type)->" : "->"} ${path[i]}`;
  }
  const others = members.filter((m) => !path.includes(m));
  return others.length ? `${text} (also in this knot: ${others.join(", ")})` : text;
}

export const isTest = (file: string) => /\.test\.[jt]s$/.test(file) || file.split("/").slice(0, -1).includes("test");

export function isBuiltin(pkg: string): boolean {
  return pkg === "bun" || pkg.startsWith("bun:") || pkg.startsWith("node:") || builtinModules.includes(pkg);
}
