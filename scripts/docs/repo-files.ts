/**
 * The repository's files as git sees them: tracked, plus new files not yet added (so a document or
 * a source file someone is writing is checked before it is committed), never what .gitignore hides.
 */
import { existsSync } from "node:fs";
import { join } from "node:path";

export const REPO_ROOT = join(import.meta.dir, "../..");

export function repoFiles(root: string = REPO_ROOT): string[] {
  const out = Bun.spawnSync(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], { cwd: root });
  if (out.exitCode !== 0) throw new Error(`git ls-files failed in ${root}: ${out.stderr.toString()}`);
  // A file deleted in the work tree but still in the index is not there to link to.
  return [...new Set(out.stdout.toString().split("\0"))].filter((f) => f !== "" && existsSync(join(root, f))).sort();
}
