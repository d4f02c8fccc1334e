/**
 * The local stack on free ports, for end-to-end tests and benchmarks: same processes and wiring
 * as `make dev`, quiet unless TEST_VERBOSE is set, output kept per process for assertions.
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freeBlock, freePort } from "./ports.ts";

export { freeBlock, freePort };
import { Stack, type StackOptions, stackOptionsFromEnv } from "../stack.ts";

export interface TestStack extends Stack {
  /** Output lines by process name. */
  output: Map<string, string[]>;
}

/** `create` builds the stack from its options (scripts/stack/rolling.ts passes a RollingStack). */
export async function startTestStack(
  overrides: Partial<StackOptions> = {},
  create: (opts: StackOptions) => Stack = (opts) => new Stack(opts),
): Promise<TestStack> {
  const output = new Map<string, string[]>();
  const defaults = stackOptionsFromEnv({});
  const replicas = Math.max(
    overrides.gatewayReplicas ?? 3,
    overrides.webappReplicas ?? 3,
    overrides.rpcappReplicas ?? 3,
  );
  const stack = create({
    ...defaults,
    gatewayPort: await freePort(),
    adminBasePort: await freeBlock(replicas),
    webappBasePort: await freeBlock(replicas),
    rpcappBasePort: await freeBlock(replicas),
    rpcappHttpBasePort: await freeBlock(replicas),
    webappMetricsBasePort: await freeBlock(replicas),
    dbPath: join(mkdtempSync(join(tmpdir(), "portico-test-")), "webapp.sqlite"),
    ...overrides,
    env: { LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "info", ...overrides.env },
    onLine(name, line) {
      let lines = output.get(name);
      if (!lines) output.set(name, (lines = []));
      lines.push(line);
      if (process.env.TEST_VERBOSE) console.error(`[${name}] ${line}`);
      overrides.onLine?.(name, line);
    },
  }) as TestStack;
  stack.output = output;
  try {
    await stack.start();
  } catch (err) {
    const tail = [...output].map(([name, lines]) => `--- ${name}\n${lines.slice(-15).join("\n")}`).join("\n");
    await stack.stop(2000);
    throw new Error(`${(err as Error).message}\n${tail}`);
  }
  return stack;
}
