/**
 * Stopping the local stack leaves nothing behind, whenever it happens (real processes):
 *
 * 1. `make dev` (scripts/dev.ts) interrupted by SIGINT while its redis-server is starting: every
 *    process it started is gone, and it does not blame the ports for the replicas it stopped;
 * 2. stop() during a rollout: the rollout fails instead of starting the next replica, and no
 *    process of the stack survives;
 * 3. a rollout with no gateway left fails (it used to count "every gateway routes to it" as true
 *    for none, and go on replacing replicas that nothing reached); the test harness's stack it
 *    runs on removes its temporary SQLite folder when it stops.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { isListening } from "../stack/redis.ts";
import { type RolloutEvent, RollingStack } from "../stack/rolling.ts";
import type { Stack, StackOptions, StackProcess } from "../stack/stack.ts";
import { requireBinary, spawnProcess, stopAll } from "../stack/testing/processes.ts";
import {
  freeBlock,
  freePort,
  oneReplicaDevEnv,
  rollingLayout,
  startTestStack,
  type TestStack,
} from "../stack/testing/stack.ts";

const hasRedis = requireBinary("redis-server");
/** Every PID a test saw, killed in afterAll if one survived (the assertion has failed by then). */
const seen = new Set<number>();

afterAll(async () => {
  for (const pid of seen) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {}
  }
  await stopAll();
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    // A zombie is dead: its parent (this test) has not reaped it yet.
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** The children of `pid`, with their command lines (from /proc: every thread's children). */
function childrenOf(pid: number): { pid: number; argv: string }[] {
  const found: { pid: number; argv: string }[] = [];
  try {
    for (const task of readdirSync(`/proc/${pid}/task`)) {
      const text = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim();
      for (const child of text ? text.split(/\s+/).map(Number) : []) {
        let argv = "";
        try {
          argv = readFileSync(`/proc/${child}/cmdline`, "utf8").replaceAll("\0", " ");
        } catch {}
        found.push({ pid: child, argv });
      }
    }
  } catch {}
  return found;
}

describe.skipIf(!hasRedis)("make dev interrupted while starting", () => {
  test("SIGINT while its redis-server starts: every process it started has exited; no port conflict is reported", async () => {
    const redisPort = await freePort();
    const gatewayPort = await freePort();
    const adminBasePort = await freeBlock(2);
    const env = await oneReplicaDevEnv({
      GATEWAY_PORT: String(gatewayPort),
      ADMIN_BASE_PORT: String(adminBasePort),
      REDIS_PORT: String(redisPort),
    });
    const dev = spawnProcess("dev", [process.execPath, "scripts/dev.ts"], env);
    // Every child as it appears; SIGINT the moment redis-server is one of them: start() is then
    // between the services' readiness and the gateways' start.
    let interrupted = false;
    const deadline = Date.now() + 45_000;
    while (dev.proc.exitCode === null && Date.now() < deadline) {
      const children = childrenOf(dev.pid);
      for (const c of children) seen.add(c.pid);
      if (!interrupted && children.some((c) => c.argv.startsWith("redis-server"))) {
        dev.proc.kill("SIGINT");
        interrupted = true;
      }
      await Bun.sleep(interrupted ? 50 : 5);
    }
    expect(interrupted).toBe(true);
    expect(await dev.exited).toBe(0);
    // Long enough for a gateway spawned after the stop to have bound its ports.
    await Bun.sleep(1_500);
    const output = dev.lines.join("\n");
    expect(output).not.toContain("before it was ready");
    expect(output).not.toContain("Is another stack");
    expect(output).not.toContain("Portico is up");
    expect([...seen].filter(alive)).toEqual([]);
    expect(await isListening(redisPort)).toBe(false);
    expect(await isListening(gatewayPort)).toBe(false);
    expect(await isListening(adminBasePort)).toBe(false);
  }, 60_000);
});

/** A RollingStack that remembers every process it ever started. */
function recording(opts: StackOptions): RollingStack {
  const stack = new RollingStack(opts, { drainDelayMs: 300, shutdownTimeoutMs: 5_000 });
  const spawn = stack.spawn.bind(stack);
  stack.spawn = (...args: Parameters<Stack["spawn"]>): StackProcess => {
    const p = spawn(...args);
    seen.add(p.proc.pid);
    return p;
  };
  return stack;
}

/** A recording RollingStack of these replica counts, started (logs at warn). */
async function startRecordingStack(replicas: Parameters<typeof rollingLayout>[0]): Promise<TestStack & RollingStack> {
  return (await startTestStack(
    { ...(await rollingLayout(replicas)), env: { LOG_LEVEL: "warn" } },
    recording,
  )) as TestStack & RollingStack;
}

describe("stop() and rollouts", () => {
  test("stop() during a rollout: the rollout fails at once and no process of the stack survives", async () => {
    const stack = await startRecordingStack({ gateway: 1, webapp: 2, rpcapp: 1 });
    let stopped: Promise<void> | undefined;
    const events: RolloutEvent[] = [];
    // Stopped as the first replica drains: the rollout is then waiting for the gateway to route
    // to its replacement, and would go on to webapp-2 once none is left.
    const rollout = stack.rollingReplace("webapp", "v2", (e) => {
      events.push(e);
      if (e.type === "draining") stopped ??= stack.stop(5_000);
    });
    const outcome = await rollout.then(
      () => "done",
      (err: Error) => err.message,
    );
    await stopped;
    expect(outcome).toContain("stopping");
    expect(events.filter((e) => e.type === "starting").map((e) => (e as { instance: string }).instance)).toEqual([
      "webapp-1.2",
    ]);
    await Bun.sleep(1_000);
    expect(stack.processes).toEqual([]);
    expect([...seen].filter(alive)).toEqual([]);
  }, 60_000);

  test("a rollout with no gateway left fails instead of replacing replicas nothing reaches", async () => {
    const stack = await startRecordingStack({ gateway: 1, webapp: 1, rpcapp: 1 });
    // The harness's stack (no dbPath given) has its SQLite file in a temporary folder of its own.
    const folder = dirname(stack.opts.dbPath);
    expect(folder.startsWith(join(tmpdir(), "portico-test-"))).toBe(true);
    expect(existsSync(folder)).toBe(true);
    try {
      const gateway = stack.processes.find((p) => p.kind === "gateway")!;
      gateway.proc.kill("SIGKILL");
      await gateway.proc.exited;
      await expect(stack.rollingReplace("webapp", "v2")).rejects.toThrow("no gateway serves in this stack");
    } finally {
      await stack.stop(5_000);
    }
    // ...which stop() removes.
    expect(existsSync(folder)).toBe(false);
  }, 60_000);
});
