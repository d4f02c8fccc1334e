/**
 * The gateway's SIGTERM sequence with both public listeners on (PORT and HTTPS_PORT): after the
 * drain both stop taking new connections at once, while a request in flight on either finishes;
 * then the process exits 0.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { connect } from "node:tls";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { stopAll, stopProcess, testTempDir, waitFor } from "../../scripts/stack/testing/processes.ts";
import { ensureLocalPki } from "../../scripts/tls/pki.ts";
import { removeTempFiles } from "./resilience-harness.ts";
import { type SpyGateway, startSpyGateway } from "./spy/spy-gateway.ts";
import { httpResponse, type SpyConnection, UpstreamSpy } from "./spy/upstream-spy.ts";

const dir = testTempDir("shutdown");
let spy: UpstreamSpy;
let gw: SpyGateway;
let httpsPort: number;
const held: SpyConnection[] = [];

beforeAll(async () => {
  const pki = await ensureLocalPki(join(dir, "pki"));
  spy = await UpstreamSpy.start();
  spy.respond = (_req, conn) => void held.push(conn);
  httpsPort = await freePort();
  gw = await startSpyGateway(
    "gateway-shutdown",
    spy,
    {
      timeoutMs: 10_000,
      extra: `tls:\n  certificates:\n    - { cert: ${pki.dir}/edge.crt, key: ${pki.dir}/edge.key }\n`,
    },
    { HTTPS_PORT: String(httpsPort), DRAIN_DELAY_MS: "200", SHUTDOWN_TIMEOUT_MS: "8000" },
  );
}, 30_000);

afterAll(async () => {
  spy?.stop();
  await stopAll();
  removeTempFiles();
});

/** Whether a new TLS handshake on the HTTPS port completes. */
function handshakes(): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port: httpsPort, rejectUnauthorized: false }, () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

test("SIGTERM: after the drain, neither listener takes a new connection while a request in flight finishes", async () => {
  expect(await handshakes()).toBe(true);
  const inFlight = fetch(`http://127.0.0.1:${gw.port}/spy/slow`);
  await waitFor("the upstream to hold the request", () => held.length === 1, { timeoutMs: 5_000, intervalMs: 5 });
  const exited = stopProcess(gw.proc, "SIGTERM");
  await Bun.sleep(700); // the 200 ms drain, then both listeners' stop
  expect(await handshakes()).toBe(false);
  const plain = await fetch(`http://127.0.0.1:${gw.port}/spy/new`).then(
    (r) => r.status,
    () => "refused",
  );
  expect(plain).toBe("refused");
  await held[0]!.write(httpResponse(200, "late but whole"));
  const answer = await inFlight;
  expect(answer.status).toBe(200);
  expect(await answer.text()).toBe("late but whole");
  expect(await exited).toBe(0);
}, 30_000);
