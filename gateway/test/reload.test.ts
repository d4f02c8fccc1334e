/**
 * Config hot reload, on a real gateway process: an edit of routes.yaml is served without a
 * restart, a bad edit is rejected (the last good config keeps serving, the error is on the admin
 * API with file:line), SIGHUP reloads, a Kubernetes-style ConfigMap update (a symlink swap in
 * the mounted directory) is picked up, and a file written beside routes.yaml all the time (a log)
 * does not hold a reload back.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { appendFileSync, mkdirSync, mkdtempSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { type Spawned, spawnService, stopAll, waitFor, waitForHttp } from "../../scripts/stack/testing/processes.ts";
import { concernsConfig, type ReloadStatus } from "../src/config/reload.ts";

let upstream: ReturnType<typeof Bun.serve>;
const dirs: string[] = [];

/** A routes.yaml with one upstream (the echo server below) and the given routes. */
function routesYaml(routes: { name: string; path: string }[], extra = ""): string {
  return [
    "upstreams:",
    "  echo:",
    "    protocol: http",
    `    endpoints: 127.0.0.1:${upstream.port}`,
    "routes:",
    ...routes.flatMap((r) => [`  - name: ${r.name}`, `    path: ${r.path}`, "    upstream: echo"]),
    extra,
  ].join("\n");
}

interface Gw {
  proc: Spawned;
  url: string;
  admin: string;
}

async function startGateway(routesFile: string): Promise<Gw> {
  const [port, adminPort] = [await freePort(), await freePort()];
  const proc = spawnService(
    "gateway",
    { HOST: "127.0.0.1", PORT: String(port), ADMIN_PORT: String(adminPort), ROUTES_FILE: routesFile },
    `gateway-${adminPort}`,
  );
  const admin = `http://127.0.0.1:${adminPort}`;
  await waitForHttp(`${admin}/readyz`, proc);
  return { proc, url: `http://127.0.0.1:${port}`, admin };
}

const statusOf = async (url: string) => (await fetch(url)).status;
const reloadStatus = async (gw: Gw) =>
  ((await (await fetch(`${gw.admin}/config`)).json()) as { reload: ReloadStatus }).reload;

beforeAll(() => {
  upstream = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch: (req) => Response.json({ path: new URL(req.url).pathname }),
  });
});
afterAll(async () => {
  await stopAll();
  upstream?.stop(true);
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describe("routes.yaml edited in place", () => {
  let gw: Gw;
  let file: string;
  const one = [{ name: "first", path: "/first" }];
  const two = [...one, { name: "second", path: "/second" }];

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), "portico-reload-"));
    dirs.push(dir);
    file = join(dir, "routes.yaml");
    writeFileSync(file, routesYaml(one));
    gw = await startGateway(file);
  }, 20_000);

  test("a new route is served once the file is saved, without a restart", async () => {
    expect(await statusOf(`${gw.url}/second`)).toBe(404);
    const savedAt = Date.now();
    writeFileSync(file, routesYaml(two));
    await waitFor("/second to be served", async () => (await statusOf(`${gw.url}/second`)) === 200, {
      proc: gw.proc,
      timeoutMs: 5_000,
    });
    expect(await (await fetch(`${gw.url}/second/x`)).json()).toEqual({ path: "/second/x" });
    const status = await reloadStatus(gw);
    expect(status.reloads).toBe(1);
    expect(status.lastReloadAt).toBeGreaterThanOrEqual(savedAt); // this save's reload, not an older one
    expect(status.lastError).toBeNull();
    expect(await (await fetch(`${gw.admin}/config/source`)).text()).toBe(routesYaml(two));
  }, 15_000);

  test("a bad edit is rejected with its file:line on the admin API, and the last good config keeps serving", async () => {
    // Line 8 of the file: `    upstream: echo` of the first route, misspelt.
    const bad = routesYaml(two).replace("    upstream: echo", "    upstrem: echo");
    expect(bad.split("\n")[7]).toBe("    upstrem: echo");
    writeFileSync(file, bad);
    let status: ReloadStatus | undefined;
    await waitFor("the reload error on /config", async () => (status = await reloadStatus(gw)).lastError !== null, {
      proc: gw.proc,
      timeoutMs: 5_000,
    });
    expect(status!.lastError!.message).toContain(`${file}:8:`);
    expect(status!.lastError!.problems.some((p) => p.line === 8 && p.message.includes("unknown field"))).toBe(true);
    expect(status!.reloads).toBe(1);
    expect(status!.failures).toBe(1);
    expect([await statusOf(`${gw.url}/first`), await statusOf(`${gw.url}/second`)]).toEqual([200, 200]);
    expect(await (await fetch(`${gw.admin}/config/source`)).text()).toBe(routesYaml(two));
    expect(gw.proc.lines.some((l) => l.includes("config reload rejected") && l.includes(`${file}:8:`))).toBe(true);

    // Fixing the file clears the error and applies the fix.
    writeFileSync(file, routesYaml(one));
    await waitFor("/second to be gone", async () => (await statusOf(`${gw.url}/second`)) === 404, {
      proc: gw.proc,
      timeoutMs: 5_000,
    });
    expect((await reloadStatus(gw)).lastError).toBeNull();
  }, 15_000);

  test("SIGHUP reloads the file even when it did not change, and the gateway keeps running", async () => {
    const before = (await reloadStatus(gw)).reloads;
    gw.proc.proc.kill("SIGHUP");
    await waitFor("a reload after SIGHUP", async () => (await reloadStatus(gw)).reloads === before + 1, {
      proc: gw.proc,
      timeoutMs: 5_000,
    });
    expect(await statusOf(`${gw.url}/first`)).toBe(200);
    expect(gw.proc.proc.exitCode).toBeNull();
  }, 15_000);

  test("limits.maxHeaderBytes follows a reload: lowered, a 4 KiB header gets 431; restored, it passes", async () => {
    // A fresh connection per request: the limit applies to connections opened after the change.
    const withBigHeader = async () =>
      (
        await fetch(`${gw.url}/first`, {
          headers: { "x-pad": "p".repeat(4096), connection: "close" },
          keepalive: false,
        })
      ).status;
    expect(await withBigHeader()).toBe(200);
    writeFileSync(file, routesYaml(one, "limits:\n  maxHeaderBytes: 2048"));
    await waitFor("the lowered header limit", async () => (await withBigHeader()) === 431, {
      proc: gw.proc,
      timeoutMs: 5_000,
    });
    expect(await statusOf(`${gw.url}/first`)).toBe(200);
    writeFileSync(file, routesYaml(one));
    await waitFor("the default header limit again", async () => (await withBigHeader()) === 200, {
      proc: gw.proc,
      timeoutMs: 5_000,
    });
  }, 15_000);
});

describe("a ConfigMap mounted as a directory", () => {
  test("the kubelet's symlink swap (..data → a new timestamped directory) is picked up", async () => {
    // The layout the kubelet writes: routes.yaml → ..data/routes.yaml, ..data → ..<timestamp>.
    const dir = mkdtempSync(join(tmpdir(), "portico-configmap-"));
    dirs.push(dir);
    const version = (name: string, text: string) => {
      mkdirSync(join(dir, name));
      writeFileSync(join(dir, name, "routes.yaml"), text);
    };
    version("..2024_01_01_00_00_00.1", routesYaml([{ name: "first", path: "/first" }]));
    symlinkSync("..2024_01_01_00_00_00.1", join(dir, "..data"));
    symlinkSync("..data/routes.yaml", join(dir, "routes.yaml"));
    const gw = await startGateway(join(dir, "routes.yaml"));
    expect(await statusOf(`${gw.url}/moved`)).toBe(404);

    version("..2024_01_01_00_01_00.2", routesYaml([{ name: "moved", path: "/moved" }]));
    symlinkSync("..2024_01_01_00_01_00.2", join(dir, "..data_tmp"));
    renameSync(join(dir, "..data_tmp"), join(dir, "..data"));
    rmSync(join(dir, "..2024_01_01_00_00_00.1"), { recursive: true });

    await waitFor("/moved to be served", async () => (await statusOf(`${gw.url}/moved`)) === 200, {
      proc: gw.proc,
      timeoutMs: 5_000,
    });
    expect(await statusOf(`${gw.url}/first`)).toBe(404);
  }, 20_000);
});

describe("other files in the config directory", () => {
  test("only the config file and the kubelet's `..` entries concern the watch", () => {
    for (const name of ["routes.yaml", "..data", "..data_tmp", "..2024_01_01_00_01_00.2", null, undefined])
      expect(concernsConfig(name, "routes.yaml")).toBe(true);
    expect(concernsConfig(Buffer.from("routes.yaml"), "routes.yaml")).toBe(true);
    for (const name of ["access.log", ".routes.yaml.swp", "routes.yaml~", "other.yaml", "routes.yml"])
      expect(concernsConfig(name, "routes.yaml")).toBe(false);
  });

  test("a log appended to beside routes.yaml every 20 ms does not hold an edit back until the poll", async () => {
    const dir = mkdtempSync(join(tmpdir(), "portico-reload-busy-"));
    dirs.push(dir);
    const file = join(dir, "routes.yaml");
    writeFileSync(file, routesYaml([{ name: "first", path: "/first" }]));
    const gw = await startGateway(file);
    // Each append is a watch event in the directory, well inside the 150 ms debounce: a debounce
    // that every event restarted would read the file only at the 10 s poll.
    const log = join(dir, "access.log");
    const writer = setInterval(() => appendFileSync(log, `{"msg":"request"}\n`), 20);
    try {
      await Bun.sleep(300);
      writeFileSync(
        file,
        routesYaml([
          { name: "first", path: "/first" },
          { name: "second", path: "/second" },
        ]),
      );
      await waitFor("/second to be served", async () => (await statusOf(`${gw.url}/second`)) === 200, {
        proc: gw.proc,
        timeoutMs: 5_000,
      });
    } finally {
      clearInterval(writer);
    }
    const status = await reloadStatus(gw);
    expect(status.reloads).toBe(1);
    expect(status.failures).toBe(0);
  }, 20_000);
});

describe("a reload that changes limits.idleTimeoutSec", () => {
  test("a route slower than the listener's idle timeout still gets its answer, not a connection cut at the old timeout", async () => {
    // Answers after 5 s: longer than the 2 s idle timeout the gateway starts with — which Bun's
    // timer, ticking every 4 s, fires within 4 s —, shorter than the route's timeout (10 s, the
    // deadline extended to 12) and than the 60 s the reload asks for.
    const slow = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: async () => {
        await Bun.sleep(5_000);
        return new Response("slow answer");
      },
    });
    try {
      const dir = mkdtempSync(join(tmpdir(), "portico-reload-idle-"));
      dirs.push(dir);
      const file = join(dir, "routes.yaml");
      const yaml = (idleTimeoutSec: number) =>
        `upstreams:\n  slow: { protocol: http, endpoints: 127.0.0.1:${slow.port}, healthCheck: { enabled: false } }\n` +
        `routes:\n  - { name: slow, path: /slow, upstream: slow, timeoutMs: 10000 }\n` +
        `limits: { idleTimeoutSec: ${idleTimeoutSec} }\n`;
      writeFileSync(file, yaml(2));
      const gw = await startGateway(file);
      writeFileSync(file, yaml(60));
      await waitFor("the reload", async () => (await reloadStatus(gw)).reloads === 1, {
        proc: gw.proc,
        timeoutMs: 5_000,
      });
      const res = await fetch(`${gw.url}/slow`);
      expect({ status: res.status, body: await res.text() }).toEqual({ status: 200, body: "slow answer" });
      await waitFor("the warning", () => gw.proc.lines.some((l) => l.includes("limits.idleTimeoutSec changed")), {
        timeoutMs: 2_000,
      });
    } finally {
      slow.stop(true);
    }
  }, 30_000);
});
