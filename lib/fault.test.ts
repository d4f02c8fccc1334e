import { describe, expect, test } from "bun:test";
import { Fault, faultFromEnv } from "./fault.ts";

const failures = (fault: Fault, callers: (string | undefined)[]) => {
  const seen = new Map<string | undefined, number>();
  for (const caller of callers) if (fault.fails(caller)) seen.set(caller, (seen.get(caller) ?? 0) + 1);
  return seen;
};

describe("Fault", () => {
  test("5 % fails exactly one request in twenty, in every window of twenty", () => {
    const fault = new Fault(5, 0);
    const outcomes = Array.from({ length: 200 }, () => fault.fails());
    for (let at = 0; at < 200; at += 20) expect(outcomes.slice(at, at + 20).filter(Boolean)).toHaveLength(1);
  });

  test("two callers whose requests alternate: one count gives one of them every failure; per caller, each its share", () => {
    const alternating = Array.from({ length: 400 }, (_, i) => (i % 2 === 0 ? "gateway-1" : "gateway-2"));
    // Without the caller, 20 is even: every 20th request is always the same caller's.
    const shared = failures(
      new Fault(5, 0),
      alternating.map(() => undefined),
    );
    expect(shared.get(undefined)).toBe(20);
    const sharedByCaller = new Map<string, number>();
    const fault = new Fault(5, 0);
    alternating.forEach((caller) => {
      if (fault.fails()) sharedByCaller.set(caller, (sharedByCaller.get(caller) ?? 0) + 1);
    });
    expect(sharedByCaller.get("gateway-1") ?? 0).toBe(0);
    expect(sharedByCaller.get("gateway-2")).toBe(20);
    // Per caller: ten each, one in every twenty of its own requests (the first, the 21st, …).
    const perCaller = failures(new Fault(5, 0), alternating);
    expect(Object.fromEntries(perCaller)).toEqual({ "gateway-1": 10, "gateway-2": 10 });
  });

  test("a new caller's first request fails: callers that reconnect every 15 requests still see at least their share", () => {
    // 600 requests on connections of 15 each (rpcapp recycles connections): starting each caller
    // at zero would give none of them a failure.
    const callers = Array.from({ length: 600 }, (_, i) => `127.0.0.1:${40000 + Math.floor(i / 15)}`);
    const seen = failures(new Fault(5, 0), callers);
    expect(seen.size).toBe(40);
    expect([...seen.values()].every((n) => n === 1)).toBe(true);
    // And on a long-lived caller, exactly one in twenty from the first on.
    const fault = new Fault(5, 0);
    const outcomes = Array.from({ length: 60 }, () => fault.fails("gateway-1"));
    expect(outcomes.flatMap((failed, i) => (failed ? [i] : []))).toEqual([0, 20, 40]);
  });

  test("0 % never fails; 100 % always; the variables are read and bounded", () => {
    expect(failures(new Fault(0, 0), ["a", "b", undefined]).size).toBe(0);
    expect(failures(new Fault(100, 0), ["a", "b", undefined])).toEqual(
      new Map([
        ["a", 1],
        ["b", 1],
        [undefined, 1],
      ]),
    );
    expect(faultFromEnv({ FAULT_ERROR_PERCENT: "5", FAULT_DELAY_MS: "20" })).toMatchObject({
      errorPercent: 5,
      delayMs: 20,
    });
    expect(() => faultFromEnv({ FAULT_ERROR_PERCENT: "101" })).toThrow(/FAULT_ERROR_PERCENT/);
  });
});
