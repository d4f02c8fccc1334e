/**
 * `make test` (after typecheck): every test in the repository with `bun test`, then one plain
 * closing line "N passed, N failed" that any CI can read. Extra arguments go to `bun test`
 * (e.g. `bun scripts/test.ts gateway` or `-t "circuit"`).
 */
const args = process.argv.slice(2);
// bunfig.toml's [test] timeout is not applied by Bun 1.4.5; the flag is. End-to-end tests start
// real processes, so a test (not a hook — hooks set their own) may take up to a minute.
const proc = Bun.spawn([process.execPath, "test", "--timeout", "60000", ...args], {
  stdout: "inherit",
  stderr: "pipe",
  env: process.env,
});
let passed = 0;
let failed = 0;
let skipped = 0;
const decoder = new TextDecoder();
const reader = proc.stderr.getReader();
let buffered = "";
for (;;) {
  const { done, value } = await reader.read();
  if (done) break;
  const text = decoder.decode(value, { stream: true });
  process.stderr.write(text);
  buffered += text;
  const lines = buffered.split("\n");
  buffered = lines.pop() ?? "";
  for (const line of lines) {
    const m = /^\s*(\d+) (pass|fail|skip)\s*$/.exec(line);
    if (m) {
      const n = Number(m[1]);
      if (m[2] === "pass") passed = n;
      else if (m[2] === "fail") failed = n;
      else skipped = n;
    }
  }
}
const code = await proc.exited;
if (process.env.CI === "true" && skipped > 0) {
  console.error(`${skipped} test(s) were skipped under CI: every prerequisite must be installed (.ci/run).`);
}
console.log(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
process.exit(code !== 0 ? code : process.env.CI === "true" && skipped > 0 ? 1 : 0);
