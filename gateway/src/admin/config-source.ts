/**
 * The routes.yaml text in force as the admin API shows it (/config/source, and the dashboard's
 * copy): as written — comments, layout, `${VAR}` references unexpanded — except that nothing
 * secret survives, even behind the admin token: a config shown on a screen or pasted into an
 * issue must not leak a credential (docs/security.md, "The admin listener").
 *
 * Replaced by `<redacted>`:
 * - the value of every key that names a secret — an API key's `sha256` (a digest is a guessing
 *   oracle for weak keys), anything called secret, token, password, credential, private key or
 *   digest; `secretEnv`, which only names a variable, stays;
 * - the default of every `${VAR:-default}` whose variable names a secret (`${JWT_SECRET:-…}`);
 * - anywhere in the text, comments included: the values of the secrets the file refers to
 *   (each `secretEnv` variable and each secret-named `${VAR}`, as the environment holds them),
 *   any other value the caller names (ADMIN_TOKEN), and anything shaped like a SHA-256 digest
 *   (64 hex digits).
 */
import { isMap, isPair, isScalar, isSeq, parseDocument, visit } from "yaml";

export const REDACTED = "<redacted>";

/** A key that says its value is a secret (`apiKey` is not one: it holds the key rules, digests inside). */
const SECRET_KEY = /secret|token|passw(or)?d|credential|private|digest|sha256/i;
/** A variable name that says it holds a secret. */
const SECRET_VARIABLE = /secret|token|passw(or)?d|credential|private|digest|sha256|api[-_]?key/i;
/** Keys that match SECRET_KEY but hold no secret: a variable's name, a flag. */
const NOT_SECRET_KEYS = new Set(["secretEnv", "forwardCredential"]);
const REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}/g;
const ANY_REFERENCE = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}/g;
const HEX_DIGEST = /\b[0-9a-fA-F]{64}\b/g;
/** Shorter values are not searched for in the text: they would match ordinary words. */
const MIN_SECRET_LENGTH = 8;

type Env = Readonly<Record<string, string | undefined>>;

/** `text` with every secret replaced (see the file comment). `alsoHide`: other values never to show. */
export function redactConfigSource(text: string, env: Env, alsoHide: readonly string[] = []): string {
  const secrets = new Set(alsoHide);
  /** Source ranges to replace, by start (a leaf inside a secret-named map may be found twice). */
  const edits = new Map<number, number>();

  const doc = parseDocument(text);
  visit(doc, {
    Pair(_key, pair) {
      if (!isPair(pair) || !isScalar(pair.key) || typeof pair.key.value !== "string") return;
      const name = pair.key.value;
      const value = pair.value;
      if (name === "secretEnv" && isScalar(value) && typeof value.value === "string") {
        const held = env[value.value];
        if (held) secrets.add(held);
        return;
      }
      if (NOT_SECRET_KEYS.has(name) || !SECRET_KEY.test(name)) return;
      // A secret-named map or list (e.g. `tokens: […]`): each of its string leaves goes.
      if (isMap(value) || isSeq(value)) {
        visit(value, {
          Scalar(k, node) {
            if (k !== "key" && typeof node.value === "string" && node.range) redactRange(node.range, edits);
          },
        });
        return;
      }
      if (isScalar(value) && typeof value.value === "string" && value.value !== "" && value.range)
        redactRange(value.range, edits);
    },
  });

  let out = text;
  // Right to left, so the offsets of the edits still to make stay valid.
  for (const [from, to] of [...edits].sort((a, b) => b[0] - a[0]))
    out = `${out.slice(0, from)}"${REDACTED}"${out.slice(to)}`;

  for (const [, name] of text.matchAll(ANY_REFERENCE)) {
    if (!SECRET_VARIABLE.test(name!)) continue;
    const held = env[name!];
    if (held) secrets.add(held);
  }
  out = out.replace(REFERENCE, (whole, name: string, fallback: string) =>
    SECRET_VARIABLE.test(name) && fallback !== "" ? `\${${name}:-${REDACTED}}` : whole,
  );
  for (const secret of [...secrets].sort((a, b) => b.length - a.length))
    if (secret.length >= MIN_SECRET_LENGTH) out = out.replaceAll(secret, REDACTED);
  return out.replace(HEX_DIGEST, REDACTED);
}

function redactRange(range: readonly [number, number, number], edits: Map<number, number>): void {
  edits.set(range[0], range[1]);
}
