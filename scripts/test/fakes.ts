/**
 * Fake `minikube`, `kubectl`, `docker` and `git` for the script tests: tiny shell scripts in a
 * temporary directory put first on PATH. Each appends its argv to a log and answers with canned
 * output, so a test can run scripts/up.ts end to end and assert what it ran, in order.
 */
import {
  chmodSync,
  mkdirSync,
  readdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  existsSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const REPO_ROOT = resolve(import.meta.dir, "../..");

/** Shell bodies run after the argv is logged; `$*` is the arguments. Keep to sh builtins and absolute paths. */
export type FakeScripts = Record<string, string>;

const LOG_ARGV = `printf '%s\\n' "\${0##*/} $*" >> "$FAKE_LOG"`;

/** Canned answers that make `make up` succeed. */
export const HAPPY: FakeScripts = {
  minikube: `case "$1" in
  status) echo "host: Running"; echo "kubelet: Running" ;;
  docker-env) echo "DOCKER_TLS_VERIFY=1"; echo "DOCKER_HOST=tcp://minikube.test:2376"; echo "DOCKER_CERT_PATH=/fake/certs"; echo "SSH_AUTH_SOCK=" ;;
  ip) echo "192.0.2.10" ;;
  service) echo "\${FAKE_SERVICE_URL:-http://gateway.test:30080}"; echo "\${FAKE_SERVICE_HTTPS_URL:-http://gateway.test:30443}" ;;
esac`,
  docker: `echo "docker env: DOCKER_HOST=$DOCKER_HOST" >> "$FAKE_LOG"; echo "Successfully built"`,
  kubectl: `prev=""
for a in "$@"; do
  if [ "$prev" = "-k" ]; then /bin/cat "$a/kustomization.yaml" > "$FAKE_LOG.overlay"; fi
  if [ "$prev" = "-f" ] && [ -f "$a" ]; then /bin/mkdir -p "$FAKE_LOG.applied" && /bin/cat "$a" > "$FAKE_LOG.applied/\${a##*/}"; fi
  if [ "$prev" = "-f" ] && [ "$a" = "-" ]; then /bin/mkdir -p "$FAKE_LOG.stdin" && /bin/cat > "$FAKE_LOG.stdin/$$.yaml"; fi
  prev="$a"
done
case "$*" in
  *"rollout status"*) echo "deployment successfully rolled out" ;;
esac`,
  git: `case "$1" in
  rev-parse) echo "abc1234" ;;
  status) if [ -n "$FAKE_GIT_DIRTY" ]; then echo " M webapp/src/app.ts"; fi ;;
  diff) echo "diff --git a/webapp/src/app.ts b/webapp/src/app.ts" ;;
esac`,
};

export interface Fakes {
  /** Directory of the fake tools (first on PATH). */
  bin: string;
  log: string;
  /** PATH with the fakes, then only what the scripts themselves need (bash for zx). */
  path: string;
  /** Every logged line, in order: `kubectl --context=minikube apply -k …`. */
  calls(): string[];
  /** The kustomization.yaml that `kubectl apply -k` was given, if any. */
  appliedOverlay(): string | undefined;
  /** Each file `kubectl … -f <file>` was given, by base name, as it was when applied. */
  appliedFiles(): Record<string, string>;
  /** What each `kubectl … -f -` read on its standard input. */
  appliedStdin(): string[];
  cleanup(): void;
}

export function makeFakes(scripts: FakeScripts): Fakes {
  const root = mkdtempSync(join(tmpdir(), "portico-fakes-"));
  const bin = join(root, "bin");
  const sys = join(root, "sys");
  const log = join(root, "calls.log");
  for (const dir of [bin, sys]) mkdirSync(dir, { recursive: true });
  writeFileSync(log, "");
  for (const [name, body] of Object.entries(scripts)) {
    const file = join(bin, name);
    writeFileSync(file, `#!/bin/sh\n${LOG_ARGV}\n${body}\n`);
    chmodSync(file, 0o755);
  }
  // zx runs commands through bash; nothing else from the real PATH is visible to the script.
  const bash = Bun.which("bash");
  if (bash) symlinkSync(bash, join(sys, "bash"));
  return {
    bin,
    log,
    path: `${bin}:${sys}`,
    calls: () => readFileSync(log, "utf8").split("\n").filter(Boolean),
    appliedOverlay: () => (existsSync(`${log}.overlay`) ? readFileSync(`${log}.overlay`, "utf8") : undefined),
    appliedFiles: () =>
      existsSync(`${log}.applied`)
        ? Object.fromEntries(
            readdirSync(`${log}.applied`).map((f) => [f, readFileSync(join(`${log}.applied`, f), "utf8")]),
          )
        : {},
    appliedStdin: () =>
      existsSync(`${log}.stdin`)
        ? readdirSync(`${log}.stdin`).map((f) => readFileSync(join(`${log}.stdin`, f), "utf8"))
        : [],
    cleanup: () => rmSync(root, { recursive: true, force: true }),
  };
}

export interface ScriptRun {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** Runs `bun scripts/<name>.ts [args]` with the fakes' PATH and `env`, bounded in time. */
export async function runScript(
  name: string,
  fakes: Fakes,
  env: Record<string, string> = {},
  args: string[] = [],
): Promise<ScriptRun> {
  const proc = Bun.spawn([process.execPath, join(REPO_ROOT, "scripts", `${name}.ts`), ...args], {
    cwd: REPO_ROOT,
    env: {
      HOME: process.env.HOME ?? "/tmp",
      PATH: fakes.path,
      FAKE_LOG: fakes.log,
      NO_COLOR: "1",
      FORCE_COLOR: "0",
      ...env,
    },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = setTimeout(() => proc.kill("SIGKILL"), 30_000);
  const [stdout, stderr, exitCode] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  clearTimeout(timer);
  return { exitCode, stdout, stderr };
}
