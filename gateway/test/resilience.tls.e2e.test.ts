/**
 * The kill and freeze scenarios of resilience.e2e.test.ts with mutual TLS on both hops behind the
 * gateway: webapp over HTTPS and rpcapp over gRPC with TLS, each requiring the gateway's client
 * certificate. A replica that dies or freezes must cost no more than in plain text — a TLS
 * connection broken mid-handshake or mid-record is a connection failure like any other — and a
 * restarted replica is readmitted through TLS health checks.
 */
import { afterAll, beforeAll, describe, test } from "bun:test";
import { join } from "node:path";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { stopAll } from "../../scripts/stack/testing/processes.ts";
import { ensureLocalPki } from "../../scripts/tls/pki.ts";
import {
  address,
  allAvailable,
  expectKillSurvived,
  expectWebappFreezeSurvived,
  freezeAndResume,
  type Gateway,
  killAndRestart,
  RESILIENCE_TIMINGS,
  type Replica,
  removeTempFiles,
  resilienceRoutes,
  startGateway,
  startReplicaSets,
  writeRoutes,
} from "./resilience-harness.ts";

const pkiDir = mkdtempSync(join(tmpdir(), "resilience-tls-"));
let webapps: Replica[] = [];
let rpcapps: Replica[] = [];
let gateway: Gateway;

beforeAll(async () => {
  const pki = await ensureLocalPki(pkiDir);
  ({ webapps, rpcapps } = await startReplicaSets(pki));
  gateway = await startGateway(
    "gateway-resilience-tls",
    writeRoutes(
      "resilience-tls",
      resilienceRoutes(webapps.map(address).join(","), rpcapps.map(address).join(","), pki),
    ),
  );
}, 30_000);

afterAll(async () => {
  await stopAll();
  removeTempFiles();
  rmSync(pkiDir, { recursive: true, force: true });
});

describe("with mutual TLS to the replicas", () => {
  test("a webapp replica killed under load fails only the requests in flight on it, and is readmitted", async () => {
    await allAvailable(gateway);
    const figures = await killAndRestart(gateway, "webapp", webapps[1]!);
    console.log("[kill webapp, TLS]", JSON.stringify(figures));
    expectKillSurvived(figures, RESILIENCE_TIMINGS.routeTimeoutMs);
  }, 30_000);

  test("an rpcapp replica killed under load fails only the calls in flight on it, and is readmitted", async () => {
    await allAvailable(gateway);
    const figures = await killAndRestart(gateway, "rpcapp", rpcapps[1]!);
    console.log("[kill rpcapp, TLS]", JSON.stringify(figures));
    expectKillSurvived(figures, RESILIENCE_TIMINGS.routeTimeoutMs);
  }, 30_000);

  test("a frozen webapp replica never holds a client past the route timeout and is readmitted after SIGCONT", async () => {
    await allAvailable(gateway);
    const figures = await freezeAndResume(gateway, "webapp", webapps[2]!);
    console.log("[freeze webapp, TLS]", JSON.stringify(figures));
    expectWebappFreezeSurvived(figures);
  }, 30_000);
});
