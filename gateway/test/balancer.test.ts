/** Per-request balancing: P2C least-request weighted by latency EWMA (and round robin). */
import { describe, expect, test } from "bun:test";
import { pickP2C, RoundRobin } from "../src/upstream/balancer.ts";
import { Endpoint } from "../src/upstream/endpoint.ts";

const BREAKER = { consecutiveFailures: 5, halfOpenAfterMs: 1_000, maxHalfOpenAfterMs: 10_000 };

function endpoints(ewmas: number[]): Endpoint[] {
  return ewmas.map((ewma, i) => new Endpoint(`127.0.0.1:${i + 1}`, "http", BREAKER, ewma));
}

/** Share (%) of `picks` picks that went to each endpoint, all picks at the same instant. */
function shareOf(list: Endpoint[], picks = 30_000, now = performance.now()): number[] {
  const counts = new Map<Endpoint, number>();
  for (let i = 0; i < picks; i++) {
    const e = pickP2C(list, now)!;
    counts.set(e, (counts.get(e) ?? 0) + 1);
  }
  return list.map((e) => (100 * (counts.get(e) ?? 0)) / picks);
}

describe("P2C least-request × latency EWMA", () => {
  test("equally good endpoints share traffic evenly, even one request at a time", () => {
    const shares = shareOf(endpoints([2, 2.4, 1.8]));
    for (const s of shares) expect(Math.abs(s - 100 / 3)).toBeLessThan(3);
  });

  test("an endpoint with 10× the latency gets clearly less traffic", () => {
    const [a, b, slow] = shareOf(endpoints([2, 2, 20]));
    console.log(`[balancer] shares with EWMA 2/2/20 ms: ${[a, b, slow].map((s) => s!.toFixed(1)).join("% / ")}%`);
    expect(slow).toBeLessThan(5);
  });

  test("an endpoint with requests piling up (in flight) is avoided", () => {
    const list = endpoints([2, 2, 2]);
    list[2]!.inflight = 5;
    expect(shareOf(list)[2]).toBeLessThan(5);
  });

  test("never picks an unavailable endpoint; a retry skips the endpoints already tried", () => {
    const list = endpoints([2, 2, 2]);
    list[0]!.available = false;
    expect(shareOf(list)[0]).toBe(0);
    list[0]!.available = true;
    const now = performance.now();
    for (let i = 0; i < 1000; i++) expect(pickP2C(list, now, list[0], list[1])).toBe(list[2]!);
    expect(pickP2C(list.slice(0, 2), now, list[0], list[1])).toBeUndefined();
    for (const e of list) e.available = false;
    expect(pickP2C(list, now)).toBeUndefined();
    expect(pickP2C([], now)).toBeUndefined();
  });

  test("an open breaker whose probe is due wins every pick it is drawn in (one request probes it)", () => {
    const list = endpoints([2, 40]);
    list[1]!.breaker.probeReady = true;
    expect(shareOf(list, 1000)[1]).toBe(100);
  });

  test("an idle endpoint's latency figure halves every second, so a once-slow replica is tried again", () => {
    const [e] = endpoints([40]);
    const now = e!.lastSampleAt;
    expect(e!.cost(now)).toBeCloseTo(40, 5);
    expect(e!.cost(now + 3_000)).toBeCloseTo(5, 1);
    e!.inflight = 2;
    // Not idle: in-flight requests multiply the figure instead.
    expect(e!.cost(now + 3_000)).toBeCloseTo(120, 5);
  });

  test("a success moves the EWMA 30% toward its latency; one spike counts at most 4×; a failure at least 250 ms", () => {
    const [e] = endpoints([10]);
    const now = e!.lastSampleAt;
    e!.sample(20, false, now);
    expect(e!.ewmaMs).toBeCloseTo(13, 5);
    e!.sample(1_000, false, now);
    expect(e!.ewmaMs).toBeCloseTo(13 + 0.3 * (52 - 13), 5);
    const before = e!.ewmaMs;
    e!.sample(1, true, now);
    expect(e!.ewmaMs).toBeCloseTo(before + 0.3 * (250 - before), 5);
  });

  test("a replica that stays 20× slower is found within a few answers", () => {
    const [e] = endpoints([2]);
    const now = e!.lastSampleAt;
    let answers = 0;
    while (e!.ewmaMs < 2 * 2 * 2) {
      e!.sample(40, false, now);
      answers++;
    }
    expect(answers).toBeLessThanOrEqual(4);
  });

  test("a pick looks at 2 endpoints whether there are 3 or 1000 (O(1))", () => {
    // The cost is counted, not timed: how many endpoints a pick reads out of the list.
    const readsPerPick = (n: number) => {
      let reads = 0;
      const list = new Proxy(endpoints(Array.from({ length: n }, () => 2)), {
        get(target, key) {
          if (typeof key === "string" && /^\d+$/.test(key)) reads++;
          return Reflect.get(target, key);
        },
      });
      const picks = 1_000;
      const now = performance.now();
      for (let i = 0; i < picks; i++) pickP2C(list, now);
      return reads / picks;
    };
    expect(readsPerPick(3)).toBe(2);
    expect(readsPerPick(1000)).toBe(2);
    // For the curious (not a test: speed belongs to `make bench`), the time of one pick here.
    const list = endpoints(Array.from({ length: 1000 }, () => 2));
    const now = performance.now();
    const started = Bun.nanoseconds();
    for (let i = 0; i < 100_000; i++) pickP2C(list, now);
    console.log(`[balancer] P2C pick among 1000 endpoints: ${((Bun.nanoseconds() - started) / 100_000).toFixed(0)} ns`);
  });
});

describe("round robin", () => {
  test("visits every available endpoint in turn and skips the rest", () => {
    const list = endpoints([2, 2, 2]);
    const rr = new RoundRobin();
    expect([1, 2, 3, 4, 5, 6].map(() => rr.pick(list)!.address)).toEqual([
      "127.0.0.1:1",
      "127.0.0.1:2",
      "127.0.0.1:3",
      "127.0.0.1:1",
      "127.0.0.1:2",
      "127.0.0.1:3",
    ]);
    list[1]!.available = false;
    expect([1, 2, 3, 4].map(() => rr.pick(list)!.address)).not.toContain("127.0.0.1:2");
    expect(rr.pick(list, list[0], list[2])).toBeUndefined();
  });
});
