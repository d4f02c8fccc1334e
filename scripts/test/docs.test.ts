/**
 * The documentation stays true to the repository: links resolve, the README stays an entry page,
 * source comments cite files that exist, every environment variable the code reads and every
 * Makefile target is documented, and the generated routes.yaml reference matches the schema.
 * Reads files only: no network, no processes but `git ls-files`.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize } from "node:path";
import { staleCitations } from "../docs/citations.ts";
import { REFERENCE_PATH, renderConfigReference } from "../docs/config-reference.ts";
import { envVarsRead, readsSettings } from "../docs/env-usage.ts";
import { githubSlug, headingAnchors, isExternal, markdownLinks } from "../docs/markdown.ts";
import { REPO_ROOT, repoFiles } from "../docs/repo-files.ts";

const files = repoFiles();
const fileSet = new Set(files);
const read = (file: string) => readFileSync(join(REPO_ROOT, file), "utf8");
const markdownFiles = files.filter((f) => f.endsWith(".md"));

/** Broken links of one Markdown file, as `file:line target (why)`. */
function brokenLinks(file: string, text: string): string[] {
  const broken: string[] = [];
  for (const { line, target } of markdownLinks(text)) {
    if (isExternal(target)) continue;
    const [rawPath = "", anchor] = target.split("#", 2);
    const path = decodeURIComponent(rawPath);
    const resolved = path === "" ? file : normalize(join(dirname(file), path)).replace(/\/$/, "");
    const where = `${file}:${line} ${target}`;
    if (resolved.startsWith("..")) {
      broken.push(`${where} (outside the repository)`);
      continue;
    }
    const isDir = existsSync(join(REPO_ROOT, resolved)) && statSync(join(REPO_ROOT, resolved)).isDirectory();
    if (!fileSet.has(resolved) && !isDir) {
      broken.push(`${where} (no such file)`);
      continue;
    }
    if (anchor && resolved.endsWith(".md") && !headingAnchors(read(resolved)).has(anchor)) {
      broken.push(`${where} (no heading with that anchor in ${resolved})`);
    }
  }
  return broken;
}

describe("Markdown links", () => {
  test("there are Markdown files to check", () => {
    expect(markdownFiles).toContain("README.md");
    expect(markdownFiles).toContain("docs/design.md");
  });

  test("every relative link in every Markdown file names a file, and its #anchor a heading there", () => {
    const broken = markdownFiles.flatMap((f) => brokenLinks(f, read(f)));
    expect(broken).toEqual([]);
  });

  test("a link to a missing file or a missing heading is reported", () => {
    const text = "[a](docs/nowhere.md) [b](docs/design.md#no-such-heading) [c](docs/design.md#known-traps)";
    const broken = brokenLinks("README.md", text);
    expect(broken).toHaveLength(2);
    expect(broken[0]).toContain("no such file");
    expect(broken[1]).toContain("no heading");
  });
});

test("README.md is an entry page: at most 250 lines", () => {
  const lines = read("README.md").split("\n").length - 1;
  expect(lines).toBeLessThanOrEqual(250);
});

describe("files cited in source comments", () => {
  test("every path a comment cites exists in the repository", () => {
    const stale = files.flatMap((f) =>
      staleCitations(f, read(f), fileSet).map((s) => `${s.file}:${s.line} cites ${s.cited}`),
    );
    expect(stale).toEqual([]);
  });

  test('every `docs/<page>.md, "Section"` citation names a heading of that page', () => {
    const missing: string[] = [];
    for (const f of files) {
      if (f === "scripts/test/docs.test.ts" || !/\.(ts|js|ya?ml|md)$|Dockerfile$|^Makefile$/.test(f)) continue;
      for (const m of read(f).matchAll(/\b(docs\/[\w-]+\.md)'?s?,?\s+"([^"]+)"/g)) {
        const [, page, section] = m as unknown as [string, string, string];
        if (!fileSet.has(page) || !headingAnchors(read(page)).has(githubSlug(section))) {
          missing.push(`${f} cites ${page}, "${section}"`);
        }
      }
    }
    expect(missing).toEqual([]);
  });

  test("a comment citing a file that does not exist is caught", () => {
    const source = [
      "/**",
      ' * Measured on Bun (DESIGN.md, "Known traps"); see docs/design.md and lib/env.ts.',
      " */",
      "// the rest: scripts/lib/nowhere.ts",
      'const url = "https://example.com/README.md";',
    ].join("\n");
    const cited = staleCitations("lib/example.ts", source, fileSet).map((s) => `${s.line}:${s.cited}`);
    expect(cited).toEqual(["2:DESIGN.md", "4:scripts/lib/nowhere.ts"]);
    expect(staleCitations("Makefile", "# see DESIGN.md\nall:\n", fileSet)).toHaveLength(1);
  });
});

describe("environment variables", () => {
  const configuration = read("docs/configuration.md");
  const documented = (name: string) => configuration.includes(`\`${name}\``);

  test("every variable the code reads is documented in docs/configuration.md", () => {
    const read_ = new Map<string, string[]>();
    for (const f of files.filter(readsSettings)) {
      for (const name of envVarsRead(f, read(f))) read_.set(name, [...(read_.get(name) ?? []), f]);
    }
    expect(read_.size).toBeGreaterThan(20);
    const missing = [...read_]
      .filter(([name]) => !documented(name))
      .map(([name, where]) => `${name} (${where.join(", ")})`);
    expect(missing).toEqual([]);
  });

  test("the scanner finds the forms the code uses", () => {
    const source = [
      "const a = process.env.ALPHA ?? 1; // not process.env.IN_COMMENT",
      'const b = Bun.env["BRAVO"];',
      'const c = envInt("CHARLIE", 5, { min: 0 }, env);',
      "const d = env.DELTA;",
      'const e = int("ECHO_PORT", 3);',
      'const f = dnsServer("FOXTROT_SERVER", env);',
      'const g = chosen(env, "GOLF_PASSWORD");',
      'const h = replicas("HOTEL_REPLICAS");',
      'if (err.code === "NOT_AN_ENV_VAR" || fail("ERR_CODE", 1)) {}',
    ].join("\n");
    expect([...envVarsRead("lib/x.ts", source)].sort()).toEqual([
      "ALPHA",
      "BRAVO",
      "CHARLIE",
      "DELTA",
      "ECHO_PORT",
      "FOXTROT_SERVER",
      "GOLF_PASSWORD",
      "HOTEL_REPLICAS",
    ]);
    expect([...envVarsRead("gateway/routes.yaml", "endpoints: ${WEBAPP_ENDPOINTS:-127.0.0.1:3001}")]).toEqual([
      "WEBAPP_ENDPOINTS",
    ]);
  });
});

test("every Makefile target with a ## help line is in the README's table of targets", () => {
  const targets = [...read("Makefile").matchAll(/^([a-zA-Z_-]+):.*## /gm)].map((m) => m[1]!);
  expect(targets).toContain("docs");
  const tableRows = read("README.md")
    .split("\n")
    .filter((l) => l.startsWith("|"));
  const missing = targets.filter((t) => !tableRows.some((row) => row.includes(`\`make ${t}\``)));
  expect(missing).toEqual([]);
});

test(`${REFERENCE_PATH} is what the schema generates (else: run make docs)`, () => {
  const committed = read(REFERENCE_PATH);
  if (committed !== renderConfigReference()) {
    throw new Error(`${REFERENCE_PATH} is stale: run make docs`);
  }
  expect(committed).toContain("| `routes[].path` |");
});

test("every key in the routes.yaml reference has a description", () => {
  const empty = read(REFERENCE_PATH)
    .split("\n")
    .filter((l) => l.startsWith("| `") && /\|\s*\|$/.test(l));
  expect(empty).toEqual([]);
});
