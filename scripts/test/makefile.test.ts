/**
 * The Makefile's choice of Bun: the one on PATH when it is at least the pinned version, else the
 * pinned one from npm in .tools/ (an older Bun cannot read the lockfile, and `make dev` failed with
 * "Unknown lockfile version"). Dry runs (`make -n`) with a stand-in `bun` first on PATH.
 */
import { afterAll, expect, test } from "bun:test";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const REPO = resolve(import.meta.dir, "../..");
const dir = mkdtempSync(join(tmpdir(), "portico-make-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const pinned = (await Bun.file(join(REPO, "package.json")).json()).devDependencies.bun as string;

/** `make -s -n <target>` with a `bun` on PATH that says it is `version`. */
function dryRun(version: string, ...args: string[]): string {
  const fake = join(dir, version);
  mkdirSync(fake, { recursive: true });
  writeFileSync(join(fake, "bun"), `#!/bin/sh\necho ${version}\n`);
  chmodSync(join(fake, "bun"), 0o755);
  const { BUN: _bun, ...env } = process.env;
  const out = Bun.spawnSync(["make", "-s", "-n", ...args], {
    cwd: REPO,
    env: { ...env, PATH: `${fake}:${process.env.PATH}` },
  });
  expect(out.exitCode).toBe(0);
  return out.stdout.toString();
}

test("a Bun on PATH at or past the pinned version is used", () => {
  for (const version of [pinned, "1.10.0", "2.0.0"])
    expect(dryRun(version, "dev")).toContain(`${join(dir, version)}/bun scripts/dev.ts`);
});

test("an older one is not: the pinned Bun is installed into .tools/ and used", () => {
  const out = dryRun("1.3.14", "dev");
  expect(out).toContain(`${REPO}/.tools/node_modules/.bin/bun scripts/dev.ts`);
  expect(out).not.toContain(`${join(dir, "1.3.14")}/bun scripts/dev.ts`);
});

test("make test ARGS=… runs only those paths", () => {
  expect(dryRun(pinned, "test", "ARGS=lib/json.test.ts")).toContain("bun scripts/test.ts lib/json.test.ts");
});
