/**
 * The graceful lifecycle: the order and bounds of a shutdown in-process, then a real server
 * process receiving SIGTERM/SIGINT while requests are in flight.
 */
import { afterAll, afterEach, describe, expect, jest, test } from "bun:test";
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

/**
 * The in-process tests run on Bun's fake timers: setTimeout, Bun.sleep and the clocks move only
 * when the test advances them, so "not before the drain delay" is exact, not a time measured.
 */
afterEach(() => {
  jest.useRealTimers();
});

/** Lets the promise chains woken by a timer run to their next wait (fake timers do not). */
async function settle(): Promise<void> {
  for (let i = 0; i < 50; i++) await Promise.resolve();
}

describe("shutdown, in-process", () => {
  test("turns not ready at once, keeps serving for the drain delay, then runs the stop hooks in order and exits 0", async () => {
    jest.useFakeTimers();
    const { lc, exits } = lifecycle({ drainDelayMs: 150 });
    const readiness: boolean[] = [];
    lc.onReadinessChange((ready) => readiness.push(ready));
    const events: string[] = [];
    lc.onStop("listener", async () => {
      events.push("listener stopping");
      await Bun.sleep(20);
      events.push("listener stopped");
    });
    lc.onStop("exporter", () => void events.push("exporter stopped"));
    const done = lc.shutdown();
    expect(lc.isReady()).toBe(false);
    expect(lc.isLive()).toBe(true);
    expect(readiness).toEqual([false]);
    jest.advanceTimersByTime(149);
    await settle();
    expect(events).toEqual([]); // still serving: the drain delay is not over
    jest.advanceTimersByTime(1);
    await settle();
    expect(events).toEqual(["listener stopping"]); // the next hook waits for this one
    jest.advanceTimersByTime(20);
    await done;
    expect(events).toEqual(["listener stopping", "listener stopped", "exporter stopped"]);
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
    jest.useFakeTimers();
    const { lc, exits } = lifecycle({ drainDelayMs: 50, shutdownTimeoutMs: 200 });
    let release: (() => void) | undefined;
    lc.onStop("stuck", () => new Promise<void>((r) => (release = r)));
    void lc.shutdown();
    jest.advanceTimersByTime(199);
    await settle();
    expect(release).toBeDefined(); // the hook is running...
    expect(exits).toEqual([]); // ...and the deadline has not come
    jest.advanceTimersByTime(1);
    expect(exits).toEqual([1]);
    release!();
    await settle();
    expect(exits).toEqual([1]);
  });

  test("without the drain (SIGINT) the hooks run at once; a second shutdown is a no-op", async () => {
    jest.useFakeTimers();
    const { lc, exits } = lifecycle({ drainDelayMs: 5_000, shutdownTimeoutMs: 10_000 });
    const stopped: string[] = [];
    lc.onStop("listener", () => void stopped.push("listener"));
    void lc.shutdown({ drain: false });
    await settle(); // no timer advanced: a wait on the drain delay would leave the hooks unrun
    expect(stopped).toEqual(["listener"]);
    expect(exits).toEqual([0]);
    await lc.shutdown();
    expect(stopped).toEqual(["listener"]);
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
    // A drain long enough that the checks made during it still fall inside it on a busy machine.
    const { proc, base, port } = await startFixture({ DRAIN_DELAY_MS: 1_500, SHUTDOWN_TIMEOUT_MS: 8_000 });
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
    // DRAIN_DELAY_MS is 1500: the listener cannot close before it (50 ms below it for the child's
    // timer granularity; the signal is delivered after signalledAt, so the real margin is larger).
    expect(performance.now() - signalledAt).toBeGreaterThanOrEqual(1_450);
    expect(proc.proc.exitCode).toBeNull(); // the slow request still holds it

    expect(await slow).toEqual({ status: 200, body: "done after 2500 ms" });
    expect(await proc.exited).toBe(0);
    // The exit waited for the 2500 ms request, which had been running for well under 500 ms at
    // the signal (it was awaited just before).
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
    expect(proc.lines.some((l) => l.includes('"drain_delay_ms":0'))).toBe(true);
    // Against DRAIN_DELAY_MS (5000), which SIGINT skips: the 800 ms request plus the margin a busy
    // machine needs, still below the delay that was skipped.
    expect(performance.now() - signalledAt).toBeLessThan(4_500);
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
    // Against SHUTDOWN_TIMEOUT_MS (700): not before it (50 ms below it for timer granularity), and
    // long before the 10 s request could have ended (2.3 s of margin for a busy machine).
    expect(took).toBeGreaterThanOrEqual(650);
    expect(took).toBeLessThan(3_000);
    expect(await slow).toBe("cut off");
    expect(logged(proc, "shutdown timed out; exiting with requests still in flight")).toBe(true);
  });
});
