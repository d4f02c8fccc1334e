/** Active health checks: HTTP GET /readyz and gRPC grpc.health.v1.Health/Check, against stub servers. */
import { afterAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { loadGrpcObject } from "../../lib/grpc-proto.ts";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { waitFor } from "../../scripts/stack/testing/processes.ts";
import { dispatch } from "../src/upstream/dispatch.ts";
import type { Upstream, UpstreamEvent } from "../src/upstream/upstream.ts";
import { context, deferred, outcomes, testConfig, testUpstream } from "./upstream-harness.ts";

const cleanup: (() => void)[] = [];
afterAll(() =>
  cleanup.forEach((f) => {
    f();
  }),
);

const CHECKS = "{ intervalMs: 50, timeoutMs: 40, unhealthyThreshold: 2, healthyThreshold: 1 }";

function watch(upstream: Upstream): string[] {
  const seen: string[] = [];
  upstream.onEvent((e: UpstreamEvent) => {
    if (e.type === "health") seen.push(`health ${e.health}`);
    if (e.type === "readmitted") seen.push(`readmitted ${e.reason}`);
  });
  return seen;
}

describe("HTTP health checks (GET /readyz)", () => {
  test("two failed checks take an endpoint out; one passing check brings it back with its breaker closed and ejection ended", async () => {
    let ready = true;
    const stub = Bun.serve({
      hostname: "127.0.0.1",
      port: await freePort(),
      fetch: (req) =>
        new URL(req.url).pathname === "/readyz" && ready ? new Response("ok") : new Response("no", { status: 503 }),
    });
    cleanup.push(() => stub.stop(true));
    const config = testConfig({
      endpoints: `127.0.0.1:${stub.port}`,
      healthCheck: CHECKS,
      upstream:
        "circuitBreaker: { consecutiveFailures: 2 }, outlierDetection: { consecutiveFailures: 2, baseEjectionMs: 30000 }",
    });
    const upstream = testUpstream(config);
    cleanup.push(() => upstream.close());
    const events = watch(upstream);
    const endpoint = upstream.endpoints[0]!;
    await waitFor("healthy", () => endpoint.health === "healthy", { timeoutMs: 2_000, intervalMs: 5 });

    ready = false;
    // Requests fail meanwhile: the breaker opens and the endpoint is ejected for 30 s.
    for (let i = 0; i < 2; i++)
      await dispatch(upstream, config.routes[0]!, context(), false, async () => outcomes.status(503));
    expect(endpoint.ejected).toBe(true);
    expect(endpoint.breakerState).toBe("open");
    await waitFor("unhealthy", () => endpoint.health === "unhealthy", { timeoutMs: 2_000, intervalMs: 5 });
    expect(endpoint.available).toBe(false);

    ready = true;
    await waitFor("healthy again", () => endpoint.health === "healthy", { timeoutMs: 2_000, intervalMs: 5 });
    expect(endpoint.available).toBe(true);
    expect(endpoint.ejected).toBe(false);
    expect(endpoint.breakerState).toBe("closed");
    expect(events).toEqual(["health healthy", "health unhealthy", "health healthy", "readmitted health-check"]);
  });

  test("a check not answered within timeoutMs fails", async () => {
    // The stub answers nothing until the test ends: only the checks' own timeout can fail them.
    const held = deferred<void>();
    let received = 0;
    const stub = Bun.serve({
      hostname: "127.0.0.1",
      port: await freePort(),
      fetch: async () => {
        received++;
        await held.promise;
        return new Response("late");
      },
    });
    cleanup.push(() => {
      held.resolve();
      stub.stop(true);
    });
    const upstream = testUpstream(testConfig({ endpoints: `127.0.0.1:${stub.port}`, healthCheck: CHECKS }));
    cleanup.push(() => upstream.close());
    await waitFor("unhealthy", () => upstream.endpoints[0]!.health === "unhealthy", {
      timeoutMs: 2_000,
      intervalMs: 5,
    });
    expect(received).toBeGreaterThanOrEqual(2); // unhealthyThreshold: 2 checks, both unanswered
  });
  test("an answer over 64 KiB fails the check, with a declared length or in chunks", async () => {
    const big = new Uint8Array(1024 * 1024);
    let mode: "small" | "declared" | "chunked" = "small";
    const stub = Bun.serve({
      hostname: "127.0.0.1",
      port: await freePort(),
      fetch: () => {
        if (mode === "small") return new Response("ok");
        if (mode === "declared") return new Response(big);
        return new Response(
          new ReadableStream({
            pull(controller) {
              controller.enqueue(big.subarray(0, 16 * 1024)); // forever, 16 KiB at a time
            },
          }),
        );
      },
    });
    cleanup.push(() => stub.stop(true));
    const upstream = testUpstream(testConfig({ endpoints: `127.0.0.1:${stub.port}`, healthCheck: CHECKS }));
    cleanup.push(() => upstream.close());
    const endpoint = upstream.endpoints[0]!;
    await waitFor("healthy", () => endpoint.health === "healthy", { timeoutMs: 2_000, intervalMs: 5 });
    for (const next of ["declared", "small", "chunked"] as const) {
      mode = next;
      const want = next === "small" ? "healthy" : "unhealthy";
      await waitFor(`${want} (${next})`, () => endpoint.health === want, { timeoutMs: 3_000, intervalMs: 5 });
    }
  });
});

describe("gRPC health checks (grpc.health.v1.Health/Check)", () => {
  test("SERVING passes, NOT_SERVING fails, on the endpoint's own connection", async () => {
    let status = "SERVING";
    const pkg = loadGrpcObject(["grpc/health/v1/health.proto"]) as unknown as {
      grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } };
    };
    const server = new grpc.Server();
    server.addService(pkg.grpc.health.v1.Health.service, {
      Check: (_call: unknown, callback: grpc.sendUnaryData<{ status: string }>) => callback(null, { status }),
      Watch: () => {},
    });
    const port = await new Promise<number>((resolve, reject) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) =>
        err ? reject(err) : resolve(p),
      ),
    );
    cleanup.push(() => server.forceShutdown());
    const upstream = testUpstream(
      testConfig({ protocol: "grpc", endpoints: `127.0.0.1:${port}`, healthCheck: CHECKS }),
    );
    cleanup.push(() => upstream.close());
    const endpoint = upstream.endpoints[0]!;
    await waitFor("healthy", () => endpoint.health === "healthy", { timeoutMs: 3_000, intervalMs: 5 });
    status = "NOT_SERVING";
    await waitFor("unhealthy", () => endpoint.health === "unhealthy", { timeoutMs: 2_000, intervalMs: 5 });
    status = "SERVING";
    await waitFor("healthy again", () => endpoint.health === "healthy", { timeoutMs: 2_000, intervalMs: 5 });
  });
});
