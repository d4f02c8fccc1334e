/**
 * `${VAR}` and `${VAR:-default}` in routes.yaml, replaced from the environment so one file serves
 * `make dev` and the cluster. Replacement happens on the parsed YAML nodes (not the raw text), so
 * line numbers in errors stay those of the file the user edits, and an environment value can
 * never inject YAML structure.
 */
import { isPair, isScalar, isSeq, type Document, visit } from "yaml";
import { parseBool } from "../../../lib/env.ts";

const REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;
const WHOLE_REFERENCE = /^\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}$/;

export interface InterpolationProblem {
  /** Offset of the scalar in the source, for the line number. */
  offset: number;
  /** Dotted path of the field, e.g. `upstreams.webapp.endpoints`. */
  field: string;
  message: string;
}

/** Replaces references in every string scalar of `doc` in place; returns what could not be replaced. */
export function interpolateDocument(
  doc: Document,
  env: Readonly<Record<string, string | undefined>>,
): InterpolationProblem[] {
  const problems: InterpolationProblem[] = [];
  visit(doc, {
    Scalar(key, node, ancestors) {
      if (typeof node.value !== "string" || !node.value.includes("${")) return;
      const source = node.value;
      const missing: string[] = [];
      const replaced = source.replace(REFERENCE, (_m, name: string, fallback: string | undefined) => {
        const value = env[name];
        if (value !== undefined && value !== "") return value;
        if (fallback !== undefined) return fallback;
        missing.push(name);
        return "";
      });
      if (missing.length > 0) {
        problems.push({
          offset: node.range?.[0] ?? 0,
          field: fieldOf(key, ancestors),
          message: `environment variable ${missing.join(", ")} is not set and "${source}" gives no default (write \${${missing[0]}:-default})`,
        });
        return;
      }
      // A scalar that is one whole reference takes a number's or a boolean's type when its value
      // is exactly one, so `timeoutMs: ${TIMEOUT_MS:-5000}` is a number, not the string "5000";
      // anything else stays the text as given (never parsed as YAML: `a #b` keeps its `#b`).
      const whole = node.type === "PLAIN" ? WHOLE_REFERENCE.exec(source) : null;
      if (whole && (whole[2] === "true" || whole[2] === "false")) {
        // A default of true or false makes the reference a boolean, and its variable is read as
        // every boolean variable is (lib/env.ts's parseBool): `TLS=1 make dev` and the gateway agree.
        // A value of spaces only is no value: the default, as envBool has it.
        const flag = parseBool(replaced.trim() === "" ? whole[2] : replaced);
        if (flag === undefined) {
          problems.push({
            offset: node.range?.[0] ?? 0,
            field: fieldOf(key, ancestors),
            message: `${whole[1]}=${JSON.stringify(replaced)} is not a boolean (true/false, 1/0, yes/no, on/off), which "${source}" expects`,
          });
          return;
        }
        node.value = flag;
        return;
      }
      node.value = whole ? typedValue(replaced) : replaced;
    },
  });
  return problems;
}

/**
 * Names the field a visited node belongs to, from its ancestors (pairs and sequences), in the
 * form the schema's problems use (`routes[0].timeoutMs`, `m[1][0]`).
 */
export function fieldOf(key: number | "key" | "value" | null, ancestors: readonly unknown[]): string {
  let name = "";
  const chain = [...ancestors.slice(1), key];
  for (let i = 0; i < chain.length; i++) {
    const node = chain[i];
    if (isPair(node) && isScalar(node.key)) name += `${name ? "." : ""}${String(node.key.value)}`;
    else if (isSeq(node)) {
      // The chain holds nodes, not indices: only the visited node itself comes as its index (the
      // key); an item that is a mapping or a list is found among the sequence's items.
      const next = chain[i + 1];
      const index = typeof next === "number" ? next : node.items.indexOf(next);
      if (index >= 0) name += `[${index}]`;
    }
  }
  return name;
}

/** A decimal number (YAML 1.2's core forms) or true/false as such; any other text as it is ("" included). */
function typedValue(text: string): string | number | boolean {
  if (/^[-+]?(?:\d+|\d*\.\d+)(?:[eE][-+]?\d+)?$/.test(text)) return Number(text);
  if (text === "true") return true;
  if (text === "false") return false;
  return text;
}

/**
 * The first unquoted `${…}` inside a flow collection (`{ … }` or `[ … ]`) that starts before
 * `until`: there YAML reads the reference's braces (and a comma in its default) as structure, and
 * the parse fails with a cascade of errors about tokens. Found by a scan of the text that follows
 * quotes, comments and flow brackets (what a block scalar holds is not told apart: a `|` text with
 * an unbalanced `{` before a reference might be named, so load.ts gives the hint only when the
 * parse breaks at the reference itself). Undefined when there is none.
 */
export function unquotedReferenceInFlow(
  text: string,
  until: number,
): { offset: number; reference: string } | undefined {
  let depth = 0;
  let quote: '"' | "'" | undefined;
  for (let i = 0; i < text.length && i <= until; i++) {
    const ch = text[i]!;
    if (quote) {
      if (ch === "\\" && quote === '"') i++;
      else if (ch === quote) {
        // '' inside single quotes is an escaped quote.
        if (quote === "'" && text[i + 1] === "'") i++;
        else quote = undefined;
      }
      continue;
    }
    if (ch === "#" && (i === 0 || /\s/.test(text[i - 1]!))) {
      const end = text.indexOf("\n", i);
      if (end < 0) break;
      i = end;
    } else if ((ch === '"' || ch === "'") && (i === 0 || /[\s,[{:]/.test(text[i - 1]!))) quote = ch;
    else if (ch === "$" && text[i + 1] === "{") {
      const close = text.indexOf("}", i);
      if (depth > 0) return { offset: i, reference: close < 0 ? text.slice(i) : text.slice(i, close + 1) };
      // Outside a flow collection the reference is plain text: skip it whole.
      if (close < 0) break;
      i = close;
    } else if (ch === "{" || ch === "[") depth++;
    else if ((ch === "}" || ch === "]") && depth > 0) depth--;
  }
  return undefined;
}
