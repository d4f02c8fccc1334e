/**
 * The benchmark's own arithmetic and bookkeeping, which decide whether its table tells the truth:
 * CPU read from /proc for processes that may die mid-run, and the table's treatment of rows whose
 * runs failed or whose requests did.
 */
import { describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { cpuSeconds, holdStill, processTree, spawn, stopAll } from "./procs.ts";
import { censusWindowIsClean, formatTable, type Meta, type Row, type Run } from "./report.ts";

const meta: Meta = {
  date: "2026-12-07",
  commit: "test",
  cores: 2,
  bun: Bun.version,
  tools: {},
  seconds: 1,
  rounds: 2,
  high: 64,
  low: 8,
  pinning: "",
  loadAverageBefore: "",
  loadAverageAfter: "",
  notes: [],
};

const run = (round: number, connections: number, rps: number, errors = 0): Run => ({
  round,
  connections,
  result: { requestsPerSecond: rps, p50Ms: 1, p99Ms: 2, requests: rps, errors },
  proxyCpuS: rps * 50e-6, // 50 µs per request
  upstreamCpuS: rps * 20e-6,
  newUpstreamConnections: 1,
});

/** The table's cells of one row, by column name. */
function cells(rows: Row[], name: string): Record<string, string> {
  const lines = formatTable(rows, meta).split("\n");
  const header = lines[0]!.split(/\s{2,}/);
  const line = lines.find((l) => l.startsWith(name))!;
  const values = line.split(/\s{2,}/);
  return Object.fromEntries(header.map((h, i) => [h, values[i]!]));
}

describe("the proxy table", () => {
  const nginx: Row = { key: "nginx", name: "nginx", runs: [run(1, 64, 20_000), run(1, 8, 18_000)] };

  test("a clean row has its ratio to nginx and its CPU per request", () => {
    const row: Row = { key: "lean", name: "lean", runs: [run(1, 64, 10_000), run(1, 8, 9_000)] };
    expect(cells([nginx, row], "lean")).toMatchObject({ "× nginx": "0.50×", "proxy µs/req": "50" });
  });

  test("a row with failed requests gets no ratio and no CPU figure: a refusal is cheaper than a proxied request", () => {
    const row: Row = { key: "lean", name: "lean", runs: [run(1, 64, 30_000, 500), run(1, 8, 9_000)] };
    const c = cells([nginx, row], "lean");
    expect(c).toMatchObject({ errors: "500", "× nginx": "–", "proxy µs/req": "–" });
  });

  test("a row with runs that gave no figures says it is incomplete", () => {
    const row: Row = {
      key: "bare",
      name: "bare",
      runs: [run(1, 64, 10_000), run(1, 8, 9_000), run(2, 64, 10_000)],
      failed: [{ round: 2, connections: 8, error: "process 1 exited during the run" }],
    };
    expect(formatTable([nginx, row], meta)).toContain("bare (incomplete: 1 of 4 runs failed)");
  });
});

describe("CPU from /proc", () => {
  test("a live process's CPU is read; one that exited throws instead of counting as 0", async () => {
    const proc = Bun.spawn(["sleep", "30"], { stdout: "ignore" });
    // Enough CPU to show in /proc's 10 ms ticks: a fresh test process on a fast machine had used
    // less than one, and read 0.
    const usedSeconds = () => {
      const { user, system } = process.cpuUsage();
      return (user + system) / 1e6;
    };
    const giveUpAt = performance.now() + 2_000;
    while (usedSeconds() < 0.05 && performance.now() < giveUpAt) {}
    try {
      const before = usedSeconds();
      const read = cpuSeconds([process.pid]);
      // Within a tick either way of what the process says of itself (the child sleeps).
      expect(read).toBeGreaterThanOrEqual(before - 0.02);
      expect(read).toBeLessThanOrEqual(usedSeconds() + 0.02);
      expect(cpuSeconds([proc.pid])).toBeGreaterThanOrEqual(0);
    } finally {
      proc.kill("SIGKILL");
      await proc.exited;
    }
    // Reaped: /proc has no entry for it any more (a negative CPU figure came from reading it as 0).
    expect(() => cpuSeconds([proc.pid])).toThrow(`process ${proc.pid} exited during the run`);
  });
});

describe("holding the targets not measured", () => {
  /** The state letter of /proc/<pid>/stat: T stopped, S sleeping. */
  const state = (pid: number) => {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  };
  const waitFor = async (what: () => boolean) => {
    const giveUpAt = performance.now() + 5_000;
    while (!what() && performance.now() < giveUpAt) await Bun.sleep(10);
    return what();
  };

  test("a process and its children stop, and continue when released; stopAll continues one still held", async () => {
    // A shell with a child, as nginx has its worker.
    const proc = spawn("holder", ["sh", "-c", "sleep 30 & wait"], { stdout: "ignore" });
    expect(await waitFor(() => processTree(proc.pid).length === 2)).toBe(true);
    const tree = processTree(proc.pid);
    const release = holdStill([proc.pid]);
    expect(await waitFor(() => tree.every((pid) => state(pid) === "T"))).toBe(true);
    release();
    expect(await waitFor(() => tree.every((pid) => state(pid) === "S"))).toBe(true);
    holdStill([proc.pid]);
    expect(await waitFor(() => state(proc.pid) === "T")).toBe(true);
    // Held, SIGTERM would wait; continued first, the shell ends on it rather than on SIGKILL.
    await stopAll();
    expect(proc.signalCode).toBe("SIGTERM");
    // The shell's `sleep` outlives it (SIGTERM was the shell's alone): killed here, by PID.
    try {
      process.kill(tree[1]!, "SIGKILL");
    } catch {}
  });
});

describe("a benchmark started in the background", () => {
  test("its held processes outlive the shell that started it (no SIGHUP to an orphaned group)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "bench-orphan-"));
    const out = join(dir, "out");
    // A benchmark in miniature: it starts a process and holds it (once it runs its program: a
    // session of its own is made before that), and once the shell that started it has gone,
    // continues it and says whether it is still there.
    writeFileSync(
      join(dir, "bench.ts"),
      `import { readFileSync } from "node:fs";
import { holdStill, spawn, stopAll } from ${JSON.stringify(join(import.meta.dir, "procs.ts"))};
const proc = spawn("held", ["sleep", "30"]);
while (readFileSync(\`/proc/\${proc.pid}/comm\`, "utf8").trim() !== "sleep") await Bun.sleep(5);
const release = holdStill([proc.pid]);
await Bun.sleep(2_000);
release();
await Bun.sleep(100);
console.log(proc.exitCode === null && proc.signalCode === null ? "alive" : \`gone: \${proc.signalCode}\`);
await stopAll();
`,
    );
    // As a terminal's shell or a CI step's runs it: with job control (the benchmark a job, in a
    // process group of its own) in a session of its own, and gone while the benchmark holds a
    // process. Before each process had a session of its own, that process died of SIGHUP here.
    const shell = Bun.spawn([
      "setsid",
      "bash",
      "-c",
      `set -m; (${process.execPath} ${join(dir, "bench.ts")} > ${out} 2>&1) & sleep 0.5`,
    ]);
    await shell.exited;
    let said = "";
    const giveUpAt = performance.now() + 10_000;
    while (!said.includes("\n") && performance.now() < giveUpAt) {
      await Bun.sleep(50);
      said = existsSync(out) ? readFileSync(out, "utf8") : "";
    }
    rmSync(dir, { recursive: true, force: true });
    expect(said.trim()).toBe("alive");
  });
});

describe("a census window", () => {
  // What `bun bench/census.ts verify` measured on one tree: a whole window, and two with a
  // collection in them whose counts all ended positive (38.9 and 81.0 objects per request).
  const whole = { Request: 400, Response: 400, Object: 24_600, Array: 20_400, string: 16_000 };
  const collectedEarly = { Request: 40, Response: 40, Object: 3_520, Array: 2_800, string: 2_200 };
  const collectedLate = { Object: 7_280, Array: 5_840, string: 4_680 };

  test("is taken when it holds one Request per request and nothing fell", () => {
    expect(censusWindowIsClean(whole, 400)).toBe(true);
  });

  test("is measured again when a collection left every count positive but short", () => {
    expect(censusWindowIsClean(collectedEarly, 400)).toBe(false);
    expect(censusWindowIsClean(collectedLate, 400)).toBe(false);
  });

  test("is measured again when some type's count fell", () => {
    expect(censusWindowIsClean({ ...whole, Map: -200 }, 400)).toBe(false);
  });
});
