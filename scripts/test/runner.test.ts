/**
 * scripts/test.ts, what `make test` runs, on small fixture suites (scripts/test/fixtures/*.fixture.ts,
 * copied to a temp dir as *.test.ts so the main suite never runs them): under CI=true a todo, a
 * skip or an empty run fails and names the tests; the closing line keeps the "N passed, N failed"
 * form CI infrastructure reads. And a bare `bun test` under CI refuses to run at all.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseJunit, verdict } from "./junit-report.ts";

const REPO = resolve(import.meta.dir, "../..");
const FIXTURES = join(import.meta.dir, "fixtures");
const dirs: string[] = [];

afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

interface Run {
  code: number;
  /** The last non-empty stdout line: the closing summary. */
  closing: string;
  stderr: string;
}

/** Runs scripts/test.ts in a fresh dir holding only the named fixtures, as `<name>.test.ts`. */
async function runRunner(fixtures: string[], ci: boolean, args: string[] = []): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), "portico-runner-"));
  dirs.push(dir);
  for (const name of fixtures) copyFileSync(join(FIXTURES, `${name}.fixture.ts`), join(dir, `${name}.test.ts`));
  const env: Record<string, string | undefined> = { ...process.env, CI: ci ? "true" : undefined };
  delete env.PORTICO_TEST_RUNNER;
  const proc = Bun.spawn([process.execPath, join(REPO, "scripts/test.ts"), ...args], {
    cwd: dir,
    env,
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  const closing = stdout.trim().split("\n").at(-1) ?? "";
  return { code, closing, stderr };
}

describe("scripts/test.ts under CI=true", () => {
  test("a todo fails the run, and the todo is named with its file and line", async () => {
    const run = await runRunner(["passing", "todo"], true);
    expect(run.closing).toBe("4 passed, 0 failed, 1 todo");
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain("CI=true: 1 todo test(s)");
    expect(run.stderr).toMatch(/todo\.test\.ts:6 {2}checkout > applies the discount code/);
  });

  test("a skipped test fails the run, and is named", async () => {
    const run = await runRunner(["passing", "skip"], true);
    expect(run.closing).toBe("4 passed, 0 failed, 1 skipped");
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(
      /CI=true: 1 skipped test\(s\)[^\n]*\n {2}skip\.test\.ts:5 {2}needs a tool this machine lacks/,
    );
  });

  test("all passing: exit 0, the counts, and the closing line alone on its line", async () => {
    const run = await runRunner(["passing"], true);
    expect(run).toMatchObject({ code: 0, closing: "3 passed, 0 failed" });
    expect(run.stderr).not.toContain("CI=true:");
  });

  test("a failing test fails the run and is counted", async () => {
    const run = await runRunner(["passing", "failing"], true);
    expect(run).toMatchObject({ closing: "4 passed, 1 failed" });
    expect(run.code).not.toBe(0);
  });

  test("a file that cannot load counts as a failure (Bun's report leaves it out)", async () => {
    const run = await runRunner(["passing", "load-error"], true);
    expect(run.closing).toBe("3 passed, 1 failed");
    expect(run.code).not.toBe(0);
  });

  test("a run where no test executes fails, and -t filtered skips are counted from Bun's summary", async () => {
    const run = await runRunner(["skip"], true, ["-t", "needs a tool"]);
    expect(run.closing).toBe("0 passed, 0 failed, 1 skipped");
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain("CI=true: no test ran");
    expect(run.stderr).toContain("names not shown: with -t");
  });
});

describe("scripts/test.ts outside CI", () => {
  test("skips and todos are reported but do not fail the run", async () => {
    const run = await runRunner(["passing", "skip", "todo"], false);
    expect(run).toMatchObject({ code: 0, closing: "5 passed, 0 failed, 1 skipped, 1 todo" });
    expect(run.stderr).toContain("2 test(s) skipped or todo: CI=true would fail this run.");
  });

  test("a failing test still fails the run", async () => {
    const run = await runRunner(["failing"], false);
    expect(run).toMatchObject({ closing: "1 passed, 1 failed" });
    expect(run.code).not.toBe(0);
  });
});

test("a bare `bun test` in the repository refuses to run under CI=true, pointing to `make test`", () => {
  const proc = Bun.spawnSync([process.execPath, "test", "./scripts/test/fixtures/passing.fixture.ts"], {
    cwd: REPO,
    env: { ...process.env, CI: "true", PORTICO_TEST_RUNNER: undefined },
  });
  expect(proc.exitCode).not.toBe(0);
  expect(proc.stderr.toString()).toContain("run the tests with `make test`");
  expect(proc.stderr.toString()).not.toContain("(pass)");
});

describe("reading Bun's JUnit report", () => {
  const xml = `<?xml version="1.0" encoding="UTF-8"?>
<testsuites name="bun test" tests="4" failures="1" skipped="2">
  <testsuite name="a.test.ts" file="a.test.ts" tests="4">
    <testsuite name="outer &lt;x&gt;" file="a.test.ts" line="2">
      <testsuite name="inner &amp; &quot;q&quot;" file="a.test.ts" line="3">
        <testcase name="a &gt; b &#10;c" classname="inner &amp; &quot;q&quot; &gt; outer &lt;x&gt;" file="a.test.ts" line="4" />
        <testcase name="later" classname="inner" file="a.test.ts" line="5"><skipped message="TODO" /></testcase>
      </testsuite>
      <testcase name="skipped" classname="outer" file="a.test.ts" line="7"><skipped /></testcase>
    </testsuite>
    <testcase name="fails" classname="" file="a.test.ts" line="9"><failure type="AssertionError" message="x &gt; y">x</failure></testcase>
  </testsuite>
</testsuites>`;

  test("names each test by its describe blocks, outermost first, with entities decoded", () => {
    expect(parseJunit(xml)).toEqual([
      { file: "a.test.ts", line: 4, name: 'outer <x> > inner & "q" > a > b \nc', outcome: "passed" },
      { file: "a.test.ts", line: 5, name: 'outer <x> > inner & "q" > later', outcome: "todo" },
      { file: "a.test.ts", line: 7, name: "outer <x> > skipped", outcome: "skipped" },
      { file: "a.test.ts", line: 9, name: "fails", outcome: "failed" },
    ]);
  });

  test("with a -t filter, skips are counted from Bun's summary (its report marks filtered-out tests skipped)", () => {
    const cases = parseJunit(xml);
    const filtered = verdict({ cases, counts: { skip: 0 }, exitCode: 1, nameFilter: true, ci: true });
    expect(filtered.skipped).toBe(0);
    expect(filtered.ciProblems).toEqual([expect.stringContaining("1 todo test(s)")]);
    const unfiltered = verdict({ cases, counts: {}, exitCode: 1, nameFilter: false, ci: true });
    expect(unfiltered.skipped).toBe(1);
  });
});
