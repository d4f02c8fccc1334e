/** An in-process rpcapp for tests: real gRPC server on a free port, logs captured as objects. */
import type { ServiceIdentity } from "../../lib/env.ts";
import type { Fault } from "../../lib/fault.ts";
import { Lifecycle } from "../../lib/lifecycle.ts";
import { createLogger } from "../../lib/log.ts";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import type { RpcTelemetry } from "../src/interceptor.ts";
import { startRpcServer, type RpcServer } from "../src/server.ts";
import { RpcappClients } from "./clients.ts";

export const TEST_IDENTITY: ServiceIdentity = { service: "rpcapp", version: "1.2.3-test", instance: "rpcapp-test-1" };

export interface InProcessRpcapp {
  rpc: RpcServer;
  lifecycle: Lifecycle;
  clients: RpcappClients;
  /** Every log line written so far, parsed. */
  logs: Record<string, unknown>[];
  close(): Promise<void>;
}

export function testLogger(logs: Record<string, unknown>[]) {
  return createLogger(TEST_IDENTITY, {
    level: "info",
    destination: { write: (line: string) => void logs.push(JSON.parse(line)) },
  });
}

export async function startInProcess(
  opts: {
    ready?: boolean;
    maxConnectionAgeMs?: number;
    maxConnectionAgeGraceMs?: number;
    logProbes?: boolean;
    telemetry?: RpcTelemetry;
    fault?: Fault;
  } = {},
): Promise<InProcessRpcapp> {
  const logs: Record<string, unknown>[] = [];
  const log = testLogger(logs);
  // `exit` is a no-op: a test drives shutdown() without ending the test runner.
  const lifecycle = new Lifecycle({ drainDelayMs: 0, shutdownTimeoutMs: 5_000, log, exit: () => {} });
  if (opts.ready ?? true) lifecycle.markReady();
  const rpc = await startRpcServer({
    host: "127.0.0.1",
    port: await freePort(),
    identity: TEST_IDENTITY,
    log,
    lifecycle,
    maxConnectionAgeMs: opts.maxConnectionAgeMs,
    maxConnectionAgeGraceMs: opts.maxConnectionAgeGraceMs,
    logProbes: opts.logProbes,
    telemetry: opts.telemetry,
    fault: opts.fault,
  });
  const clients = new RpcappClients(`127.0.0.1:${rpc.port}`);
  return {
    rpc,
    lifecycle,
    clients,
    logs,
    close: async () => {
      clients.close();
      await rpc.stop(1_000);
    },
  };
}
