/**
 * The graceful lifecycle: the order and bounds of a shutdown in-process, then a real server
 * process receiving SIGTERM/SIGINT while requests are in flight.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { EnvError } from "./env.ts";
import { Lifecycle } from "./lifecycle.ts";
import { createLogger } from "./log.ts";
import { freePort } from "../scripts/stack/testing/ports.ts";
import { type Spawned, spawnProcess, stopAll, waitFor } from "../scripts/stack/testing/processes.ts";

const quietLog = createLogger(
  { service: "lifecycle-test", version: "test", instance: "t" },
  { destination: { write: () => {} } },
);

function lifecycle(opts: { drainDelayMs?: number; shutdownTimeoutMs?: number } = {}) {
  const exits: number[] = [];
  const lc = new Lifecycle({
    drainDelayMs: opts.drainDelayMs ?? 0,
    shutdownTimeoutMs: opts.shutdownTimeoutMs ?? 2_000,
    log: quietLog,
    exit: (code) => exits.push(code),
  });
  lc.markReady();
  return { lc, exits };
}

describe("shutdown, in-process", () => {
  test("turns not ready at once, keeps serving for the drain delay, then runs the stop hooks in order and exits 0", async () => {
    const { lc, exits } = lifecycle({ drainDelayMs: 150 });
    const readiness: boolean[] = [];
    lc.onReadinessChange((ready) => readiness.push(ready));
    const events: string[] = [];
    const at: Record<string, number> = {};
    lc.onStop("listener", async () => {
      at.listener = performance.now();
      await Bun.sleep(20);
      events.push("listener");
    });
    lc.onStop("exporter", () => void events.push("exporter"));
    const start = performance.now();
    const done = lc.shutdown();
    expect(lc.isReady()).toBe(false);
    expect(lc.isLive()).toBe(true);
    expect(readiness).toEqual([false]);
    expect(events).toEqual([]);
    await done;
    expect(at.listener! - start).toBeGreaterThanOrEqual(145);
    expect(events).toEqual(["listener", "exporter"]);
    expect(exits).toEqual([0]);
  });

  test("a failing stop hook makes the exit code 1, and the hooks after it still run", async () => {
    const { lc, exits } = lifecycle();
    const ran: string[] = [];
    lc.onStop("broken", () => {
      throw new Error("boom");
    });
    lc.onStop("after", () => void ran.push("after"));
    await lc.shutdown();
    expect(ran).toEqual(["after"]);
    expect(exits).toEqual([1]);
  });

  test("a shutdown that outlasts shutdownTimeoutMs exits 1 at the deadline, once", async () => {
    const { lc, exits } = lifecycle({ drainDelayMs: 50, shutdownTimeoutMs: 200 });
    let release!: () => void;
    lc.onStop("stuck", () => new Promise<void>((r) => (release = r)));
    const start = performance.now();
    void lc.shutdown();
    await waitFor("the deadline exit", () => exits.length > 0, { timeoutMs: 2_000, intervalMs: 5 });
    expect(performance.now() - start).toBeGreaterThanOrEqual(195);
    expect(exits).toEqual([1]);
    release();
    await Bun.sleep(10);
    expect(exits).toEqual([1]);
  });

  test("without the drain (SIGINT) the hooks run at once; a second shutdown is a no-op", async () => {
    const { lc, exits } = lifecycle({ drainDelayMs: 5_000, shutdownTimeoutMs: 10_000 });
    const start = performance.now();
    await lc.shutdown({ drain: false });
    await lc.shutdown();
    expect(performance.now() - start).toBeLessThan(500);
    expect(exits).toEqual([0]);
  });

  test("Connection: close is added to responses only while shutting down, on Headers and on Elysia's header record", async () => {
    const { lc } = lifecycle();
    const headers = new Headers();
    const record: Record<string, string | number> = {};
    lc.closeConnectionWhileDraining(headers);
    lc.closeConnectionWhileDraining(record);
    expect(headers.get("connection")).toBeNull();
    expect(record).toEqual({});
    await lc.shutdown();
    lc.closeConnectionWhileDraining(headers);
    lc.closeConnectionWhileDraining(record);
    expect(headers.get("connection")).toBe("close");
    expect(record).toEqual({ connection: "close" });
  });

  test("a drain delay that is not below the shutdown timeout is refused, naming both variables", () => {
    expect(() => new Lifecycle({ drainDelayMs: 5_000, shutdownTimeoutMs: 5_000, log: quietLog })).toThrow(EnvError);
    expect(() => new Lifecycle({ drainDelayMs: 5_000, shutdownTimeoutMs: 5_000, log: quietLog })).toThrow(
      /DRAIN_DELAY_MS \(5000\) must be less than SHUTDOWN_TIMEOUT_MS \(5000\)/,
    );
  });
});

// ---- a real server process -----------------------------------------------------------------

const fixtureDir = mkdtempSync(join(tmpdir(), "portico-lifecycle-"));
const FIXTURE = join(fixtureDir, "server.ts");
// The way every service wires it: Bun.serve, the lifecycle's hooks and signals, and
// `closeConnectionWhileDraining` on every response.
writeFileSync(
  FIXTURE,
  `import { Lifecycle } from ${JSON.stringify(resolve(import.meta.dir, "lifecycle.ts"))};
import { createLogger } from ${JSON.stringify(resolve(import.meta.dir, "log.ts"))};
const log = createLogger({ service: "fixture", version: "t", instance: "fixture-1" });
const lifecycle = new Lifecycle({ drainDelayMs: Number(process.env.DRAIN_DELAY_MS), shutdownTimeoutMs: Number(process.env.SHUTDOWN_TIMEOUT_MS), log });
const server = Bun.serve({
  hostname: "127.0.0.1",
  port: Number(process.env.PORT),
  async fetch(req) {
    const url = new URL(req.url);
    let res;
    if (url.pathname === "/readyz") res = new Response(null, { status: lifecycle.isReady() ? 200 : 503 });
    else if (url.pathname === "/slow") {
      const ms = Number(url.searchParams.get("ms"));
      console.log(JSON.stringify({ msg: "slow request started" }));
      await Bun.sleep(ms);
      res = new Response("done after " + ms + " ms");
    } else if (url.pathname === "/stream") {
      console.log(JSON.stringify({ msg: "stream started" }));
      let i = 0;
      res = new Response(new ReadableStream({ async pull(c) { await Bun.sleep(150); if (i++ === 10) c.close(); else c.enqueue(new TextEncoder().encode("chunk" + i + ";")); } }));
    } else res = new Response("fast");
    lifecycle.closeConnectionWhileDraining(res.headers);
    return res;
  },
});
lifecycle.onStop("http", () => server.stop(false));
lifecycle.handleSignals();
lifecycle.markReady();
console.log(JSON.stringify({ msg: "listening" }));
`,
);

afterAll(async () => {
  await stopAll();
  rmSync(fixtureDir, { recursive: true, force: true });
});

async function startFixture(env: {
  DRAIN_DELAY_MS: number;
  SHUTDOWN_TIMEOUT_MS: number;
}): Promise<{ proc: Spawned; base: string; port: number }> {
  const port = await freePort();
  const proc = spawnProcess("lifecycle-fixture", [process.execPath, FIXTURE], {
    PORT: String(port),
    DRAIN_DELAY_MS: String(env.DRAIN_DELAY_MS),
    SHUTDOWN_TIMEOUT_MS: String(env.SHUTDOWN_TIMEOUT_MS),
  });
  const base = `http://127.0.0.1:${port}`;
  await waitFor("the fixture to listen", async () => (await fetch(`${base}/readyz`)).status === 200, { proc });
  return { proc, base, port };
}

const logged = (proc: Spawned, msg: string) => proc.lines.some((l) => l.includes(`"msg":"${msg}"`));

/** Whether a new TCP connection is refused (the listener is closed). */
function refusesConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(true));
  });
}

describe("a real server process", () => {
  test("SIGTERM during a long in-flight request: it completes with its whole body, the drain serves with Connection: close, then new connections are refused and the exit is 0", async () => {
    const { proc, base, port } = await startFixture({ DRAIN_DELAY_MS: 600, SHUTDOWN_TIMEOUT_MS: 8_000 });
    const slow = fetch(`${base}/slow?ms=2500`).then(async (r) => ({ status: r.status, body: await r.text() }));
    await waitFor("the slow request to be in flight", () => logged(proc, "slow request started"), { proc });
    const signalledAt = performance.now();
    proc.proc.kill("SIGTERM");

    await waitFor("/readyz to turn 503", async () => (await fetch(`${base}/readyz`)).status === 503, { proc });
    const duringDrain = await fetch(`${base}/fast`);
    expect(duringDrain.status).toBe(200);
    expect(duringDrain.headers.get("connection")).toBe("close");
    await duringDrain.text();

    await waitFor("the listener to close after the drain delay", () => refusesConnections(port), {
      proc,
      timeoutMs: 3_000,
    });
    expect(performance.now() - signalledAt).toBeGreaterThanOrEqual(550);
    expect(proc.proc.exitCode).toBeNull(); // the slow request still holds it

    expect(await slow).toEqual({ status: 200, body: "done after 2500 ms" });
    expect(await proc.exited).toBe(0);
    expect(performance.now() - signalledAt).toBeGreaterThanOrEqual(2_000);
    expect(logged(proc, "stopped")).toBe(true);
  });

  test("a streaming response in flight at SIGTERM is delivered to its last chunk", async () => {
    const { proc, base } = await startFixture({ DRAIN_DELAY_MS: 200, SHUTDOWN_TIMEOUT_MS: 8_000 });
    const body = fetch(`${base}/stream`).then((r) => r.text());
    await waitFor("the stream to start", () => logged(proc, "stream started"), { proc });
    proc.proc.kill("SIGTERM");
    expect(await body).toBe(Array.from({ length: 10 }, (_, i) => `chunk${i + 1};`).join(""));
    expect(await proc.exited).toBe(0);
  });

  test("SIGINT skips the drain delay but still lets the in-flight request finish", async () => {
    const { proc, base, port } = await startFixture({ DRAIN_DELAY_MS: 5_000, SHUTDOWN_TIMEOUT_MS: 8_000 });
    const slow = fetch(`${base}/slow?ms=800`).then((r) => r.text());
    await waitFor("the slow request to be in flight", () => logged(proc, "slow request started"), { proc });
    const signalledAt = performance.now();
    proc.proc.kill("SIGINT");
    await waitFor("the listener to close at once", () => refusesConnections(port), { proc, timeoutMs: 1_000 });
    expect(await slow).toBe("done after 800 ms");
    expect(await proc.exited).toBe(0);
    expect(performance.now() - signalledAt).toBeLessThan(2_500);
  });

  test("a request longer than SHUTDOWN_TIMEOUT_MS is cut off: the process exits 1 at the deadline", async () => {
    const { proc, base } = await startFixture({ DRAIN_DELAY_MS: 100, SHUTDOWN_TIMEOUT_MS: 700 });
    const slow = fetch(`${base}/slow?ms=10000`).then(
      (r) => r.status,
      () => "cut off",
    );
    await waitFor("the slow request to be in flight", () => logged(proc, "slow request started"), { proc });
    const signalledAt = performance.now();
    proc.proc.kill("SIGTERM");
    expect(await proc.exited).toBe(1);
    const took = performance.now() - signalledAt;
    expect(took).toBeGreaterThanOrEqual(650);
    expect(took).toBeLessThan(3_000);
    expect(await slow).toBe("cut off");
    expect(logged(proc, "shutdown timed out; exiting with requests still in flight")).toBe(true);
  });
});
