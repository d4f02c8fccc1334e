/**
 * The runtime image, proved without Docker: the gateway is compiled exactly as the Dockerfile's
 * build stage does (scripts/cluster/images.ts compileFlags) and run the way the distroless runtime
 * stage runs it — in an otherwise empty root holding only the binary, the shared libraries `ldd`
 * lists (with the ELF interpreter) and routes.yaml, plus /proc (which every container runtime
 * mounts), as uid/gid 65532 with no capabilities, on a read-only filesystem — and it serves: its
 * health, an HTTP route to a stub and a transcoded gRPC route (with gRPC health checks) to a real
 * rpcapp, both outside the root. So the binary needs no file besides those: protos embedded, no
 * node_modules, no /tmp, no /etc, no /dev.
 *
 * Mechanism: `unshare --mount --pid` (a private mount table and PID 1), a read-only bind mount of
 * the root, `chroot --userspec=65532:65532`. Needs root, util-linux and coreutils; under CI a
 * missing one fails the test.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  rmSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative } from "node:path";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import {
  REPO_ROOT,
  requireBinary,
  spawnProcess,
  spawnService,
  type Spawned,
  stopAll,
  stopProcess,
  waitFor,
  waitForHttp,
} from "../../scripts/stack/testing/processes.ts";
import { compileFlags } from "../../scripts/cluster/images.ts";

const NONROOT = 65532;
const TOOLS = ["unshare", "chroot", "mount", "ldd"];

function canRun(): boolean {
  const tools = TOOLS.every((tool) => requireBinary(tool));
  const isRoot = process.getuid?.() === 0;
  if (!isRoot && process.env.CI === "true")
    throw new Error("the runtime-image test needs root (mount namespaces, chroot) under CI");
  return tools && isRoot && process.platform === "linux";
}

const runnable = canRun();

/** Every absolute path `ldd` names: the shared libraries and the ELF interpreter. */
function sharedLibraries(binary: string): string[] {
  const out = Bun.spawnSync(["ldd", binary]);
  if (out.exitCode !== 0) throw new Error(`ldd ${binary} failed: ${out.stderr.toString()}`);
  return [...new Set(out.stdout.toString().match(/\/[^\s)]+/g) ?? [])];
}

function filesUnder(root: string): string[] {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) walk(path);
      else files.push(relative(root, path));
    }
  };
  walk(root);
  return files.sort();
}

/** argv that runs /app/gateway inside `root`, as the distroless stage would, with only `env`. */
function inImage(root: string, env: Record<string, string>, opts: { proc?: boolean } = {}): string[] {
  const mounts = [
    `mount --bind ${root} ${root}`,
    `mount -o remount,bind,ro ${root}`,
    ...(opts.proc === false ? [] : [`mount -t proc proc ${root}/proc`]),
  ];
  return [
    "env",
    "-i",
    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
    ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
    "unshare",
    "--mount",
    "--propagation=private",
    "--pid",
    "--fork",
    "--kill-child",
    "sh",
    "-c",
    `${mounts.join(" && ")} && exec chroot --userspec=${NONROOT}:${NONROOT} --groups=${NONROOT} ${root} /app/gateway`,
  ];
}

/** The process the wrapper ended up exec'ing: the first descendant whose root is the image root. */
function gatewayPid(wrapper: number, root: string): number | undefined {
  const queue = [wrapper];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    try {
      if (readlinkSync(`/proc/${pid}/root`) === root) return pid;
      queue.push(
        ...readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean).map(Number),
      );
    } catch {
      // gone, or not ours to read
    }
  }
  return undefined;
}

describe.skipIf(!runnable)("the compiled gateway in an empty, read-only root as uid 65532", () => {
  let work: string;
  let root: string;
  let gateway: Spawned;
  let gw: string;
  let admin: string;
  let stub: ReturnType<typeof Bun.serve>;
  let buildSeconds = 0;

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), "portico-image-"));
    const binary = join(work, "gateway");
    const started = performance.now();
    const build = Bun.spawnSync(
      [process.execPath, "build", ...compileFlags("gateway"), "gateway/src/main.ts", "--outfile", binary],
      { cwd: REPO_ROOT },
    );
    buildSeconds = (performance.now() - started) / 1000;
    if (build.exitCode !== 0) throw new Error(`bun build failed:\n${build.stderr.toString()}`);

    // The root: /app/gateway, the libraries at the paths the loader looks for them, routes.yaml.
    root = realpathSync(mkdtempSync(join(tmpdir(), "portico-root-")));
    chmodSync(root, 0o755); // mkdtemp's 0700 would keep uid 65532 out
    mkdirSync(join(root, "app"));
    mkdirSync(join(root, "proc"));
    mkdirSync(join(root, "etc/portico"), { recursive: true });
    copyFileSync(binary, join(root, "app/gateway"));
    for (const lib of sharedLibraries(binary)) {
      mkdirSync(join(root, dirname(lib)), { recursive: true });
      copyFileSync(realpathSync(lib), join(root, lib));
    }

    stub = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: (req) => Response.json({ path: new URL(req.url).pathname }, { headers: { "x-served-by": "stub" } }),
    });
    const [rpcPort, rpcHttpPort] = [await freePort(), await freePort()];
    const rpcapp = spawnService(
      "rpcapp",
      { HOST: "127.0.0.1", PORT: String(rpcPort), METRICS_PORT: String(rpcHttpPort), INSTANCE_ID: "rpcapp-image" },
      "rpcapp-image",
    );
    await waitForHttp(`http://127.0.0.1:${rpcHttpPort}/readyz`, rpcapp);

    // A relative proto path with no proto on disk: it must come from the copy embedded in the binary.
    writeFileSync(
      join(root, "etc/portico/routes.yaml"),
      `upstreams:
  stub: { protocol: http, endpoints: "127.0.0.1:${stub.port}" }
  rpcapp: { protocol: grpc, endpoints: "127.0.0.1:${rpcPort}", proto: proto/userverify.proto }
routes:
  - { name: stub, path: /stub, upstream: stub }
  - { name: verify, path: /verify, match: exact, methods: [POST], upstream: rpcapp, grpc: { method: userverify.UserVerify/VerifyUser } }
`,
    );
    const [port, adminPort] = [await freePort(), await freePort()];
    gw = `http://127.0.0.1:${port}`;
    admin = `http://127.0.0.1:${adminPort}`;
    gateway = spawnProcess(
      "gateway-image",
      inImage(root, {
        ROUTES_FILE: "/etc/portico/routes.yaml",
        HOST: "127.0.0.1",
        PORT: String(port),
        ADMIN_PORT: String(adminPort),
        INSTANCE_ID: "gateway-image",
      }),
    );
    await waitForHttp(`${admin}/readyz`, gateway, 20_000);
  }, 60_000);

  afterAll(async () => {
    stub?.stop(true);
    await stopAll();
    // Two copies of a 114 MiB binary: not left behind in /tmp.
    for (const dir of [work, root]) if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("the root holds only the binary, the libraries ldd lists and routes.yaml", () => {
    const files = filesUnder(root);
    const libraries = files.filter((f) => f !== "app/gateway" && f !== "etc/portico/routes.yaml");
    expect(files).toContain("app/gateway");
    expect(libraries.length).toBeGreaterThan(0);
    expect(libraries.every((f) => /^(lib|lib64|usr\/lib)\//.test(f) && /\.so(\.\d+)*$/.test(f))).toBe(true);
    console.log(
      `built in ${buildSeconds.toFixed(1)} s; binary ${(statSync(join(root, "app/gateway")).size / 2 ** 20).toFixed(0)} MiB; root: ${files.join(", ")}`,
    );
  });

  test("it serves: /healthz, an HTTP route to a stub, a gRPC route (embedded protos, gRPC health checks)", async () => {
    expect((await fetch(`${gw}/healthz`)).status).toBe(200);
    const http = await fetch(`${gw}/stub/hello`);
    expect([http.status, await http.json()]).toEqual([200, { path: "/stub/hello" }]);
    const grpc = await fetch(`${gw}/verify/`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"id": 121, "token": "a$$"}',
    });
    expect(grpc.status).toBe(200);
    expect(await grpc.json()).toEqual({ message: "Verified: 121" });
    expect(grpc.headers.get("x-served-by")).toBe("rpcapp-image");
    const upstreams = (await (await fetch(`${admin}/upstreams`)).json()) as {
      name: string;
      endpoints: { health: string }[];
    }[];
    expect(upstreams.find((u) => u.name === "rpcapp")!.endpoints[0]!.health).toBe("healthy");
  });

  test("it runs as uid/gid 65532 without capabilities, chrooted, on a read-only root", async () => {
    let pid: number | undefined;
    await waitFor("the gateway's pid", () => (pid = gatewayPid(gateway.pid, root)) !== undefined, { timeoutMs: 2000 });
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const field = (name: string) => new RegExp(`^${name}:\\s+(.*)$`, "m").exec(status)![1]!.trim().split(/\s+/);
    expect(field("Uid")).toEqual(Array(4).fill(String(NONROOT)));
    expect(field("Gid")).toEqual(Array(4).fill(String(NONROOT)));
    expect(field("Groups")).toEqual([String(NONROOT)]);
    expect(field("CapEff")).toEqual(["0000000000000000"]);
    expect(field("CapPrm")).toEqual(["0000000000000000"]);
    expect(readlinkSync(`/proc/${pid}/exe`)).toBe(join(root, "app/gateway"));
    // mountinfo: "<id> <parent> <dev> <root> <mount point> <options> …" as the process sees it.
    const rootMount = readFileSync(`/proc/${pid}/mountinfo`, "utf8")
      .split("\n")
      .map((l) => l.split(" "))
      .find((f) => f[4] === "/");
    expect(rootMount?.[5]?.split(",")).toContain("ro");
  });

  test("it stops cleanly on SIGTERM sent to it as PID 1 of its namespace (as the kubelet does)", async () => {
    // unshare itself holds SIGTERM while it waits for its child, so the signal goes to the gateway.
    process.kill(gatewayPid(gateway.pid, root)!, "SIGTERM");
    const timer = setTimeout(() => void stopProcess(gateway, "SIGKILL"), 5000);
    expect(await gateway.exited).toBe(0);
    clearTimeout(timer);
    expect(gateway.lines.join("\n")).toContain('"msg":"stopped"');
  });

  test("/proc is the one thing it needs beyond the root: without it Bun cannot start", async () => {
    const [port, adminPort] = [await freePort(), await freePort()];
    const without = spawnProcess(
      "gateway-no-proc",
      inImage(
        root,
        {
          ROUTES_FILE: "/etc/portico/routes.yaml",
          HOST: "127.0.0.1",
          PORT: String(port),
          ADMIN_PORT: String(adminPort),
        },
        { proc: false },
      ),
    );
    expect(await without.exited).not.toBe(0);
    // The runtime reads /proc/self/maps (and statm, cgroup) at start-up and aborts before any of ours runs.
    expect(without.lines.join("\n")).toContain("panic(main thread): abort() called");
  });
});
