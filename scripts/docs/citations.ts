/**
 * File paths cited in source comments (a design doc, `lib/lifecycle.ts`) that do not exist in the
 * repository. Comments are found per language by their markers; in them, any
 * token that looks like a file name with an extension we keep in the repo is checked. A token is
 * found when it names a file from the repository root, from the citing file's folder, or as the
 * tail of a file's path (`ratelimit/peers.ts` written from inside gateway/src). URLs, absolute
 * paths (a container's `/etc/…`), package paths and placeholders (`<name>`, `*`, `…`) are not files
 * of this repository and are skipped.
 */
import { dirname, join, normalize } from "node:path";
import { commentStyle, splitComments } from "./comments.ts";
import packageJson from "../../package.json" with { type: "json" };

const CITED_EXTENSIONS = "md|ts|js|mjs|yaml|yml|json|proto|lua|toml|sh|py|html|css";
const PATH_TOKEN = new RegExp(`[A-Za-z0-9_.@~/-]*[A-Za-z0-9_-]\\.(?:${CITED_EXTENSIONS})(?![A-Za-z0-9_-])`, "g");

export interface StaleCitation {
  file: string;
  line: number;
  cited: string;
}

/** Bare names (no folder) are checked when they name a document or code; a bare `x.yml` is as often a key or a temp file. */
const BARE_CHECKED = /\.(md|ts|js|mjs|proto|lua)$/;

/** The packages package.json names: `ipaddr.js` in a comment is the library, not a file. */
const DEPENDENCIES: ReadonlySet<string> = new Set(
  Object.keys({ ...packageJson.dependencies, ...packageJson.devDependencies }),
);

function isCheckable(token: string): boolean {
  const base = token.slice(token.lastIndexOf("/") + 1);
  return !(
    token.startsWith("/") || // a path inside a container or on the host, not in the repository
    token.startsWith("@") || // a package's file
    token.startsWith("~") ||
    /^\.\.[^/]/.test(token) || // the kubelet's `..data/` link of a mounted ConfigMap
    token.includes("node_modules") ||
    DEPENDENCIES.has(token) || // a package named in prose (`ipaddr.js`), not a file
    /^[A-Z][A-Za-z]*\.js$/.test(token) || // Node.js and friends: names, not files
    /^[a-z]\.[a-z]+$/.test(base) || // `x.proto`: an example name
    (!token.includes("/") && !BARE_CHECKED.test(token))
  );
}

/** Whether a cited path names a file of the repository (see the file comment for the rules). */
export function citationExists(cited: string, fromFile: string, files: ReadonlySet<string>): boolean {
  const candidates = [normalize(cited), normalize(join(dirname(fromFile), cited))];
  if (candidates.some((c) => files.has(c))) return true;
  const tail = `/${cited.replace(/^(\.\.?\/)+/, "")}`;
  for (const f of files) if (`/${f}`.endsWith(tail)) return true;
  return false;
}

/** Every cited path in `source` (a file named `file`) that is not a file of the repository. */
export function staleCitations(file: string, source: string, files: ReadonlySet<string>): StaleCitation[] {
  const style = commentStyle(file);
  if (!style) return [];
  const stale: StaleCitation[] = [];
  splitComments(source, style).forEach(({ comment }, i) => {
    const prose = comment.replace(/[a-z][a-z0-9+.-]*:\/\/\S+/gi, "").replace(/<[^>\s]*>|\$\{[^}]*\}|\S*[*…]\S*/g, " ");
    for (const m of prose.matchAll(PATH_TOKEN)) {
      const cited = m[0].replace(/^\.\/?(?=[^./])/, "");
      if (isCheckable(cited) && !citationExists(cited, file, files)) stale.push({ file, line: i + 1, cited });
    }
  });
  return stale;
}
