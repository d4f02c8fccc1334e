/**
 * Strict validation of Kubernetes objects with the kubernetes-models package: types AND keys.
 *
 * kubernetes-models' `.validate()` (ajv, compiled from the Kubernetes OpenAPI schema) catches
 * wrong types, bad enums and missing required fields, but accepts any unknown key, so
 * `replcas: 3` passes and the Deployment silently runs 1 replica (docs/design.md, "Known traps"). The
 * package ships compiled validators and TypeScript declarations, not the JSON schema, so unknown
 * keys are found by walking each object against those declarations with the TypeScript type
 * checker: every key must be a property of the type at its place, or fall under an index
 * signature (labels, annotations, resource quantities).
 *
 * Kinds kubernetes-models does not know are either a known custom resource (schema skipped, with
 * a note) or a small hand-written TypeBox schema (the Kustomization file), or an error.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Type as T, type TSchema } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import ts from "typescript";
import { CUSTOM_RESOURCE_VALIDATORS } from "./custom-resources.ts";
import { type KubeObject, type Manifest, type Path, type Problem, problemAt, REPO_ROOT } from "./manifests.ts";

/**
 * Custom resources that a later change may add under k8s/ (autoscaling, monitoring). Their CRD
 * schemas are not installed here, so they are checked for apiVersion/kind/metadata only. Add a
 * line, with the reason, when k8s/ starts using another one. Those k8s/ uses have a hand-written
 * schema in custom-resources.ts instead (KEDA's ScaledObject), checked as strictly as the rest.
 */
export const KNOWN_CUSTOM_RESOURCES: Readonly<Record<string, string>> = {
  "keda.sh/v1alpha1 TriggerAuthentication": "KEDA credentials for a scaler",
  "monitoring.coreos.com/v1 ServiceMonitor": "Prometheus Operator scrape config",
  "monitoring.coreos.com/v1 PodMonitor": "Prometheus Operator scrape config",
};

const KUSTOMIZE_API = "kustomize.config.k8s.io/v1beta1";

/** The keys of a Kustomization this repository may use; unknown keys are errors like elsewhere. */
const KustomizationSchema = T.Object(
  {
    apiVersion: T.Literal(KUSTOMIZE_API),
    kind: T.Literal("Kustomization"),
    metadata: T.Optional(T.Object({ name: T.Optional(T.String()) }, { additionalProperties: false })),
    namespace: T.Optional(T.String({ minLength: 1 })),
    namePrefix: T.Optional(T.String()),
    nameSuffix: T.Optional(T.String()),
    resources: T.Optional(T.Array(T.String({ minLength: 1 }))),
    components: T.Optional(T.Array(T.String({ minLength: 1 }))),
    labels: T.Optional(
      T.Array(
        T.Object(
          {
            pairs: T.Record(T.String(), T.String()),
            includeSelectors: T.Optional(T.Boolean()),
            includeTemplates: T.Optional(T.Boolean()),
          },
          { additionalProperties: false },
        ),
      ),
    ),
    commonAnnotations: T.Optional(T.Record(T.String(), T.String())),
    images: T.Optional(
      T.Array(
        T.Object(
          {
            name: T.String({ minLength: 1 }),
            newName: T.Optional(T.String()),
            newTag: T.Optional(T.String()),
            digest: T.Optional(T.String()),
          },
          { additionalProperties: false },
        ),
      ),
    ),
    replicas: T.Optional(
      T.Array(T.Object({ name: T.String(), count: T.Integer({ minimum: 0 }) }, { additionalProperties: false })),
    ),
    configMapGenerator: T.Optional(T.Array(T.Record(T.String(), T.Unknown()))),
    secretGenerator: T.Optional(T.Array(T.Record(T.String(), T.Unknown()))),
    generatorOptions: T.Optional(T.Record(T.String(), T.Unknown())),
    patches: T.Optional(T.Array(T.Record(T.String(), T.Unknown()))),
  },
  { additionalProperties: false },
);

function apiVersionKind(object: KubeObject): string {
  return `${String(object.apiVersion)} ${String(object.kind)}`;
}

/** `kubernetes-models/apps/v1/Deployment` for apps/v1 Deployment, or undefined if it has no such model. */
export function modelModule(object: KubeObject): string | undefined {
  const { apiVersion, kind } = object;
  if (typeof apiVersion !== "string" || typeof kind !== "string") return undefined;
  if (!/^[a-z0-9.-]+(\/[a-z0-9]+)?$/.test(apiVersion) || !/^[A-Z][A-Za-z0-9]*$/.test(kind)) return undefined;
  const specifier = `kubernetes-models/${apiVersion}/${kind}`;
  return existsSync(join(REPO_ROOT, "node_modules", `${specifier}.d.ts`)) ? specifier : undefined;
}

/** The TypeScript checker over kubernetes-models' declarations, for the kinds given. */
class DeclaredTypes {
  readonly checker: ts.TypeChecker;
  readonly #types = new Map<string, ts.Type>();

  constructor(modules: string[]) {
    // One virtual file naming each kind's interface; the checker resolves everything it imports.
    const file = join(REPO_ROOT, "k8s/test/checks/__declared_kinds__.ts");
    const text = modules
      .map((m, i) => `export type K${i} = import(${JSON.stringify(m)}).I${m.split("/").at(-1)};`)
      .join("\n");
    const options: ts.CompilerOptions = {
      target: ts.ScriptTarget.ESNext,
      module: ts.ModuleKind.ESNext,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      types: [],
      lib: ["lib.es5.d.ts"],
    };
    const host = ts.createCompilerHost(options);
    const getSourceFile = host.getSourceFile.bind(host);
    host.getSourceFile = (name, lang, onError, create) =>
      name === file ? ts.createSourceFile(name, text, lang) : getSourceFile(name, lang, onError, create);
    const fileExists = host.fileExists.bind(host);
    host.fileExists = (name) => name === file || fileExists(name);
    const program = ts.createProgram([file], options, host);
    this.checker = program.getTypeChecker();
    const source = program.getSourceFile(file)!;
    source.statements.forEach((statement, i) => {
      if (ts.isTypeAliasDeclaration(statement))
        this.#types.set(modules[i]!, this.checker.getTypeAtLocation(statement.name));
    });
  }

  typeOf(module: string): ts.Type | undefined {
    const type = this.#types.get(module);
    // An unresolved import yields the error type, which would accept anything.
    return type && !(type.flags & ts.TypeFlags.Any) ? type : undefined;
  }
}

interface KeyProblem {
  path: Path;
  message: string;
}

/** Unknown keys in `value`, walked against `type`. Type mismatches are left to ajv. */
function unknownKeys(
  checker: ts.TypeChecker,
  kind: string,
  value: unknown,
  type: ts.Type,
  path: Path,
  out: KeyProblem[],
): void {
  if (value === null || value === undefined) return;
  type = checker.getNonNullableType(type);
  if (type.flags & (ts.TypeFlags.Any | ts.TypeFlags.Unknown)) return;
  if (type.isUnion()) {
    const candidates = type.types.filter((t) =>
      Array.isArray(value) ? checker.isArrayType(t) : t.flags & ts.TypeFlags.Object && !checker.isArrayType(t),
    );
    if (candidates.length === 0) return;
    // Several object shapes: the value is wrong only if it fits none of them.
    let best: KeyProblem[] | undefined;
    for (const candidate of candidates) {
      const found: KeyProblem[] = [];
      unknownKeys(checker, kind, value, candidate, path, found);
      if (!best || found.length < best.length) best = found;
    }
    out.push(...best!);
    return;
  }
  if (Array.isArray(value)) {
    if (!checker.isArrayType(type)) return;
    const element = checker.getTypeArguments(type as ts.TypeReference)[0]!;
    value.forEach((item, i) => {
      unknownKeys(checker, kind, item, element, [...path, i], out);
    });
    return;
  }
  if (typeof value !== "object" || !(type.flags & ts.TypeFlags.Object)) return;
  const indexType = checker.getIndexTypeOfType(type, ts.IndexKind.String);
  for (const [key, child] of Object.entries(value)) {
    const property = checker.getPropertyOfType(type, key);
    if (property) unknownKeys(checker, kind, child, checker.getTypeOfSymbol(property), [...path, key], out);
    else if (indexType) unknownKeys(checker, kind, child, indexType, [...path, key], out);
    else out.push({ path: [...path, key], message: unknownFieldMessage(checker, type, path, kind) });
  }
}

function unknownFieldMessage(checker: ts.TypeChecker, type: ts.Type, parent: Path, kind: string): string {
  const allowed = checker
    .getPropertiesOfType(type)
    .map((p) => p.name)
    .sort();
  if (allowed.length <= 12) return `unknown field; allowed here: ${allowed.join(", ")}`;
  const explain = [kind.toLowerCase(), ...parent.filter((s) => typeof s === "string")].join(".");
  return `unknown field; \`kubectl explain ${explain}\` lists the ${allowed.length} allowed here`;
}

/** ajv's messages from kubernetes-models' compiled validator, as problems with paths. */
async function typeProblems(module: string, m: Manifest): Promise<KeyProblem[]> {
  const kind = module.split("/").at(-1)!;
  const exports = (await import(module)) as Record<string, new (data: unknown) => { validate(): void }>;
  const Model = exports[kind]!;
  try {
    new Model(m.object).validate();
    return [];
  } catch (err) {
    const errors = (err as { errors?: { instancePath: string; message?: string; params?: Record<string, unknown> }[] })
      .errors;
    if (!errors) throw err;
    return errors.map((e) => {
      const path: Path = e.instancePath
        .split("/")
        .slice(1)
        .map((s) => (/^\d+$/.test(s) ? Number(s) : s.replace(/~1/g, "/").replace(/~0/g, "~")));
      const missing = e.params?.missingProperty;
      return typeof missing === "string"
        ? { path: [...path, missing], message: "required field is missing" }
        : { path, message: e.message ?? "invalid" };
    });
  }
}

export interface StrictValidationResult {
  problems: Problem[];
  /** Objects that were only partly checked, and why. */
  notes: string[];
}

/**
 * Validates manifests strictly. Build it once per test file: creating the TypeScript program for
 * the kinds takes about a second.
 */
export class StrictValidator {
  readonly #declared: DeclaredTypes;

  constructor(manifests: Manifest[], extraModules: string[] = []) {
    const modules = new Set(extraModules);
    for (const m of manifests) {
      const module = modelModule(m.object);
      if (module) modules.add(module);
    }
    this.#declared = new DeclaredTypes([...modules].sort());
  }

  async validate(manifests: Manifest[]): Promise<StrictValidationResult> {
    const problems: Problem[] = [];
    const notes: string[] = [];
    for (const m of manifests) {
      const object = m.object;
      const at = (path: Path, message: string) => problems.push(problemAt(m, path, message));
      if (typeof object.apiVersion !== "string" || typeof object.kind !== "string") {
        at(
          [],
          "not a Kubernetes object: apiVersion and kind are required (a config file belongs in a configMapGenerator's files)",
        );
        continue;
      }
      if (object.apiVersion === KUSTOMIZE_API && object.kind === "Kustomization") {
        for (const e of Value.Errors(KustomizationSchema as TSchema, object)) {
          const path: Path = e.path
            .split("/")
            .slice(1)
            .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
          at(path, e.message === "Unexpected property" ? "unknown field" : e.message);
        }
        continue;
      }
      const module = modelModule(object);
      const validateCustom = module ? undefined : CUSTOM_RESOURCE_VALIDATORS[apiVersionKind(object)];
      if (validateCustom) {
        // A custom resource with a hand-written schema (custom-resources.ts): as strict as the rest.
        for (const p of validateCustom(object)) at(p.path, p.message);
        continue;
      }
      if (!module) {
        const custom = KNOWN_CUSTOM_RESOURCES[apiVersionKind(object)];
        if (custom) {
          notes.push(
            `${m.file}: ${object.kind}/${String(object.metadata?.name)}: ${apiVersionKind(object)} (${custom}) has no schema here; checked apiVersion/kind/metadata only`,
          );
          if (typeof object.metadata?.name !== "string") at(["metadata", "name"], "required field is missing");
        } else {
          at(
            ["kind"],
            `unknown apiVersion/kind "${apiVersionKind(object)}": not a built-in Kubernetes kind (typo?), nor a custom resource listed in k8s/test/checks/strict-schema.ts KNOWN_CUSTOM_RESOURCES`,
          );
        }
        continue;
      }
      const type = this.#declared.typeOf(module);
      if (!type)
        throw new Error(
          `no TypeScript declaration resolved for ${module}; build the StrictValidator with every manifest it will check`,
        );
      const found: KeyProblem[] = [];
      unknownKeys(this.#declared.checker, object.kind, object, type, [], found);
      found.push(...(await typeProblems(module, m)));
      for (const p of found) at(p.path, p.message);
    }
    return { problems, notes };
  }
}
