/**
 * The kill and freeze checks for the gRPC upstream: one of 3 rpcapps dies or stalls under a
 * mixed load of `POST /projects/` and `POST /verify/`. VerifyUser is marked idempotent, so
 * calls caught on the failing replica (UNAVAILABLE, or the 300 ms per-try timeout of a frozen
 * one) are retried on another replica within the route's 1 s timeout.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { stopAll } from "../../scripts/stack/testing/processes.ts";
import {
  address,
  allAvailable,
  expectKillSurvived,
  freezeAndResume,
  type Gateway,
  killAndRestart,
  removeTempFiles,
  type Replica,
  startGateway,
  startReplicaSets,
  writeRoutes,
} from "./resilience-harness.ts";

const ROUTE_TIMEOUT_MS = 1_000;
const PER_TRY_TIMEOUT_MS = 300;

let rpcapps: Replica[] = [];
let gateway: Gateway;

beforeAll(async () => {
  const replicas = await startReplicaSets();
  const webapps = replicas.webapps;
  rpcapps = replicas.rpcapps;
  const routes = `upstreams:
  webapp:
    protocol: http
    endpoints: "${webapps.map(address).join(",")}"
    healthCheck: { intervalMs: 500, timeoutMs: 250 }
  rpcapp:
    protocol: grpc
    endpoints: "${rpcapps.map(address).join(",")}"
    proto: proto/userverify.proto
    healthCheck: { intervalMs: 500, timeoutMs: 250 }
    outlierDetection: { baseEjectionMs: 1000 }
    circuitBreaker: { halfOpenAfterMs: 500, maxHalfOpenAfterMs: 2000 }
routes:
  - { name: projects, path: /projects, upstream: webapp, timeoutMs: ${ROUTE_TIMEOUT_MS} }
  - name: verify
    path: /verify
    match: exact
    upstream: rpcapp
    timeoutMs: ${ROUTE_TIMEOUT_MS}
    retry: { perTryTimeoutMs: ${PER_TRY_TIMEOUT_MS} }
    grpc: { method: userverify.UserVerify/VerifyUser, idempotent: true }
`;
  gateway = await startGateway("gateway-grpc-resilience", writeRoutes("grpc-resilience", routes));
}, 30_000);

afterAll(async () => {
  await stopAll();
  removeTempFiles();
});

describe("an rpcapp replica killed under load", () => {
  test("fails only requests in flight on it at the kill, leaves the set < 2 s after, gets traffic again < 2.5 s after it is ready", async () => {
    await allAvailable(gateway);
    const figures = await killAndRestart(gateway, "rpcapp", rpcapps[1]!);
    console.log("[kill rpcapp]", JSON.stringify(figures));
    expectKillSurvived(figures, ROUTE_TIMEOUT_MS);
  }, 30_000);
});

describe("a frozen rpcapp replica (SIGSTOP)", () => {
  test("calls caught on it are retried after the per-try timeout; it leaves the set and is readmitted after SIGCONT", async () => {
    await allAvailable(gateway);
    const figures = await freezeAndResume(gateway, "rpcapp", rpcapps[2]!);
    console.log("[freeze rpcapp]", JSON.stringify(figures));
    expect(figures.unanswered).toBe(0);
    // The route timeout bounds every answer; 500 ms of margin for a busy machine.
    expect(figures.slowestAnswerMs).toBeLessThan(ROUTE_TIMEOUT_MS + 500);
    // Tries on the frozen replica fail at PER_TRY_TIMEOUT_MS and eject it, or 2 failed health
    // checks (2 × 500 + 250 ms) take it out; the bound leaves 750 ms of margin over the latter.
    expect(figures.outAfterFreezeMs).toBeLessThan(ROUTE_TIMEOUT_MS + 1_000);
    expect(figures.timeoutsAfterOut).toBeLessThanOrEqual(Math.ceil(figures.outWindowMs / 500)); // halfOpenAfterMs
    // Resumed, the next health check (every 500 ms, 250 ms timeout) readmits it; 2250 ms of margin.
    expect(figures.readmittedAfterResumeMs).toBeLessThan(3_000);
    // Idempotent calls stuck on the frozen replica were retried elsewhere, not failed.
    expect(figures.retries.attempted).toBeGreaterThan(0);
    expect(figures.failed).toBeLessThanOrEqual(Math.ceil(figures.requests * 0.001));
  }, 30_000);
});
