/**
 * scripts/bytecode-order.ts for real: it compiles the three services, runs them as a stack on
 * loopback and keeps the order file each wrote at exit. The committed `<service>/bytecode.order`
 * files must still name most of what a fresh recording does: a file gone stale costs every image
 * its layout, silently, so this fails and says to re-record (an edited function gets a new entry;
 * moving code around does not).
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { bytecodeOrderFile, SERVICES } from "../cluster/images.ts";
import { REPO_ROOT } from "../stack/testing/processes.ts";

/**
 * Share of a fresh recording's functions (its `F` entries) the committed file must name. Two
 * recordings of one tree name the same set; most other entries belong to dependencies and do not
 * move when our code does, so only functions are compared. An edited function is a new entry: this
 * tolerates a few dozen.
 */
const MIN_SHARED = 0.98;

const out = mkdtempSync(join(tmpdir(), "bytecode-order-test-"));
afterAll(() => rmSync(out, { recursive: true, force: true }));

function functionEntries(file: string): Set<string> {
  return new Set(
    readFileSync(file, "utf8")
      .split("\n")
      .filter((line) => line.startsWith("F ")),
  );
}

test(
  "records an order file per service from a real run, and the committed ones still cover it",
  async () => {
    // Past its timeout the recorder gets SIGTERM, on which it stops its services and exits.
    const proc = Bun.spawn([process.execPath, "scripts/bytecode-order.ts", "--out", out], {
      cwd: REPO_ROOT,
      stdout: "pipe",
      stderr: "pipe",
      timeout: 100_000,
    });
    const [stdout, stderr, code] = await Promise.all([
      new Response(proc.stdout).text(),
      new Response(proc.stderr).text(),
      proc.exited,
    ]);
    expect({ code, stderr: code === 0 ? "" : stderr }).toEqual({ code: 0, stderr: "" });
    // The requests went through the gateway to both services.
    expect(stdout).toContain("30 × POST http://127.0.0.1:");
    const coverage: Record<string, string> = {};
    for (const service of SERVICES) {
      const fresh = functionEntries(join(out, `${service}.order`));
      // Hundreds of functions run before a first answer; a handful would mean the recording broke.
      expect(fresh.size).toBeGreaterThan(500);
      const committed = functionEntries(join(REPO_ROOT, bytecodeOrderFile(service)));
      const shared = [...fresh].filter((e) => committed.has(e)).length / fresh.size;
      coverage[service] =
        shared >= MIN_SHARED
          ? "ok"
          : `${bytecodeOrderFile(service)} holds ${(shared * 100).toFixed(0)}%: run make bytecode-order`;
    }
    expect(coverage).toEqual(Object.fromEntries(SERVICES.map((s) => [s, "ok"])));
  },
  { timeout: 120_000 },
);
