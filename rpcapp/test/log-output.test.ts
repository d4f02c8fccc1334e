/**
 * rpcapp's stdout for log lines (src/log-output.ts): lines of one event-loop turn go out together
 * when it ends, in order, whatever their size; nothing pending is lost at process.exit; a reader
 * that goes away does not take the process down.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { BatchedOutput } from "../src/log-output.ts";

const dir = mkdtempSync(join(tmpdir(), "rpcapp-log-output-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const LOG_OUTPUT = resolve(import.meta.dir, "../src/log-output.ts");
const endOfTurn = () => new Promise<void>((done) => setImmediate(done));

/** A BatchedOutput on a fresh file, and a reader of that file. */
function fileOutput(name: string) {
  const path = join(dir, name);
  const fd = openSync(path, "w");
  return { out: new BatchedOutput(fd), read: () => readFileSync(path, "utf8"), close: () => closeSync(fd) };
}

/** Runs `script` (TypeScript, with `BatchedOutput` imported) in its own bun process. */
function runChild(script: string) {
  return Bun.spawn(
    [process.execPath, "-e", `import { BatchedOutput } from ${JSON.stringify(LOG_OUTPUT)};\n${script}`],
    {
      stdout: "pipe",
      stderr: "pipe",
    },
  );
}

describe("BatchedOutput", () => {
  test("holds the lines of one turn of the event loop and writes them, in order, when it ends", async () => {
    const { out, read, close } = fileOutput("turn.log");
    try {
      out.write("first\n");
      out.write("déjà vu ✓\n");
      out.write("third\n");
      expect(read()).toBe("");
      await endOfTurn();
      expect(read()).toBe("first\ndéjà vu ✓\nthird\n");
      out.write("next turn\n");
      await endOfTurn();
      expect(read()).toBe("first\ndéjà vu ✓\nthird\nnext turn\n");
    } finally {
      close();
    }
  });

  test("keeps lines whole and in order, from a few bytes to more than it ever buffers", async () => {
    const { out, read, close } = fileOutput("sizes.log");
    try {
      const lines = ["a\n", `${"m".repeat(100_000)}\n`, "b\n", `${"é".repeat(600_000)}\n`, "c\n", "d\n"];
      for (const line of lines) out.write(line);
      await endOfTurn();
      expect(read()).toBe(lines.join(""));
    } finally {
      close();
    }
  });

  test("a line that only fits once the buffer is written still leaves at the end of the turn", async () => {
    const { out, read, close } = fileOutput("refill.log");
    try {
      // Room is reserved for 3 bytes per character: the fourth line needs the first three written out.
      const lines = ["a", "b", "c", "d"].map((c) => `${c.repeat(200_000)}\n`);
      for (const line of lines) out.write(line);
      await endOfTurn();
      expect(read()).toBe(lines.join(""));
    } finally {
      close();
    }
  });

  test("writes what is pending when the process exits", async () => {
    const child = runChild(`
      const out = new BatchedOutput(1);
      for (let i = 0; i < 5000; i++) out.write("line " + i + "\\n");
      process.exit(3);
    `);
    const [code, stdout, stderr] = await Promise.all([
      child.exited,
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
    ]);
    expect(stderr).toBe("");
    expect(code).toBe(3);
    expect(stdout).toBe(Array.from({ length: 5000 }, (_, i) => `line ${i}\n`).join(""));
  });

  test("drops its lines, and keeps the process running, once nobody reads them", async () => {
    const child = runChild(`
      const out = new BatchedOutput(1);
      const line = "x".repeat(1000) + "\\n";
      for (let turn = 0; turn < 200; turn++) {
        for (let i = 0; i < 100; i++) out.write(line);
        await new Promise((done) => setImmediate(done));
      }
      console.error("still running");
    `);
    await child.stdout.cancel();
    const [code, stderr] = await Promise.all([child.exited, new Response(child.stderr).text()]);
    expect(stderr).toBe("still running\n");
    expect(code).toBe(0);
  });
});
