/**
 * A python3 that can `import grpc`, for the independent-client tests. Debian's python3-grpcio
 * installs into the system python, which a pyenv (or venv) python3 earlier on PATH does not see,
 * so /usr/bin/python3 is tried too. Undefined when there is none (under CI requireBinary fails
 * first when python3 itself is missing).
 */
import { requireBinary } from "../../scripts/stack/testing/processes.ts";

export function pythonWithGrpc(): string | undefined {
  if (!requireBinary("python3")) return undefined;
  for (const candidate of [Bun.which("python3"), "/usr/bin/python3"]) {
    if (candidate && Bun.spawnSync([candidate, "-c", "import grpc"]).exitCode === 0) return candidate;
  }
  return undefined;
}
