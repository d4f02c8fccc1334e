/**
 * `make canary`'s judge of the gateways' verdicts (scripts/stack/canary.ts, GatewayCanaries.follow)
 * against real canary controllers behind a stand-in of the admin API: a policy ending below
 * 100 % whose every step passed is promoted, not rolled back for "no verdict"; an abort names
 * what aborted it.
 */
import { afterEach, expect, test } from "bun:test";
import { Canary } from "../../gateway/src/canary/controller.ts";
import { GatewayCanaries } from "../stack/canary.ts";

const servers: ReturnType<typeof Bun.serve>[] = [];
afterEach(() => {
  for (const s of servers.splice(0)) s.stop(true);
});

/** An admin port serving `canary` as /canary/webapp (GET, and POST /promote, /abort). */
function adminFor(canary: Canary): string {
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      const action = new URL(req.url).pathname.replace("/canary/webapp", "");
      if (action === "/promote") canary.promote();
      else if (action === "/abort" && canary.state !== "aborted") canary.abort();
      return Response.json(canary.view());
    },
  });
  servers.push(server);
  return `http://127.0.0.1:${server.port}`;
}

/** A canary of v2 driven through its steps with healthy answers on a clock of its own. */
function passedCanary(steps: number[]): Canary {
  let now = 0;
  const canary = new Canary(
    "webapp",
    { steps, minRequests: 20, minStepMs: 100, maxErrorRateIncrease: 1, maxP99Ratio: 1.2, p99SlackMs: 5 },
    () => {},
    () => now,
  );
  canary.start("v2");
  for (let i = 0; i < 5000 && canary.state === "running"; i++) {
    canary.record(canary.chooseCanary(null) ? "v2" : "v1", false, 4);
    now += 5;
  }
  return canary;
}

test("a policy ending at 20 %: every step passed on every gateway is a promotion", async () => {
  const [a, b] = [passedCanary([10, 20]), passedCanary([10, 20])];
  expect([a.state, b.state]).toEqual(["paused", "paused"]);
  const lines: string[] = [];
  const outcome = await new GatewayCanaries({ "gw-1": adminFor(a), "gw-2": adminFor(b) }, "webapp").follow(
    5_000,
    (line) => lines.push(line),
  );
  expect(outcome.verdict).toBe("promoted");
  expect(outcome.reason).toContain("the policy ends at 20%");
  expect([a.state, b.state]).toEqual(["promoted", "promoted"]);
  expect(lines.filter((l) => l.includes("PASSED"))).toHaveLength(4);
});

test("a canary aborted on a gateway by hand is reported as such, not with its last passed step's text", async () => {
  const a = passedCanary([10, 20, 100]);
  const b = passedCanary([10, 20]);
  b.abort("aborted by the admin API");
  const outcome = await new GatewayCanaries({ "gw-1": adminFor(a), "gw-2": adminFor(b) }, "webapp").follow(
    5_000,
    () => {},
  );
  expect(outcome.verdict).toBe("aborted");
  expect(outcome.reason).toBe("gw-2: aborted on the gateway (its admin API), not by an analysis");
});
