/**
 * The compiled binary (`bun build --compile`, as the image ships it) serves VerifyUser, health and
 * reflection with nothing on disk: run from `/`, out of a directory holding only the binary, and
 * (where we may) with the source tree hidden, so no .proto can be read from the build machine's
 * paths baked into the bundle — what `@grpc/reflection` and `grpc-health-check` would do
 * (docs/design.md, "Known traps").
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePorts } from "../../scripts/stack/testing/ports.ts";
import { compileFlags } from "../../scripts/cluster/images.ts";
import {
  REPO_ROOT,
  spawnProcess,
  stopAll,
  stopProcess,
  waitForHttp,
  type Spawned,
} from "../../scripts/stack/testing/processes.ts";
import { RpcappClients } from "./clients.ts";

const binDir = mkdtempSync(join(tmpdir(), "rpcapp-bin-"));
const binary = join(binDir, "rpcapp");

/**
 * Hiding the tree takes a private mount namespace (root + util-linux `unshare`). CI runs as
 * root and must hide it; elsewhere the binary still runs from `/`, which catches relative paths
 * only, and the test that proves the tree was hidden is skipped (visibly).
 */
function canHideRepo(): boolean {
  if (process.getuid?.() !== 0 || !Bun.which("unshare")) return false;
  return Bun.spawnSync(["unshare", "-m", "true"]).exitCode === 0;
}

const isRepoHidden = canHideRepo();
const isCI = process.env.CI === "true";
let proc: Spawned;
let clients: RpcappClients;

beforeAll(async () => {
  const build = Bun.spawnSync(
    [process.execPath, "build", ...compileFlags("rpcapp"), "rpcapp/src/main.ts", "--outfile", binary],
    { cwd: REPO_ROOT, stdout: "pipe", stderr: "pipe", timeout: 50_000 },
  );
  if (build.exitCode !== 0) throw new Error(`bun build --compile failed:\n${build.stderr.toString()}`);

  const [grpcPort, httpPort] = (await freePorts(2)) as [number, number];
  const argv = isRepoHidden
    ? ["unshare", "-m", "sh", "-c", 'mount -t tmpfs rpcapp-test "$HIDE" && cd / && exec "$BIN"']
    : ["sh", "-c", 'cd / && exec "$BIN"'];
  proc = spawnProcess("rpcapp-binary", argv, {
    HIDE: REPO_ROOT,
    BIN: binary,
    HOST: "127.0.0.1",
    PORT: String(grpcPort),
    METRICS_PORT: String(httpPort),
    INSTANCE_ID: "rpcapp-bin-1",
  });
  await waitForHttp(`http://127.0.0.1:${httpPort}/readyz`, proc);
  clients = new RpcappClients(`127.0.0.1:${grpcPort}`);
}, 60_000);

afterAll(async () => {
  clients?.close();
  await stopAll();
  rmSync(binDir, { recursive: true, force: true });
});

describe("compiled rpcapp binary, run with no source tree", () => {
  // Under CI this runs (and fails) when the tree cannot be hidden: the other tests then prove less.
  test.skipIf(!isRepoHidden && !isCI)("runs with the repository hidden under an empty tmpfs", async () => {
    expect(isRepoHidden, "hiding the source tree needs root and util-linux unshare (mount namespaces)").toBe(true);
    // The mount table of the namespace the binary runs in: the repository is an empty tmpfs there.
    const mounts = (await Bun.file(`/proc/${proc.pid}/mountinfo`).text()).split("\n").map((l) => l.split(" "));
    expect(
      mounts.filter((f) => f[4] === REPO_ROOT).map((f) => f.slice(f.indexOf("-") + 1, f.indexOf("-") + 3)),
    ).toEqual([["tmpfs", "rpcapp-test"]]);
  });

  test("serves VerifyUser with the identity headers", async () => {
    const { reply, headers } = await clients.verifyUser({ id: 121, token: "a$$" });
    expect(reply).toEqual({ message: "Verified: 121" });
    expect(headers.get("x-served-by")).toEqual(["rpcapp-bin-1"]);
    expect((await clients.verifyUser({ id: 0, token: "a$$" })).error?.code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  test("serves grpc.health.v1 Check", async () => {
    expect((await clients.check("userverify.UserVerify")).reply).toEqual({ status: "SERVING" });
  });

  test("serves reflection: lists and describes the services", async () => {
    expect(await clients.listServices()).toContain("userverify.UserVerify");
    const [file] = await clients.describe("grpc.health.v1.Health");
    expect(file?.service[0]?.method.map((m) => m.name)).toEqual(["Check", "Watch"]);
  });

  test("exits 0 on SIGTERM", async () => {
    expect(await stopProcess(proc, "SIGTERM", 5_000)).toBe(0);
  });
});
