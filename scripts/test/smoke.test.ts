/**
 * scripts/smoke.ts against a fake gateway (fake-gateway.ts) and a fake minikube (fakes.ts): how
 * it finds the gateway, that it passes when the seed requests work and every replica answers,
 * and that it fails, with a table saying why, when they do not.
 */
import { afterEach, expect, test } from "bun:test";
import type { Server } from "bun";
import { freePort } from "../stack/testing/ports.ts";
import { startFakeGateway } from "./fake-gateway.ts";
import { type Fakes, HAPPY, makeFakes, runScript } from "./fakes.ts";

let fakes: Fakes | undefined;
let gateway: Server<undefined> | undefined;
afterEach(async () => {
  fakes?.cleanup();
  await gateway?.stop(true);
});

async function fakeGateway(opts: Parameters<typeof startFakeGateway>[0]): Promise<string> {
  const started = await startFakeGateway(opts);
  gateway = started.server;
  return started.url;
}

const PASSING_ROWS = [
  /PASS {2}POST \/projects\/ creates the seed project +201 \{"id":1,"url":"Project-An awesome project"\}/,
  /PASS {2}GET \/projects\/<id> reads it back +200/,
  /PASS {2}POST \/verify\/ verifies user 121 +200 \{"message":"Verified: 121"\}/,
  /PASS {2}30 × GET \/projects reach every webapp replica +3 of 3 replicas answered: webapp-1 ×10, webapp-2 ×10, webapp-3 ×10/,
  /PASS {2}30 × POST \/verify\/ reach every rpcapp replica +3 of 3 replicas answered: rpcapp-1 ×10, rpcapp-2 ×10, rpcapp-3 ×10/,
];

test("with GATEWAY_URL, smoke runs the seed requests and the spread check there, and passes", async () => {
  const url = await fakeGateway({ replicas: 3 });
  fakes = makeFakes(HAPPY);
  const run = await runScript("smoke", fakes, { GATEWAY_URL: url });
  expect(run.stderr).toBe("");
  expect(run.exitCode).toBe(0);
  expect(run.stdout).toContain(`gateway: ${url} (from GATEWAY_URL)`);
  expect(run.stdout).toContain(`→ POST ${url}/projects/ {"title":"An awesome project"}`);
  expect(run.stdout).toContain(`→ POST ${url}/verify/ {"id":121,"token":"a$$"}`);
  for (const row of PASSING_ROWS) expect(run.stdout).toMatch(row);
  expect(fakes.calls()).toEqual([]);
});

test("without GATEWAY_URL, smoke uses make dev's gateway when it answers /healthz, without asking minikube", async () => {
  const url = await fakeGateway({ replicas: 3 });
  fakes = makeFakes(HAPPY);
  const run = await runScript("smoke", fakes, { GATEWAY_PORT: url.split(":").at(-1)! });
  expect(run.exitCode).toBe(0);
  expect(run.stdout).toContain(`gateway: ${url} (from make dev)`);
  expect(fakes.calls()).toEqual([]);
});

test("when nothing answers locally, smoke asks minikube for the gateway's URL and uses it", async () => {
  const url = await fakeGateway({ replicas: 3 });
  fakes = makeFakes(HAPPY);
  const run = await runScript("smoke", fakes, { GATEWAY_PORT: String(await freePort()), FAKE_SERVICE_URL: url });
  expect(run.exitCode).toBe(0);
  expect(fakes.calls()).toEqual(["minikube service gateway -n portico --url"]);
  expect(run.stdout).toContain(`gateway: ${url} (from minikube)`);
  for (const row of PASSING_ROWS) expect(run.stdout).toMatch(row);
});

test("when one replica answers everything, the spread checks fail and smoke exits 1", async () => {
  const url = await fakeGateway({ replicas: 1 });
  fakes = makeFakes(HAPPY);
  const run = await runScript("smoke", fakes, { GATEWAY_URL: url });
  expect(run.exitCode).toBe(1);
  expect(run.stdout).toMatch(
    /FAIL {2}30 × GET \/projects reach every webapp replica +1 of 3 replicas answered: webapp-1 ×30/,
  );
  expect(run.stdout).toMatch(
    /FAIL {2}30 × POST \/verify\/ reach every rpcapp replica +1 of 3 replicas answered: rpcapp-1 ×30/,
  );
  expect(run.stdout).toMatch(/PASS {2}POST \/verify\/ verifies user 121/);
  expect(run.stderr).toContain(`2 of 5 checks failed against ${url}`);
});

test("SMOKE_REPLICAS sets how many replicas must answer", async () => {
  const url = await fakeGateway({ replicas: 2 });
  fakes = makeFakes(HAPPY);
  const run = await runScript("smoke", fakes, { GATEWAY_URL: url, SMOKE_REPLICAS: "2", SMOKE_REQUESTS: "6" });
  expect(run.exitCode).toBe(0);
  expect(run.stdout).toMatch(
    /PASS {2}6 × GET \/projects reach every webapp replica +2 of 2 replicas answered: webapp-1 ×3, webapp-2 ×3/,
  );
});

test("a wrong seed answer fails its row with what was expected and what came", async () => {
  const url = await fakeGateway({ replicas: 3, verifyMessage: "Verified: 0" });
  fakes = makeFakes(HAPPY);
  const run = await runScript("smoke", fakes, { GATEWAY_URL: url });
  expect(run.exitCode).toBe(1);
  expect(run.stdout).toContain("FAIL  POST /verify/ verifies user 121");
  expect(run.stdout).toContain('expected 200 {"message":"Verified: 121"}, got 200 {"message":"Verified: 0"}');
});

test("a gateway that refuses connections fails every check instead of crashing", async () => {
  fakes = makeFakes(HAPPY);
  const run = await runScript("smoke", fakes, { GATEWAY_URL: `http://127.0.0.1:${await freePort()}` });
  expect(run.exitCode).toBe(1);
  expect(run.stdout.match(/^FAIL/gm)?.length).toBe(5);
  expect(run.stderr).toContain("5 of 5 checks failed");
});

test("with no gateway anywhere and no minikube, smoke exits 2 saying how to start one", async () => {
  const { minikube: _dropped, ...rest } = HAPPY;
  fakes = makeFakes(rest);
  const run = await runScript("smoke", fakes, { GATEWAY_PORT: String(await freePort()) });
  expect(run.exitCode).toBe(2);
  expect(run.stderr).toContain("no gateway found");
  expect(run.stderr).toContain("make dev");
  expect(run.stderr).toContain("make up");
});
