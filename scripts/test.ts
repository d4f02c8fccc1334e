/**
 * `make test` (after typecheck and lint): every test in the repository with `bun test`, then one
 * plain closing line "N passed, N failed" (", N skipped", ", N todo" when any) that any CI can
 * read. Extra arguments go to `bun test` (e.g. `bun scripts/test.ts gateway` or `-t "circuit"`).
 *
 * Under CI=true a todo, a skipped test or a run with no test at all fails, naming the tests:
 * a skip there means a prerequisite is missing (.ci/run installs them all). Outside CI skips are
 * reported and allowed. The per-test outcomes come from Bun's JUnit report (junit-report.ts).
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { lines } from "../lib/lines.ts";
import { type ConsoleCounts, closingLine, parseJunit, readSummaryLine, verdict } from "./test/junit-report.ts";

const args = process.argv.slice(2);
const ci = process.env.CI === "true";
const nameFilter = args.some((a) => a === "-t" || a === "--test-name-pattern" || /^(-t|--test-name-pattern)=/.test(a));
const reportDir = mkdtempSync(join(tmpdir(), "portico-test-report-"));
const reportFile = join(reportDir, "junit.xml");

// bunfig.toml's [test] timeout is not applied by Bun 1.4.5; the flag is. End-to-end tests start
// real processes, so a test (not a hook — hooks set their own) may take up to a minute.
const proc = Bun.spawn(
  [process.execPath, "test", "--timeout", "60000", "--reporter=junit", `--reporter-outfile=${reportFile}`, ...args],
  {
    stdout: "inherit",
    stderr: "pipe",
    // The bunfig.toml preload (scripts/test/ci-guard.ts) lets `bun test` run under CI only with this.
    env: { ...process.env, PORTICO_TEST_RUNNER: "1" },
  },
);
// Bun writes results and its summary to stderr: passed through as it comes, summary counts kept.
const counts: ConsoleCounts = {};
for await (const line of lines(proc.stderr)) {
  process.stderr.write(`${line}\n`);
  readSummaryLine(line, counts);
}
const exitCode = await proc.exited;

let report = "";
try {
  report = readFileSync(reportFile, "utf8");
} catch {
  console.error(`bun test wrote no JUnit report (${reportFile}): the counts below are from its console summary.`);
} finally {
  rmSync(reportDir, { recursive: true, force: true });
}

const result = verdict({ cases: parseJunit(report), counts, exitCode, nameFilter, ci });
if (exitCode !== 0 && result.failed > 0 && !counts.fail)
  console.error(`bun test exited with code ${exitCode} without reporting a failed test: see its output above.`);
for (const problem of result.ciProblems) console.error(`\nCI=true: ${problem}`);
if (!ci && result.skipped + result.todo > 0)
  console.error(`\n${result.skipped + result.todo} test(s) skipped or todo: CI=true would fail this run.`);
console.log(`\n${closingLine(result)}`);
process.exit(result.failed > 0 || result.ciProblems.length > 0 ? 1 : 0);
