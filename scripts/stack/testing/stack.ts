/**
 * The local stack on free ports, for end-to-end tests and benchmarks: same processes and wiring
 * as `make dev`, quiet unless TEST_VERBOSE is set, output kept per process for assertions.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freeBlock, freePort } from "./ports.ts";
import { testTempDir } from "./processes.ts";

export { freeBlock, freePort };
import type { Server } from "bun";
import { startControlServer } from "../control.ts";
import { RollingStack } from "../rolling.ts";
import { Stack, type StackOptions, stackOptionsFromEnv } from "../stack.ts";

export interface TestStack extends Stack {
  /** Output lines by process name. */
  output: Map<string, string[]>;
}

/**
 * The environment of a one-replica `make dev` (scripts/dev.ts) on free ports, its SQLite file in
 * a testTempDir() (stopAll() removes it): for tests that run the command itself. `overrides` wins
 * (a port a test squats on).
 */
export async function oneReplicaDevEnv(overrides: Record<string, string> = {}): Promise<Record<string, string>> {
  return {
    GATEWAY_PORT: String(await freePort()),
    ADMIN_BASE_PORT: String(await freeBlock(2)),
    WEBAPP_BASE_PORT: String(await freeBlock(2)),
    WEBAPP_METRICS_BASE_PORT: String(await freeBlock(2)),
    RPCAPP_BASE_PORT: String(await freeBlock(2)),
    RPCAPP_HTTP_BASE_PORT: String(await freeBlock(2)),
    DEV_CONTROL_PORT: String(await freePort()),
    GATEWAY_REPLICAS: "1",
    WEBAPP_REPLICAS: "1",
    RPCAPP_REPLICAS: "1",
    DB_PATH: join(testTempDir("dev"), "webapp.sqlite"),
    DEV_TCP_MIGRATE_REQ: "off",
    NO_COLOR: "1",
    ...overrides,
  };
}

/**
 * Replica counts and base ports for a test stack that rolls out or runs canaries: each service's
 * block of ports holds its replicas and as many spares (a rollout's replacements, canary replicas).
 */
export async function rollingLayout(replicas: { gateway: number; webapp: number; rpcapp: number }) {
  return {
    gatewayReplicas: replicas.gateway,
    webappReplicas: replicas.webapp,
    rpcappReplicas: replicas.rpcapp,
    adminBasePort: await freeBlock(2 * replicas.gateway),
    webappBasePort: await freeBlock(2 * replicas.webapp),
    rpcappBasePort: await freeBlock(2 * replicas.rpcapp),
    rpcappHttpBasePort: await freeBlock(2 * replicas.rpcapp),
  };
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
  // The webapps' SQLite file, in a folder of its own that stop() removes (a test stack's data is
  // not looked at afterwards; left behind, one folder per stack piles up in /tmp).
  const dataDir = overrides.dbPath === undefined ? mkdtempSync(join(tmpdir(), "portico-test-")) : undefined;
  const stack = create({
    ...defaults,
    gatewayPort: await freePort(),
    adminBasePort: await freeBlock(replicas),
    webappBasePort: await freeBlock(replicas),
    rpcappBasePort: await freeBlock(replicas),
    rpcappHttpBasePort: await freeBlock(replicas),
    webappMetricsBasePort: await freeBlock(replicas),
    ...(dataDir ? { dbPath: join(dataDir, "webapp.sqlite") } : {}),
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
  if (dataDir) {
    const stop = stack.stop.bind(stack);
    stack.stop = async (graceMs?: number) => {
      try {
        await stop(graceMs);
      } finally {
        rmSync(dataDir, { recursive: true, force: true });
      }
    };
  }
  try {
    await stack.start();
  } catch (err) {
    const tail = [...output].map(([name, lines]) => `--- ${name}\n${lines.slice(-15).join("\n")}`).join("\n");
    await stack.stop(2000);
    throw new Error(`${(err as Error).message}\n${tail}`);
  }
  return stack;
}

/**
 * One replica of each service at version v1, rolled out and canaried through `make dev`'s control
 * port (scripts/stack/control.ts) at `url`; a short drain (no load in these tests). Stop with
 * `control.stop(true)` and `stack.stop()`.
 */
export async function startControlledStack(): Promise<{
  stack: TestStack & RollingStack;
  control: Server<undefined>;
  url: string;
}> {
  const stack = (await startTestStack(
    { ...(await rollingLayout({ gateway: 1, webapp: 1, rpcapp: 1 })), version: "v1", env: { LOG_LEVEL: "warn" } },
    (opts) => new RollingStack(opts, { drainDelayMs: 300, shutdownTimeoutMs: 5_000 }),
  )) as TestStack & RollingStack;
  const control = startControlServer(stack, { port: await freePort() });
  return { stack, control, url: `http://127.0.0.1:${control.port}` };
}
