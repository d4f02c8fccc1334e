/**
 * lib/log.ts with `flushIntervalMs`, in a child process whose stdout is read here: the buffered
 * sibling's lines wait for the interval (or 4 KiB), the logger's own go out at once and flush
 * what was buffered before them (order kept), and everything buffered is written at exit.
 */
import { describe, expect, test } from "bun:test";
import { resolve } from "node:path";
import { EnvError } from "./env.ts";
import { logLevelFromEnv } from "./log.ts";

const LOG_MODULE = resolve(import.meta.dir, "log.ts");

/** Runs `body` (with `log` and `access` in scope) in a child process; resolves its stdout lines. */
async function run(body: string): Promise<{ line: string }[]> {
  const script = `import { bufferedLogger, createLogger } from ${JSON.stringify(LOG_MODULE)};
const log = createLogger({ service: "t", version: "v", instance: "i" }, { level: "info", flushIntervalMs: 300 });
const access = bufferedLogger(log);
${body}`;
  const proc = Bun.spawn([process.execPath, "-e", script], { stdout: "pipe", stderr: "inherit" });
  const lines: { line: string }[] = [];
  const decoder = new TextDecoder();
  let rest = "";
  const reader = proc.stdout.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    rest += decoder.decode(value, { stream: true });
    const parts = rest.split("\n");
    rest = parts.pop()!;
    for (const line of parts) lines.push({ line });
  }
  expect(await proc.exited).toBe(0);
  return lines;
}

const msgs = (lines: { line: string }[]) => lines.map((l) => (JSON.parse(l.line) as { msg: string }).msg);

describe("a logger with a flush interval", () => {
  test("buffered lines wait; the logger's own line flushes them, in order; exit writes the rest", async () => {
    const lines = await run(`
access.info("a1"); access.info("a2");
await Bun.sleep(50);
log.warn("now");
access.info("a3");
await Bun.sleep(600);
access.info("a4");
process.exit(0);`);
    expect(msgs(lines)).toEqual(["a1", "a2", "now", "a3", "a4"]);
  });

  test("without a logger line, buffered lines still go out within the interval", async () => {
    const lines = await run(`
access.info("a1");
await Bun.sleep(1500);
console.log(JSON.stringify({ msg: "marker" }));`);
    expect(msgs(lines)).toEqual(["a1", "marker"]);
  });
});

describe("LOG_LEVEL", () => {
  test("one of pino's levels; unset or empty is info; anything else an EnvError naming it", () => {
    expect(logLevelFromEnv({})).toBe("info");
    expect(logLevelFromEnv({ LOG_LEVEL: "" })).toBe("info");
    expect(logLevelFromEnv({ LOG_LEVEL: "warn" })).toBe("warn");
    expect(() => logLevelFromEnv({ LOG_LEVEL: "verbose" })).toThrow(EnvError);
    expect(() => logLevelFromEnv({ LOG_LEVEL: "WARN" })).toThrow(/LOG_LEVEL="WARN" must be one of: fatal, error/);
  });

  test.each(["webapp", "rpcapp", "gateway"])(
    "%s stops at start with one plain line naming LOG_LEVEL, exit 1",
    async (service) => {
      const proc = Bun.spawn([process.execPath, resolve(import.meta.dir, `../${service}/src/main.ts`)], {
        env: { ...process.env, LOG_LEVEL: "verbose", PORT: "0", METRICS_PORT: "0", ADMIN_PORT: "0" },
        stdout: "pipe",
        stderr: "pipe",
      });
      const [code, stderr] = await Promise.all([proc.exited, new Response(proc.stderr).text()]);
      expect(code).toBe(1);
      expect(stderr.trim()).toBe(
        `${service}: LOG_LEVEL="verbose" must be one of: fatal, error, warn, info, debug, trace, silent`,
      );
    },
  );
});
