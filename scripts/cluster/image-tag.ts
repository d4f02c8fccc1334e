/**
 * The tag of the images built from this working tree. With `imagePullPolicy: IfNotPresent` a
 * tag must never be reused for different content — the node would keep running the image it
 * already has — so it is the commit's short sha, and when the image inputs have uncommitted
 * changes, `<sha>-dirty-<hash of those changes>`: another edit, another tag.
 * IMAGE_TAG overrides it.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { chalk, which } from "zx";
import { run, ScriptError } from "../cli.ts";
import { BUILD_INPUTS } from "./images.ts";

/** A valid tag that is also a valid label value (it becomes app.kubernetes.io/version). */
const TAG = /^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$/;

export async function imageTag(env: Record<string, string | undefined> = process.env): Promise<string> {
  if (env.IMAGE_TAG) {
    if (!TAG.test(env.IMAGE_TAG))
      throw new ScriptError(
        `IMAGE_TAG=${JSON.stringify(env.IMAGE_TAG)} is not a valid image tag and label value (letters, digits, '.', '_', '-'; at most 63)`,
      );
    return env.IMAGE_TAG;
  }
  const head = which.sync("git", { nothrow: true })
    ? await run(["git", "rev-parse", "--short=7", "HEAD"], { nothrow: true })
    : undefined;
  if (head?.exitCode !== 0) {
    // No git, or no commit yet: still unique per run, never reused.
    const fallback = `dev-${new Date().toISOString().replace(/\D/g, "").slice(0, 14)}`;
    console.log(chalk.yellow(`no git commit to tag the images with; using ${fallback}`));
    return fallback;
  }
  const sha = head.stdout.trim();
  const paths = ["--", ...BUILD_INPUTS];
  const status = await run(["git", "status", "--porcelain", ...paths]);
  if (status.stdout.trim() === "") return sha;
  const hash = createHash("sha256");
  hash.update((await run(["git", "diff", "HEAD", "--binary", ...paths])).stdout);
  const untracked = (await run(["git", "ls-files", "--others", "--exclude-standard", ...paths])).stdout
    .split("\n")
    .filter(Boolean);
  for (const file of untracked) {
    hash.update(`\0${file}\0`);
    try {
      hash.update(readFileSync(file));
    } catch {
      // removed meanwhile: its name is hashed already
    }
  }
  return `${sha}-dirty-${hash.digest("hex").slice(0, 8)}`;
}
