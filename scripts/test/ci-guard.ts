/**
 * Preloaded into every `bun test` run from the repository root (bunfig.toml [test] preload).
 * Under CI=true a plain `bun test` would pass with todo and skipped tests and without the
 * per-test timeout; only scripts/test.ts (what `make test` runs) checks those, so it is the
 * only way tests may run there. It marks its own `bun test` with PORTICO_TEST_RUNNER=1.
 */
if (process.env.CI === "true" && process.env.PORTICO_TEST_RUNNER !== "1") {
  console.error(
    "CI=true: run the tests with `make test` (or `bun scripts/test.ts [paths] [bun test flags]`), not a bare `bun test`:\n" +
      "the runner fails the run on a todo or skipped test, which `bun test` alone lets pass.",
  );
  process.exit(2);
}
