/**
 * The canary controller on a clock the test moves: the steps and their judgement, the exact
 * split, sticky keys, and the admin API's state rules. The processes-on-loopback proof is
 * canary.e2e.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { Canary, type CanaryEvent, CanaryError, type CanaryPolicyView } from "../src/canary/controller.ts";
import { LatencyWindow } from "../src/canary/latency.ts";
import pino from "pino";
import { Lifecycle } from "../../lib/lifecycle.ts";
import { Gateway } from "../src/server.ts";
import { testConfig, testUpstream } from "./upstream-harness.ts";

const POLICY: CanaryPolicyView = {
  steps: [5, 25, 50, 100],
  minRequests: 50,
  minStepMs: 1000,
  maxErrorRateIncrease: 1,
  maxP99Ratio: 1.2,
  p99SlackMs: 5,
};

function setup(policy: Partial<CanaryPolicyView> = {}) {
  let now = 1_000_000;
  const events: CanaryEvent[] = [];
  const canary = new Canary(
    "webapp",
    { ...POLICY, ...policy },
    (e) => events.push(e),
    () => now,
  );
  return {
    canary,
    events,
    advance: (ms: number) => {
      now += ms;
    },
  };
}

/**
 * `n` requests through the split, answered as `answer` says per side; the clock moves `msEach`
 * per request. Returns how many went to the canary.
 */
function drive(
  s: ReturnType<typeof setup>,
  n: number,
  answer: (toCanary: boolean, i: number) => { failed: boolean; ms: number },
  msEach = 10,
): number {
  let toCanary = 0;
  for (let i = 0; i < n; i++) {
    const canary = s.canary.chooseCanary(null);
    if (canary) toCanary++;
    const { failed, ms } = answer(canary, i);
    s.canary.record(canary ? s.canary.version : "v1", failed, ms);
    s.advance(msEach);
  }
  return toCanary;
}

const healthy = () => ({ failed: false, ms: 4 });

describe("the canary controller", () => {
  test("a good version passes every step and is promoted; each step's share is its weight", () => {
    const s = setup();
    s.canary.start("v2");
    expect(s.canary.weight).toBe(5);
    // 5 %: 50 canary answers take 1000 requests (10 s at 10 ms each, past minStepMs); 25 %: 200; 50 %: 100.
    drive(s, 1000, healthy);
    expect(s.canary.weight).toBe(25);
    drive(s, 200, healthy);
    expect(s.canary.weight).toBe(50);
    drive(s, 100, healthy);
    expect(s.canary.state).toBe("promoted");
    expect(s.canary.weight).toBe(100);
    expect(s.canary.history.map((h) => [h.weight, h.verdict, h.measuredShare])).toEqual([
      [5, "passed", 5],
      [25, "passed", 25],
      [50, "passed", 50],
    ]);
    expect(s.events.map((e) => e.type)).toEqual(["started", "step", "step", "step", "promoted"]);
    // Promoted: every request goes to the canary.
    expect(drive(s, 20, healthy)).toBe(20);
  });

  test("a step is not judged before minStepMs, however many answers it has", () => {
    const s = setup({ minStepMs: 60_000 });
    s.canary.start("v2");
    drive(s, 2000, healthy, 1);
    expect(s.canary.weight).toBe(5);
    s.advance(60_000);
    drive(s, 20, healthy, 1);
    expect(s.canary.weight).toBe(25);
  });

  test("5 % of answers failing on the canary aborts it within its first step, before minStepMs", () => {
    const s = setup({ minStepMs: 3_600_000 });
    s.canary.start("v2");
    let canaryAnswers = 0;
    drive(s, 2000, (toCanary) => {
      if (!toCanary) return healthy();
      canaryAnswers++;
      return { failed: canaryAnswers % 20 === 0, ms: 4 };
    });
    expect(s.canary.state).toBe("aborted");
    expect(s.canary.weight).toBe(0);
    const [report] = s.canary.history;
    expect(report).toMatchObject({ step: 1, weight: 5, verdict: "failed" });
    expect(report!.reason).toContain("error rate");
    const aborted = s.events.find((e) => e.type === "aborted");
    expect(aborted).toMatchObject({ version: "v2" });
    // After the abort nothing more goes to the canary.
    expect(drive(s, 100, healthy)).toBe(0);
  });

  test("the stable version's own errors raise the bar: a canary no worse than stable passes", () => {
    const s = setup();
    s.canary.start("v2");
    drive(s, 1000, (_toCanary, i) => ({ failed: i % 25 === 0, ms: 4 }));
    expect(s.canary.state).toBe("running");
    expect(s.canary.weight).toBe(25);
  });

  test("50 ms more on the canary fails the latency check at the end of its first step", () => {
    const s = setup();
    s.canary.start("v2");
    drive(s, 1000, (toCanary) => ({ failed: false, ms: toCanary ? 54 : 4 }));
    expect(s.canary.state).toBe("aborted");
    expect(s.canary.history[0]!.reason).toMatch(/^p9\d(\.\d)? /);
  });

  test("one slow answer among the canary's few (its first, cold connection) does not fail it; every answer slow does", () => {
    const s = setup({ minRequests: 40 });
    s.canary.start("v2");
    let canaryAnswers = 0;
    drive(s, 800, (toCanary) => ({ failed: false, ms: toCanary && ++canaryAnswers === 1 ? 300 : 4 }));
    expect(s.canary.history[0]).toMatchObject({ verdict: "passed" });
    // p95 at 40 answers: two of them above it, so one outlier does not move it.
    expect(s.canary.history[0]!.reason).toContain("p95 ");
  });

  test("a latency within the slack (p99 + 5 ms) passes even at low latencies", () => {
    const s = setup();
    s.canary.start("v2");
    drive(s, 1000, (toCanary) => ({ failed: false, ms: toCanary ? 7 : 4 }));
    expect(s.canary.weight).toBe(25);
  });

  test("steps that end below 100 % stay at the last weight, paused, until promoted by hand", () => {
    const s = setup({ steps: [10, 20] });
    s.canary.start("v2");
    drive(s, 500, healthy);
    drive(s, 250, healthy);
    expect(s.canary.state).toBe("paused");
    expect(s.canary.weight).toBe(20);
    s.canary.promote();
    expect(s.canary.weight).toBe(100);
  });

  test("paused, the weight holds and the judging goes on: at the last step, or at a weight set by hand", () => {
    const last = setup({ steps: [10, 20] });
    last.canary.start("v2");
    drive(last, 1500, healthy);
    expect(last.canary.state).toBe("paused");
    expect(last.canary.history).toHaveLength(2);
    // Windows that pass start the next one (no new report); one that fails aborts it.
    drive(last, 1500, (toCanary) => ({ failed: toCanary, ms: 4 }));
    expect(last.canary.state).toBe("aborted");
    expect(last.canary.history.at(-1)).toMatchObject({ verdict: "failed", weight: 20 });

    const byHand = setup({ minStepMs: 3_600_000 });
    byHand.canary.start("v2");
    byHand.canary.setWeight(50);
    drive(byHand, 2000, (toCanary, i) => ({ failed: toCanary && i % 5 === 0, ms: 4 }));
    expect(byHand.canary.state).toBe("aborted");
    expect(byHand.canary.view().current).toBeNull();
  });

  test("a canary failing every request is stopped by its first errors: ejected, it would never reach minRequests", () => {
    const s = setup({ minRequests: 100, minStepMs: 3_600_000 });
    s.canary.start("v2");
    // The canary side answers three times (all failures), then outlier detection takes it out.
    let canaryAnswers = 0;
    for (let i = 0; i < 2000 && s.canary.state === "running"; i++) {
      if (s.canary.chooseCanary(null) && canaryAnswers < 3) {
        canaryAnswers++;
        s.canary.record("v2", true, 4);
      } else s.canary.record("v1", false, 4);
      s.advance(10);
    }
    expect(s.canary.state).toBe("aborted");
    // 100 answers at the stable side's 0 % + 1 point hold one error: the second ends it.
    expect(s.canary.history[0]).toMatchObject({ verdict: "failed", canary: { requests: 2, errors: 2 } });
  });

  test("a canary with a few answers at the step's end is compared at the median at least, not at its fastest", () => {
    const s = setup({ minRequests: 2, steps: [5, 100] });
    s.canary.start("v2");
    // 40 requests over 1.2 s: the step is judged at its end on the canary's 2 answers.
    drive(s, 40, (toCanary) => ({ failed: false, ms: toCanary ? 2_000 : 5 }), 30);
    expect(s.canary.state).toBe("aborted");
    expect(s.canary.history[0]).toMatchObject({ canary: { requests: 2 } });
    expect(s.canary.history[0]!.reason).toStartWith("p50 ");
  });

  test("a new replica's cold first answers count for errors, not latency: a good release's slow start does not fail it", () => {
    const judged = (markCold: boolean) => {
      const s = setup({ minRequests: 100 });
      s.canary.start("v2");
      let canaryAnswers = 0;
      for (let i = 0; i < 4000 && s.canary.history.length === 0; i++) {
        if (s.canary.chooseCanary(null)) {
          // Two new replicas, three slow answers each before their code is hot.
          const cold = ++canaryAnswers <= 6;
          s.canary.record("v2", false, cold ? 40 : 4, markCold && cold);
        } else s.canary.record("v1", false, 4);
        s.advance(10);
      }
      return s.canary.history[0]!;
    };
    expect(judged(true)).toMatchObject({ verdict: "passed", canary: { requests: 100 } });
    expect(judged(false)).toMatchObject({ verdict: "failed" });
  });

  test("reset forgets the last canary's history", () => {
    const s = setup({ steps: [10, 20] });
    s.canary.start("v2");
    drive(s, 500, healthy);
    expect(s.canary.history.length).toBeGreaterThan(0);
    s.canary.reset();
    expect(s.canary.view()).toMatchObject({ state: "idle", version: null, history: [] });
  });

  test("a sticky key always lands on the same side for a given weight", () => {
    const s = setup({ stickyHeader: "x-user" });
    s.canary.start("v2");
    const side = (key: string) => s.canary.chooseCanary(key);
    const keys = Array.from({ length: 2000 }, (_, i) => `user-${i}`);
    const first = keys.map(side);
    expect(keys.map(side)).toEqual(first);
    const share = first.filter(Boolean).length / keys.length;
    expect(share).toBeGreaterThan(0.03);
    expect(share).toBeLessThan(0.07);
  });

  test("the state rules: no second start, no resume while running, weights 0–100 only", () => {
    const s = setup();
    expect(() => s.canary.pause()).toThrow(CanaryError);
    s.canary.start("v2");
    expect(() => s.canary.start("v3")).toThrow(/promote, abort or reset it first/);
    expect(() => s.canary.resume()).toThrow(/it is running/);
    expect(() => s.canary.setWeight(101)).toThrow(/0 to 100/);
    s.canary.setWeight(30);
    expect(s.canary.state).toBe("paused");
    expect(s.canary.weight).toBe(30);
    s.canary.resume();
    expect(s.canary.state).toBe("running");
    s.canary.abort();
    s.canary.reset();
    expect(s.canary.view()).toMatchObject({ state: "idle", version: null, weight: 0 });
    s.canary.start("v3");
    expect(s.canary.version).toBe("v3");
  });
});

describe("the latency window", () => {
  test("its p99 is within 5 % of the true value", () => {
    const w = new LatencyWindow();
    for (let i = 1; i <= 1000; i++) w.add(i / 10);
    expect(w.percentile(0.99)).toBeGreaterThanOrEqual(99);
    expect(w.percentile(0.99)).toBeLessThanOrEqual(99 * 1.05);
    expect(new LatencyWindow().percentile(0.99)).toBe(0);
  });
});

describe("an upstream's endpoints under a canary", () => {
  test("the split goes by reported version; an endpoint of unknown version gets nothing while either side can serve", async () => {
    const upstream = testUpstream(testConfig({ endpoints: "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4" }));
    await upstream.ready;
    const [a, b, c, d] = upstream.endpoints;
    upstream.learnVersion(a!, "v1");
    upstream.learnVersion(b!, "v1");
    upstream.learnVersion(c!, "v2");
    // d has not said its version yet (just discovered).
    const canary = new Canary("up", POLICY);
    upstream.canary = canary;
    canary.start("v2");
    const picked = (toCanary: boolean) =>
      new Set(Array.from({ length: 200 }, () => upstream.pick(undefined, undefined, toCanary)!.address));
    expect(picked(true)).toEqual(new Set([c!.address]));
    expect(picked(false)).toEqual(new Set([a!.address, b!.address]));
    // No canary endpoint available: its share goes to the stable version, still not to d.
    c!.available = false;
    expect(picked(true)).toEqual(new Set([a!.address, b!.address]));
    // Without a canary every endpoint takes traffic, whatever its version.
    canary.reset();
    c!.available = true;
    const idle = new Set(Array.from({ length: 400 }, () => upstream.pick()!.address));
    expect(idle).toEqual(new Set([a!.address, b!.address, c!.address, d!.address]));
    upstream.close();
  });
});

describe("a canary across routes.yaml reloads", () => {
  test("a running canary keeps its state when the policy changes, and follows the new policy", async () => {
    const log = pino({ level: "silent" });
    const lifecycle = new Lifecycle({ drainDelayMs: 0, shutdownTimeoutMs: 1000, log });
    const gateway = new Gateway(testConfig({ upstream: "canary: { steps: [5, 50] }" }), {
      identity: { service: "gateway", version: "t", instance: "gw-test" },
      log,
      lifecycle,
    });
    try {
      const before = gateway.canary("up")!;
      before.start("v2");
      await gateway.reload(testConfig({ upstream: "canary: { steps: [10, 20, 100], minRequests: 7 }" }));
      const after = gateway.canary("up")!;
      expect(after).toBe(before);
      expect(after.view()).toMatchObject({ state: "running", version: "v2", weight: 5 });
      expect(after.policy).toMatchObject({ steps: [10, 20, 100], minRequests: 7 });
      // The upstream in service routes through it.
      expect(gateway.upstreams.get("up")!.canary).toBe(after);
      // A different upstream setting replaces the Upstream object; the canary stays.
      await gateway.reload(
        testConfig({ upstream: "canary: { steps: [10, 20, 100] }, balancer: { algorithm: round-robin }" }),
      );
      expect(gateway.upstreams.get("up")!.canary).toBe(before);
      expect(before.state).toBe("running");
    } finally {
      gateway.close();
    }
  });

  test("a rebuilt upstream keeps its endpoints' known versions (the split holds) and its counters (they must not go down); a removed upstream takes its canary along", async () => {
    const log = pino({ level: "silent" });
    const lifecycle = new Lifecycle({ drainDelayMs: 0, shutdownTimeoutMs: 1000, log });
    const endpoints = "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3";
    const gateway = new Gateway(testConfig({ endpoints, upstream: "canary: { steps: [10, 100] }" }), {
      identity: { service: "gateway", version: "t", instance: "gw-test" },
      log,
      lifecycle,
    });
    try {
      const first = gateway.upstreams.get("up")!;
      await first.ready;
      const [a, b, c] = first.endpoints;
      first.learnVersion(a!, "v1");
      first.learnVersion(b!, "v1");
      first.learnVersion(c!, "v2");
      gateway.canary("up")!.start("v2");
      gateway.canary("up")!.abort();
      first.retries.attempted = 2;
      first.retries.budgetExhausted = 1;
      a!.ejections = 3;
      await gateway.reload(
        testConfig({ endpoints, upstream: "canary: { steps: [10, 100] }, balancer: { algorithm: round-robin }" }),
      );
      const rebuilt = gateway.upstreams.get("up")!;
      expect(rebuilt).not.toBe(first);
      expect(rebuilt.endpoints.map((e) => e.version)).toEqual(["v1", "v1", "v2"]);
      expect(rebuilt.retries).toEqual({ attempted: 2, budgetExhausted: 1 });
      expect(rebuilt.endpoints.map((e) => e.ejections)).toEqual([3, 0, 0]);
      // Aborted: weight 0, and the rebuilt upstream sends the aborted version nothing.
      const picked = new Set(Array.from({ length: 100 }, () => rebuilt.pick(undefined, undefined, false)!.address));
      expect(picked).toEqual(new Set([a!.address, b!.address]));

      // Gone from the file, then back: a fresh controller, not the aborted one.
      const other = testConfig({ endpoints }).upstreams.get("up")!;
      const without = { ...testConfig({ endpoints }), upstreams: new Map([["other", { ...other, name: "other" }]]) };
      await gateway.reload({ ...without, routes: [] });
      await gateway.reload(testConfig({ endpoints, upstream: "canary: { steps: [10, 100] }" }));
      expect(gateway.canary("up")!.view()).toMatchObject({ state: "idle", weight: 0, history: [] });
    } finally {
      gateway.close();
    }
  });
});
