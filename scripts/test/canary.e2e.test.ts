/**
 * `make canary` on the local stack, end to end: a RollingStack with its control server, canary
 * replicas of a new version started beside the stable ones, every gateway stepping the canary up
 * on its own traffic and judging it, then the promotion (the canaries take the slots) or the
 * rollback (they drain and exit), under steady load. The policy is routes.yaml's, with a short
 * step (CANARY_MIN_STEP_MS) so the run is bounded.
 *
 * 1. a good webapp v2 is promoted through every step with 0 failed requests, and the stack then
 *    runs v2 only;
 * 2. an rpcapp drill (5 % INTERNAL errors) is rolled back in its first step; the failures users
 *    saw are counted and bounded by that step's share; rpcapp stays on v1.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import type { Server } from "bun";
import { startControlServer } from "../stack/control.ts";
import { runCanary } from "../stack/canary.ts";
import { RollingStack } from "../stack/rolling.ts";
import { freePort, rollingLayout, startTestStack, type TestStack } from "../stack/testing/stack.ts";

let stack: TestStack & RollingStack;
let control: Server<undefined>;
const lines: string[] = [];

beforeAll(async () => {
  stack = (await startTestStack(
    {
      ...(await rollingLayout({ gateway: 2, webapp: 2, rpcapp: 2 })),
      version: "v1",
      // 100 canary answers per step, as routes.yaml has it: the drill's canary replicas each fail
      // one request in twenty of their own, and which gateway's requests those are is chance. With
      // 40 answers a gateway can see none of them (seen once: it passed step 1 and judged the
      // canary at 25 %); with 100, that chance is about one in a thousand per gateway.
      env: { LOG_LEVEL: "warn", CANARY_MIN_REQUESTS: "100", CANARY_MIN_STEP_MS: "1500" },
    },
    (opts) => new RollingStack(opts),
  )) as TestStack & RollingStack;
  control = startControlServer(stack, { port: await freePort() });
}, 60_000);

afterAll(async () => {
  control?.stop(true);
  await stack?.stop(5_000);
});

const gateways = () =>
  Object.fromEntries(
    stack
      .describe()
      .filter((p) => p.kind === "gateway" && p.state === "serving")
      .map((p) => [p.name, `http://127.0.0.1:${p.ports.ADMIN_PORT}`]),
  );

const run = (service: "webapp" | "rpcapp", version: string, fault?: "errors") =>
  runCanary({
    controlUrl: `http://127.0.0.1:${control.port}`,
    gatewayUrl: stack.gatewayUrl,
    gateways: gateways(),
    service,
    version,
    ...(fault ? { fault } : {}),
    rps: 300,
    timeoutMs: 90_000,
    print: (line) => {
      lines.push(line);
      console.log(`  ${line}`);
    },
  });

test("a good webapp version is promoted through every step with 0 failed requests; the stack then runs it", async () => {
  const outcome = await run("webapp", "v2");
  expect(outcome.verdict).toBe("promoted");
  for (const [, steps] of Object.entries(outcome.steps)) {
    expect(steps.map((s) => [s.weight, s.verdict])).toEqual([
      [5, "passed"],
      [25, "passed"],
      [50, "passed"],
    ]);
    for (const s of steps) expect(Math.abs(s.measuredShare - s.weight)).toBeLessThanOrEqual(3);
  }
  expect(outcome.load.failed).toBe(0);
  expect(outcome.load.serviceVersions.projects).toHaveProperty("v2");
  // The canaries took the slots; the stable replicas drained and exited.
  await stack.settled();
  const webapps = stack.describe().filter((p) => p.kind === "webapp");
  expect(webapps.map((p) => [p.version, p.state])).toEqual([
    ["v2", "serving"],
    ["v2", "serving"],
  ]);
  expect(stack.currentVersion("webapp")).toBe("v2");
  expect(lines.some((l) => l.startsWith("PROMOTE:"))).toBe(true);
}, 150_000);

test("an rpcapp drill failing 5 % of calls is rolled back within its first step; rpcapp stays on v1", async () => {
  const outcome = await run("rpcapp", "v2-bad", "errors");
  expect(outcome.verdict).toBe("aborted");
  const firstSteps = Object.values(outcome.steps).flatMap((steps) => steps.slice(0, 1));
  // Whichever gateway judged first stopped it at 5 %; the others were aborted with it.
  expect(firstSteps.some((s) => s.verdict === "failed" && s.weight === 5)).toBe(true);
  expect(Object.values(outcome.steps).every((steps) => steps.every((s) => s.weight === 5))).toBe(true);
  const failed = outcome.load.failed;
  console.log(`drill: ${failed} of ${outcome.load.sent} calls failed while the canary had 5 %`);
  expect(failed).toBeGreaterThan(0);
  expect(failed).toBeLessThanOrEqual(Math.ceil(outcome.load.sent * 0.05 * 0.05) + 5);
  await stack.settled();
  const rpcapps = stack.describe().filter((p) => p.kind === "rpcapp");
  expect(rpcapps.map((p) => p.version)).toEqual(["v1", "v1"]);
  expect(stack.canariesOf("rpcapp")).toEqual([]);
  expect(stack.currentVersion("rpcapp")).toBe("v1");
}, 150_000);
