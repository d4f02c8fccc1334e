/**
 * `make docs`: writes docs/config-reference.md, the reference of every routes.yaml key, from the
 * TypeBox schema the gateway validates with (gateway/src/config/schema.ts and the auth and
 * rate-limit schemas it includes). The schema is the one list of keys: this script only walks it,
 * so a key added there appears here on the next `make docs`, and scripts/test/docs.test.ts fails
 * while the committed file is stale.
 *
 * Usage: bun scripts/docs/config-reference.ts [--check]
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { TSchema } from "@sinclair/typebox";
import { GatewayConfigSchema } from "../../gateway/src/config/schema.ts";
import { githubSlug } from "./markdown.ts";

export const REFERENCE_PATH = "docs/config-reference.md";

/** One row of a section's table. */
export interface KeyRow {
  path: string;
  type: string;
  default: string;
  description: string;
}

interface Section {
  title: string;
  rows: KeyRow[];
}

/**
 * Nested keys that get a table of their own instead of swelling their parent's: the schemas that
 * config/schema.ts includes from auth/ and ratelimit/. Any other nesting stays in its section.
 */
const OWN_SECTION = new Set(["routes[].auth", "routes[].rateLimit"]);

type Schema = TSchema & {
  type?: string;
  description?: string;
  default?: unknown;
  const?: unknown;
  anyOf?: Schema[];
  items?: Schema;
  properties?: Record<string, Schema>;
  patternProperties?: Record<string, Schema>;
  required?: string[];
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  pattern?: string;
};

const isObject = (s: Schema) => s.type === "object" && s.properties !== undefined;
const isRecord = (s: Schema) => s.type === "object" && s.patternProperties !== undefined;
const objectVariant = (s: Schema): Schema | undefined =>
  s.anyOf?.find(isObject) ??
  s.anyOf?.find((v) => v.type === "array" && v.items !== undefined && isObject(v.items))?.items;

/** The type column: the JSON type with its allowed values or range, as a reader writes it in YAML. */
export function describeType(s: Schema): string {
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.anyOf) {
    const variants = s.anyOf.map(describeType);
    return variants.join(" \\| ");
  }
  switch (s.type) {
    case "integer":
    case "number":
      return `${s.type}${range(s.minimum, s.maximum)}`;
    case "string": {
      const length =
        s.minLength !== undefined || s.maxLength !== undefined ? `, length${range(s.minLength, s.maxLength)}` : "";
      const pattern = s.pattern === undefined ? "" : `, pattern ${code(s.pattern)}`;
      return `string${length}${pattern}`;
    }
    case "boolean":
      return "boolean";
    case "array": {
      const item = s.items ? (isObject(s.items) ? "object" : describeType(s.items)) : "any";
      return `list of ${item.includes("\\|") ? `(${item})` : item}${s.minItems ? ` (at least ${s.minItems})` : ""}`;
    }
    case "object":
      return isRecord(s) ? "map" : "object";
    default:
      return "any";
  }
}

/** Inline code that may itself hold backticks (a header-name pattern does). */
function code(text: string): string {
  const fence = text.includes("`") ? "``" : "`";
  return `${fence}${fence.length > 1 ? " " : ""}${text.replaceAll("|", "\\|")}${fence.length > 1 ? " " : ""}${fence}`;
}

function range(min: number | undefined, max: number | undefined): string {
  const fmt = (n: number) => (Number.isInteger(n) && Math.abs(n) >= 10_000 ? n.toLocaleString("en-US") : String(n));
  if (min !== undefined && max !== undefined) return ` ${fmt(min)}–${fmt(max)}`;
  if (min !== undefined) return ` ≥ ${fmt(min)}`;
  if (max !== undefined) return ` ≤ ${fmt(max)}`;
  return "";
}

function describeDefault(s: Schema, required: boolean): string {
  if (s.default !== undefined) {
    return typeof s.default === "string"
      ? `\`${s.default === "" ? '""' : s.default}\``
      : `\`${JSON.stringify(s.default)}\``;
  }
  return required ? "required" : "—";
}

const cell = (text: string) => text.replaceAll("\n", " ").replace(/(?<!\\)\|/g, "\\|");

/** Walks one schema node: a row for the key itself, then rows (or sections) for what it holds. */
function walk(s: Schema, path: string, required: boolean, section: Section, sections: Section[]): void {
  if (OWN_SECTION.has(path)) {
    const own: Section = { title: path, rows: [] };
    sections.push(own);
    section = own;
  }
  section.rows.push({
    path,
    type: describeType(s),
    default: describeDefault(s, required),
    description: s.description ?? "",
  });
  const inner = isObject(s) ? s : s.type === "array" && s.items && isObject(s.items) ? s.items : objectVariant(s);
  const innerPath = s.type === "array" ? `${path}[]` : path;
  if (inner?.properties) {
    for (const [key, child] of Object.entries(inner.properties)) {
      walk(child, `${innerPath}.${key}`, inner.required?.includes(key) ?? false, section, sections);
    }
  } else if (isRecord(s)) {
    const [value] = Object.values(s.patternProperties ?? {});
    if (value && (isObject(value) || objectVariant(value))) walk(value, `${path}.<name>`, false, section, sections);
  }
}

/** Every section of routes.yaml: one per top-level key, plus the included auth and rate-limit schemas. */
export function configSections(schema: Schema = GatewayConfigSchema as Schema): Section[] {
  const sections: Section[] = [];
  for (const [key, child] of Object.entries(schema.properties ?? {})) {
    const section: Section = { title: key, rows: [] };
    sections.push(section);
    walk(child, key, schema.required?.includes(key) ?? false, section, sections);
  }
  return sections;
}

export function renderConfigReference(): string {
  const out = [
    "# routes.yaml reference",
    "",
    "<!-- Generated by `make docs` (scripts/docs/config-reference.ts) from gateway/src/config/schema.ts. Do not edit by hand. -->",
    "",
    "Every key the gateway accepts in `routes.yaml`, taken from the schema it validates the file with. An unknown",
    "key, a wrong type or a value out of range stops the gateway with `file:line:column` and the field. How the keys",
    "work together: [configuration.md](configuration.md) and [gateway.md](gateway.md).",
    "",
    "`<name>` stands for a name you choose; `[]` for every item of a list. _required_ keys have no default.",
  ];
  const sections = configSections();
  out.push("", sections.map((s) => `[${s.title}](#${githubSlug(s.title)})`).join(" · "));
  for (const section of sections) {
    out.push("", `## ${section.title}`, "", "| key | type | default | description |", "| --- | --- | --- | --- |");
    for (const r of section.rows) {
      out.push(`| \`${r.path}\` | ${cell(r.type)} | ${cell(r.default)} | ${cell(r.description)} |`);
    }
  }
  return `${out.join("\n")}\n`;
}

if (import.meta.main) {
  const file = join(import.meta.dir, "../..", REFERENCE_PATH);
  const text = renderConfigReference();
  if (process.argv.includes("--check")) {
    if (readFileSync(file, "utf8") !== text) {
      console.error(`${REFERENCE_PATH} is stale: run make docs`);
      process.exit(1);
    }
  } else {
    writeFileSync(file, text);
    console.log(`wrote ${REFERENCE_PATH}`);
  }
}
