/**
 * Each line of a source file split into its code and its comment, by the file's comment markers:
 * `//` and `/* … *\/` in TypeScript and JavaScript, `#` in YAML, Makefiles and Dockerfiles.
 * A scanner, not a parser: `//` right after `:` or a quote is taken for a URL or a string, which is
 * right for this repository's code.
 */
import { basename } from "node:path";

export type CommentStyle = "c" | "hash";

export interface SourceLine {
  code: string;
  comment: string;
}

/** How a file writes comments, or undefined for a file that is not scanned. */
export function commentStyle(file: string): CommentStyle | undefined {
  const name = basename(file);
  if (/\.(ts|tsx|js|mjs|cjs)$/.test(name)) return "c";
  if (/\.ya?ml$/.test(name) || name === "Makefile" || name === "Dockerfile" || name.endsWith(".Dockerfile"))
    return "hash";
  return undefined;
}

export function splitComments(source: string, style: CommentStyle): SourceLine[] {
  const lines = source.split("\n");
  if (style === "hash") {
    return lines.map((l) => {
      const at = /(?:^|\s)#/.exec(l);
      return at ? { code: l.slice(0, at.index), comment: l.slice(at.index + at[0].length) } : { code: l, comment: "" };
    });
  }
  let inBlock = false;
  return lines.map((l) => {
    let code = "";
    let comment = "";
    let rest = l;
    for (;;) {
      if (inBlock) {
        const end = rest.indexOf("*/");
        comment += ` ${end < 0 ? rest : rest.slice(0, end)}`;
        if (end < 0) return { code, comment };
        inBlock = false;
        rest = rest.slice(end + 2);
        continue;
      }
      const line = /(?<![:"'`\\])\/\/(.*)$/.exec(rest);
      const block = /(?<!["'`])\/\*/.exec(rest);
      if (block && (line === null || block.index < line.index)) {
        code += rest.slice(0, block.index);
        inBlock = true;
        rest = rest.slice(block.index + 2);
        continue;
      }
      if (line) return { code: code + rest.slice(0, line.index), comment: `${comment} ${line[1]}` };
      return { code: code + rest, comment };
    }
  });
}
