/**
 * Reads every Kubernetes manifest under k8s/ (recursively, so files added later are covered)
 * into plain objects, keeping each one's YAML document so problems can name the line.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { type Document, LineCounter, parseAllDocuments, isMap, isSeq, type Node as YamlNode } from "yaml";

export const REPO_ROOT = resolve(import.meta.dir, "../../..");
export const K8S_DIR = join(REPO_ROOT, "k8s");

export type Path = (string | number)[];
export type KubeObject = Record<string, unknown> & {
  apiVersion?: unknown;
  kind?: unknown;
  metadata?: { name?: unknown; namespace?: unknown };
};

export interface Manifest {
  /** Repository-relative path, e.g. `k8s/webapp.yaml`. */
  file: string;
  /** Position of the document in its file (0-based). */
  index: number;
  object: KubeObject;
  doc: Document;
  lines: LineCounter;
}

/** One thing wrong with a manifest, printed as `file:line: Kind/name field: message`. */
export interface Problem {
  file: string;
  line?: number;
  object: string;
  field: string;
  message: string;
}

export function formatProblem(p: Problem): string {
  const where = p.line === undefined ? p.file : `${p.file}:${p.line}`;
  return `${where}: ${p.object}${p.field ? ` ${p.field}` : ""}: ${p.message}`;
}

/** `spec.template.spec.containers[0].ports[1].containerPort` */
export function formatPath(path: Path): string {
  let out = "";
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else if (/^[A-Za-z_$][\w$]*$/.test(seg)) out += out ? `.${seg}` : seg;
    else out += `[${JSON.stringify(seg)}]`;
  }
  return out;
}

/** `Deployment/webapp` */
export function objectName(object: KubeObject): string {
  const kind = typeof object.kind === "string" ? object.kind : "(no kind)";
  const name = typeof object.metadata?.name === "string" ? object.metadata.name : "(no name)";
  return `${kind}/${name}`;
}

/** Files kustomize reads as data (generator inputs, patches), not as whole objects. */
function dataFilesOf(kustomizationFile: string): Set<string> {
  const out = new Set<string>();
  const k = parseAllDocuments(readFileSync(kustomizationFile, "utf8"))[0]?.toJS() as
    | Record<string, unknown>
    | undefined;
  const dir = dirname(kustomizationFile);
  const add = (p: unknown) => typeof p === "string" && out.add(resolve(dir, p.replace(/^[^=]*=/, "")));
  for (const gen of [...asArray(k?.configMapGenerator), ...asArray(k?.secretGenerator)]) {
    for (const f of asArray((gen as { files?: unknown })?.files)) add(f);
  }
  for (const patch of [...asArray(k?.patches), ...asArray(k?.patchesStrategicMerge), ...asArray(k?.patchesJson6902)]) {
    add(typeof patch === "string" ? patch : (patch as { path?: unknown })?.path);
  }
  return out;
}

function asArray(v: unknown): unknown[] {
  return Array.isArray(v) ? v : [];
}

/** Folders under k8s/ whose YAML is not part of what `kubectl apply -k k8s/` deploys. */
export const NOT_DEPLOYED: ReadonlySet<string> = new Set(["test", "node_modules", "vendor", "examples"]);

function walkYamlFiles(dir: string, out: string[]): void {
  for (const entry of readdirSync(dir).sort()) {
    const full = join(dir, entry);
    if (statSync(full).isDirectory()) {
      // Test fixtures and dependencies are not deployed; vendor/ holds third-party installs that
      // `make up` applies on their own (KEDA), checked by k8s/test/vendor.test.ts instead;
      // examples/ holds alternatives a person applies by hand, never `make up` (cert-manager's
      // issuers), checked by their own tests (k8s/test/cert-manager.test.ts).
      if (!NOT_DEPLOYED.has(entry)) walkYamlFiles(full, out);
    } else if (/\.ya?ml$/.test(entry)) {
      out.push(full);
    }
  }
}

/** Absolute paths of every YAML file under `root` that holds Kubernetes objects. */
export function manifestFiles(root = K8S_DIR): string[] {
  const all: string[] = [];
  walkYamlFiles(root, all);
  const data = new Set<string>();
  for (const f of all) if (/kustomization\.ya?ml$/.test(f)) for (const d of dataFilesOf(f)) data.add(d);
  return all.filter((f) => !data.has(f));
}

export class ManifestParseError extends Error {
  override name = "ManifestParseError";
}

/** Parses one file's documents; `file` is the name used in messages. */
export function parseManifests(text: string, file: string): Manifest[] {
  const lines = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: true });
  if (!Array.isArray(docs)) throw new ManifestParseError(`${file}: not a YAML stream`);
  const out: Manifest[] = [];
  docs.forEach((doc, index) => {
    if (doc.errors.length > 0) {
      const first = doc.errors[0]!;
      const line = first.linePos?.[0].line;
      throw new ManifestParseError(`${file}${line ? `:${line}` : ""}: invalid YAML: ${first.message}`);
    }
    const object = doc.toJS() as unknown;
    if (object === null || object === undefined) return; // an empty document (comments only)
    if (typeof object !== "object" || Array.isArray(object)) {
      throw new ManifestParseError(`${file}: document ${index + 1} is not a mapping`);
    }
    out.push({ file, index, object: object as KubeObject, doc, lines });
  });
  return out;
}

export function loadManifests(files = manifestFiles()): Manifest[] {
  return files.flatMap((f) => parseManifests(readFileSync(f, "utf8"), relative(REPO_ROOT, f)));
}

/** The line where `path` is written in the manifest's document (the key itself, when it exists). */
export function lineOf(m: Manifest, path: Path): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    const parent = m.doc.getIn(path.slice(0, n - 1), true) as YamlNode | undefined;
    const key = path[n - 1];
    if (n > 0 && isMap(parent)) {
      const pair = parent.items.find((p) => (p.key as { value?: unknown } | null)?.value === key);
      const range = (pair?.key as YamlNode | undefined)?.range;
      if (range) return m.lines.linePos(range[0]).line;
    } else if (n > 0 && isSeq(parent) && typeof key === "number") {
      const range = (parent.items[key] as YamlNode | undefined)?.range;
      if (range) return m.lines.linePos(range[0]).line;
    } else if (n === 0) {
      const range = m.doc.contents?.range;
      return range ? m.lines.linePos(range[0]).line : undefined;
    }
  }
  return undefined;
}

export function problemAt(m: Manifest, path: Path, message: string): Problem {
  return { file: m.file, line: lineOf(m, path), object: objectName(m.object), field: formatPath(path), message };
}

/**
 * Every manifest, with one file's text edited as a person would edit it: the first `from` in
 * `file` becomes `to`. Returns the manifests and the line of the edit, for expected messages.
 */
export function withEdit(
  file: string,
  from: string,
  to: string,
  files = manifestFiles(),
): { manifests: Manifest[]; line: number } {
  const absolute = join(REPO_ROOT, file);
  const text = readFileSync(absolute, "utf8");
  const at = text.indexOf(from);
  if (at < 0) throw new Error(`${file} does not contain ${JSON.stringify(from)}: update the test`);
  const edited = text.slice(0, at) + to + text.slice(at + from.length);
  const line = text.slice(0, at + from.length - from.trimStart().length).split("\n").length;
  const manifests = files.flatMap((f) =>
    f === absolute ? parseManifests(edited, file) : parseManifests(readFileSync(f, "utf8"), relative(REPO_ROOT, f)),
  );
  return { manifests, line };
}
