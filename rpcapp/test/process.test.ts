/** rpcapp as a real process (`bun rpcapp/src/main.ts`): an independent client, probes, SIGTERM. */
import { afterAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { resolve } from "node:path";
import { freePorts } from "../../scripts/stack/testing/ports.ts";
import {
  spawnProcess,
  spawnService,
  stopAll,
  waitFor,
  waitForHttp,
  type Spawned,
} from "../../scripts/stack/testing/processes.ts";
import { RpcappClients } from "./clients.ts";
import { pythonWithGrpc } from "./python.ts";

afterAll(stopAll);

async function startRpcapp(
  env: Record<string, string> = {},
): Promise<{ proc: Spawned; grpcPort: number; httpPort: number }> {
  const [grpcPort, httpPort] = (await freePorts(2)) as [number, number];
  const proc = spawnService("rpcapp", {
    HOST: "127.0.0.1",
    PORT: String(grpcPort),
    METRICS_PORT: String(httpPort),
    INSTANCE_ID: "rpcapp-proc-1",
    SERVICE_VERSION: "9.9.9",
    ...env,
  });
  await waitForHttp(`http://127.0.0.1:${httpPort}/readyz`, proc);
  return { proc, grpcPort, httpPort };
}

const python = pythonWithGrpc();
const isCI = process.env.CI === "true";

describe("rpcapp process", () => {
  test.skipIf(!python && !isCI)(
    "answers an independent python grpcio client that hand-encodes the protobuf wire format",
    async () => {
      if (!python) throw new Error("python3 with `import grpc` is required under CI: apt-get install python3-grpcio");
      const { grpcPort } = await startRpcapp();
      const client = Bun.spawn([python, resolve(import.meta.dir, "python_client.py"), `127.0.0.1:${grpcPort}`], {
        stdout: "pipe",
        stderr: "pipe",
      });
      const timer = setTimeout(() => client.kill(), 20_000);
      const [code, out, err] = await Promise.all([
        client.exited,
        new Response(client.stdout).text(),
        new Response(client.stderr).text(),
      ]);
      clearTimeout(timer);
      expect(err).toBe("");
      expect(code).toBe(0);
      const seen = JSON.parse(out);
      expect(seen.verify).toEqual({
        message: "Verified: 121",
        "x-served-by": "rpcapp-proc-1",
        "x-service-version": "9.9.9",
        "x-request-id": "py-req-1",
      });
      expect(seen.invalid.map((r: { code: string }) => r.code)).toEqual([
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
        "INVALID_ARGUMENT",
      ]);
      expect(seen.invalid[1].details).toContain("id must be a positive integer (got -5)");
      expect(seen.invalid[2].details).toContain("token must not be empty");
      expect(seen.health).toEqual({
        "": "SERVING",
        "userverify.UserVerify": "SERVING",
        "no.such.Service": "NOT_FOUND",
      });
    },
  );

  test.each([
    ["unset", {}, false],
    ["true", { LOG_PROBES: "true" }, true],
  ])(
    "with LOG_PROBES %s, health checks are counted in /metrics and logged only when asked",
    async (_name, env, logged) => {
      const { proc, grpcPort, httpPort } = await startRpcapp(env);
      const clients = new RpcappClients(`127.0.0.1:${grpcPort}`);
      try {
        for (let i = 0; i < 3; i++) expect((await clients.check("")).reply).toEqual({ status: "SERVING" });
        const metadata = new grpc.Metadata();
        metadata.set("x-request-id", "after-the-checks");
        await clients.verifyUser({ id: 1, token: "t" }, metadata);
        // Lines leave in order: once this call's line is out, a health check's would be too.
        await waitFor("the VerifyUser access line", () => proc.lines.some((l) => l.includes('"after-the-checks"')), {
          proc,
        });
        const checkLines = proc.lines.filter((l) => l.includes('"method":"grpc.health.v1.Health/Check"'));
        expect(checkLines).toHaveLength(logged ? 3 : 0);
        const metrics = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
        expect(metrics).toContain(
          'grpc_server_handled_total{grpc_method="grpc.health.v1.Health/Check",grpc_code="OK",service="rpcapp"} 3',
        );
      } finally {
        clients.close();
      }
    },
  );

  test("serves /version on METRICS_PORT with the identity from the environment", async () => {
    const { httpPort } = await startRpcapp();
    const res = await fetch(`http://127.0.0.1:${httpPort}/version`);
    expect(await res.json()).toEqual({ service: "rpcapp", version: "9.9.9", instance: "rpcapp-proc-1" });
  });

  test("on SIGTERM turns health NOT_SERVING during the drain, then exits 0 within SHUTDOWN_TIMEOUT_MS", async () => {
    // A drain long enough that the checks below still fall inside it on a busy machine.
    const { proc, grpcPort, httpPort } = await startRpcapp({ DRAIN_DELAY_MS: "1500", SHUTDOWN_TIMEOUT_MS: "5000" });
    const clients = new RpcappClients(`127.0.0.1:${grpcPort}`);
    try {
      const watch = clients.watch("");
      await waitFor("the initial Watch status", () => watch.statuses.length > 0, { proc });
      expect(watch.statuses).toEqual(["SERVING"]);

      const signalledAt = performance.now();
      proc.proc.kill("SIGTERM");
      await waitFor("NOT_SERVING on the Watch stream", () => watch.statuses.length > 1, { proc });
      expect(watch.statuses).toEqual(["SERVING", "NOT_SERVING"]);
      // Still draining: the gRPC port answers, and says it is not serving; /readyz agrees.
      expect((await clients.check("")).reply).toEqual({ status: "NOT_SERVING" });
      expect((await fetch(`http://127.0.0.1:${httpPort}/readyz`)).status).toBe(503);
      expect(proc.proc.exitCode).toBeNull();

      expect(await proc.exited).toBe(0);
      const tookMs = performance.now() - signalledAt;
      // Against the configured DRAIN_DELAY_MS (1500): the exit cannot come before the drain ends.
      // And SHUTDOWN_TIMEOUT_MS (5000) is the upper bound the lifecycle itself enforces, by exit 1
      // (the exit code 0 above already says it was not reached); the margin is 3.5 s.
      expect(tookMs).toBeGreaterThanOrEqual(1500);
      expect(tookMs).toBeLessThan(5000);
      expect(proc.lines.some((l) => l.includes('"msg":"stopped"'))).toBe(true);
    } finally {
      clients.close();
    }
  });

  test("refuses to start on an invalid env value, naming the variable in one line", async () => {
    const proc = spawnProcess("rpcapp-bad-env", [process.execPath, "rpcapp/src/main.ts"], {
      PORT: "0",
      METRICS_PORT: "0",
      GRPC_MAX_CONNECTION_AGE_MS: "-1",
    });
    expect(await proc.exited).toBe(1);
    await waitFor("the error line", () => proc.lines.some((l) => l.includes("GRPC_MAX_CONNECTION_AGE_MS")));
    const line = JSON.parse(proc.lines.find((l) => l.includes("GRPC_MAX_CONNECTION_AGE_MS"))!);
    // The message is the setting's own, as webapp and the gateway write it: no stack trace.
    expect(line.level).toBe("fatal");
    expect(line.msg).toStartWith('GRPC_MAX_CONNECTION_AGE_MS="-1"');
    expect(line.err).toBeUndefined();
  });
});
