/**
 * What the Dockerfile tests need to read an image recipe without a Docker engine: the stages of a
 * Dockerfile (dockerfile-ast), the .dockerignore rules as Docker applies them, and the files a
 * service's entry point pulls in.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { DockerfileParser, type From, type Instruction } from "dockerfile-ast";
import { REPO_ROOT } from "./manifests.ts";

export interface Stage {
  from: From;
  /** The `AS name` of the stage, if any. */
  name: string | null;
  instructions: Instruction[];
}

/** `<file>`'s stages, in order, each with the instructions after its FROM. */
export function stagesOf(text: string): Stage[] {
  const stages: Stage[] = [];
  const dockerfile = DockerfileParser.parse(text);
  const froms = dockerfile.getFROMs();
  for (const instruction of dockerfile.getInstructions()) {
    const from = froms.find((f) => f.getRange().start.line === instruction.getRange().start.line);
    if (from) stages.push({ from, name: from.getBuildStage(), instructions: [] });
    else stages.at(-1)?.instructions.push(instruction);
  }
  return stages;
}

export function argsOf(instruction: Instruction): string[] {
  return instruction.getArguments().map((a) => a.getValue());
}

/** `--from=build` → { from: "build" } (flags are not among the arguments). */
export function flagsOf(instruction: Instruction): Record<string, string | null> {
  const flags =
    (
      instruction as Instruction & { getFlags?: () => { getName(): string; getValue(): string | null }[] }
    ).getFlags?.() ?? [];
  return Object.fromEntries(flags.map((f) => [f.getName(), f.getValue()]));
}

export function byKeyword(stage: Stage, keyword: string): Instruction[] {
  return stage.instructions.filter((i) => i.getKeyword() === keyword);
}

/** The exec-form (JSON) arguments of an ENTRYPOINT/CMD, or undefined for the shell form. */
export function execForm(instruction: Instruction): string[] | undefined {
  try {
    const parsed: unknown = JSON.parse(instruction.getArgumentsContent() ?? "");
    return Array.isArray(parsed) && parsed.every((s) => typeof s === "string") ? parsed : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether Docker sends `path` (repository-relative) in the build context, per .dockerignore:
 * patterns are matched against the path and each of its parent directories, the last matching
 * pattern wins, and `!` re-includes (https://docs.docker.com/build/concepts/context/#dockerignore-files).
 */
export function isInBuildContext(path: string, dockerignore: string): boolean {
  const parents = path.split("/").map((_, i, parts) => parts.slice(0, i + 1).join("/"));
  let included = true;
  for (const raw of dockerignore.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const negated = line.startsWith("!");
    const pattern = line.slice(negated ? 1 : 0).replace(/^\/+|\/+$/g, "");
    const glob = new Bun.Glob(pattern);
    if (parents.some((p) => glob.match(p))) included = negated;
  }
  return included;
}

export interface ImportedFile {
  /** Repository-relative path. */
  file: string;
  /** Who imports it. */
  from: string;
}

const transpiler = new Bun.Transpiler({ loader: "ts" });

/** Where Bun's resolver finds a relative import (extensions, index files); the plain path if nowhere. */
function resolveImport(specifier: string, dir: string): string {
  try {
    return Bun.resolveSync(specifier, dir);
  } catch {
    return resolve(dir, specifier);
  }
}

/**
 * Every repository file reachable from `entry` through relative imports (text imports of .proto
 * files included), and every package it imports by name.
 */
export function importClosure(entry: string): { files: ImportedFile[]; packages: Map<string, string> } {
  const files: ImportedFile[] = [];
  const packages = new Map<string, string>();
  const seen = new Set<string>();
  const visit = (file: string, from: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    files.push({ file, from });
    const absolute = join(REPO_ROOT, file);
    if (!/\.[cm]?[jt]s$/.test(file) || !existsSync(absolute)) return;
    for (const { path } of transpiler.scanImports(readFileSync(absolute, "utf8"))) {
      if (path.startsWith(".")) visit(relative(REPO_ROOT, resolveImport(path, dirname(absolute))), file);
      else if (!/^(node|bun):|^bun$/.test(path))
        packages.set(path.startsWith("@") ? path.split("/").slice(0, 2).join("/") : path.split("/")[0]!, file);
    }
  };
  visit(entry, entry);
  return { files, packages };
}
