/**
 * What `bun test --reporter=junit` wrote, per test, and what CI makes of it. Bun's console summary
 * has counts only; the JUnit report names every test with its file and line, and tells a todo
 * (`<skipped message="TODO"/>`) from a skip (`<skipped/>`), so the runner can say which tests
 * CI refused. The report is machine-written by Bun in one fixed shape (double-quoted attributes,
 * the five XML entities and numeric ones), which a tag scanner reads without an XML dependency.
 */

export type Outcome = "passed" | "failed" | "skipped" | "todo";

export interface TestCase {
  /** Path as Bun prints it: relative to the directory `bun test` ran in. */
  file: string;
  line: number | undefined;
  /** describe blocks and the test's own name, joined with " > " as Bun prints them. */
  name: string;
  outcome: Outcome;
}

/** The counts in Bun's closing console summary (" 3 pass", " 1 fail", " 2 filtered out", …). */
export interface ConsoleCounts {
  pass?: number;
  fail?: number;
  skip?: number;
  todo?: number;
  filtered?: number;
}

const TAG = /<(\/?)(testsuite|testcase|skipped|failure|error)((?:\s+[\w:.-]+="[^"]*")*)\s*(\/?)>/g;
const ATTRIBUTE = /([\w:.-]+)="([^"]*)"/g;
const ENTITIES: Record<string, string> = { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" };

function decode(value: string): string {
  return value.replace(/&(#x[0-9a-f]+|#\d+|\w+);/gi, (whole, ref: string) => {
    if (ref[0] === "#")
      return String.fromCodePoint(ref[1] === "x" || ref[1] === "X" ? parseInt(ref.slice(2), 16) : Number(ref.slice(1)));
    return ENTITIES[ref] ?? whole;
  });
}

function attributes(text: string): Map<string, string> {
  return new Map([...text.matchAll(ATTRIBUTE)].map((m) => [m[1]!, decode(m[2]!)]));
}

/**
 * Every test case in the report, in order. Nested `<testsuite>`s are the file and then its
 * describe blocks; Bun's own `classname` lists the describes innermost first, so the name is
 * built from the suite nesting instead.
 */
export function parseJunit(xml: string): TestCase[] {
  const cases: TestCase[] = [];
  const suites: string[] = [];
  let current: TestCase | undefined;
  for (const [, closing, tag, attrText = "", selfClosing] of xml.matchAll(TAG)) {
    if (tag === "testsuite") {
      if (closing) suites.pop();
      else if (!selfClosing) suites.push(attributes(attrText).get("name") ?? "");
      continue;
    }
    if (tag === "testcase") {
      if (closing) {
        current = undefined;
        continue;
      }
      const attrs = attributes(attrText);
      const line = attrs.get("line");
      current = {
        file: attrs.get("file") ?? suites[0] ?? "",
        line: line === undefined ? undefined : Number(line),
        // suites[0] is the file itself (the top-level <testsuite> under <testsuites>).
        name: [...suites.slice(1), attrs.get("name") ?? ""].join(" > "),
        outcome: "passed",
      };
      cases.push(current);
      if (selfClosing) current = undefined;
      continue;
    }
    if (!current || closing) continue;
    if (tag === "skipped") current.outcome = attributes(attrText).get("message") === "TODO" ? "todo" : "skipped";
    else current.outcome = "failed";
  }
  return cases;
}

/** Reads one line of Bun's console summary into `counts`; other lines are left alone. */
export function readSummaryLine(line: string, counts: ConsoleCounts): void {
  const m = /^\s*(\d+) (pass|fail|skip|todo|filtered out)\s*$/.exec(line);
  if (!m) return;
  const key = m[2] === "filtered out" ? "filtered" : (m[2] as keyof ConsoleCounts);
  counts[key] = Number(m[1]);
}

export interface Verdict {
  passed: number;
  failed: number;
  skipped: number;
  todo: number;
  /** Why CI refuses the run (each with the tests concerned); empty when it may pass. */
  ciProblems: string[];
}

export interface VerdictInput {
  cases: TestCase[];
  counts: ConsoleCounts;
  exitCode: number;
  /** A `-t` filter was given: Bun's report then marks the tests it left out as skipped too. */
  nameFilter: boolean;
  ci: boolean;
}

const where = (c: TestCase) => `  ${c.file}${c.line === undefined ? "" : `:${c.line}`}  ${c.name}`;

export function verdict({ cases, counts, exitCode, nameFilter, ci }: VerdictInput): Verdict {
  const of = (outcome: Outcome) => cases.filter((c) => c.outcome === outcome);
  const passed = Math.max(of("passed").length, counts.pass ?? 0);
  // A file that fails to load, or an error between tests, is in Bun's "fail" count but not in the
  // report; a non-zero exit with nothing failed (a crash) still counts as one failure.
  let failed = Math.max(of("failed").length, counts.fail ?? 0);
  if (exitCode !== 0 && failed === 0) failed = 1;
  const todos = of("todo");
  const skips = of("skipped");
  const skipped = nameFilter ? (counts.skip ?? 0) : Math.max(skips.length, counts.skip ?? 0);
  const todo = Math.max(todos.length, counts.todo ?? 0);

  const ciProblems: string[] = [];
  if (ci) {
    if (todo > 0) ciProblems.push(`${todo} todo test(s): finish or remove them\n${todos.map(where).join("\n")}`);
    if (skipped > 0) {
      const names = nameFilter
        ? "  (names not shown: with -t, Bun's report cannot tell a skipped test from one the filter left out)"
        : skips.map(where).join("\n");
      ciProblems.push(
        `${skipped} skipped test(s): under CI every prerequisite must be installed (.ci/run), so nothing skips\n${names}`,
      );
    }
    if (passed + failed === 0) ciProblems.push("no test ran: check the paths and filters given to the runner");
  }
  return { passed, failed, skipped, todo, ciProblems };
}

/** The closing line CI infrastructure reads: "N passed, N failed" (then skipped/todo when any). */
export function closingLine({ passed, failed, skipped, todo }: Verdict): string {
  return `${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}${todo ? `, ${todo} todo` : ""}`;
}
