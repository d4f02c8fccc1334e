/** Per-endpoint circuit breaker (cockatiel), outlier ejection, and what counts as a failure. */
import { afterEach, describe, expect, jest, test } from "bun:test";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { EndpointBreaker, type BreakerState, isBreakerRejection } from "../src/upstream/breaker.ts";
import { dispatch } from "../src/upstream/dispatch.ts";
import { Endpoint } from "../src/upstream/endpoint.ts";
import { classify, isFailure, type Outcome, type Verdict } from "../src/upstream/outcome.ts";
import { OutlierDetector } from "../src/upstream/outlier.ts";
import type { UpstreamEvent } from "../src/upstream/upstream.ts";
import { waitFor } from "../../scripts/stack/testing/processes.ts";
import { context, deferred, outcomes, settle, testConfig, testUpstream } from "./upstream-harness.ts";

// Tests that take jest.useFakeTimers() (Date.now, performance.now and timers on a clock the test
// moves) get the real ones back whatever happens.
afterEach(() => {
  jest.useRealTimers();
});

function breaker(
  settings: Partial<{ consecutiveFailures: number; halfOpenAfterMs: number; maxHalfOpenAfterMs: number }> = {},
) {
  const states: BreakerState[] = [];
  const b = new EndpointBreaker<Outcome>(
    { consecutiveFailures: 3, halfOpenAfterMs: 40, maxHalfOpenAfterMs: 1_000, ...settings },
    isFailure,
    (s) => states.push(s),
  );
  return { b, states };
}

const run = (b: EndpointBreaker<Outcome>, outcome: () => Outcome) => b.execute(async () => outcome());

describe("circuit breaker", () => {
  test("opens after 3 failed requests in a row, not before; a success in between starts the count again", async () => {
    const { b } = breaker();
    await run(b, outcomes.refused);
    await run(b, outcomes.refused);
    await run(b, outcomes.ok);
    await run(b, outcomes.refused);
    await run(b, () => outcomes.status(503));
    expect(b.state).toBe("closed");
    await run(b, outcomes.timeout);
    expect(b.state).toBe("open");
  });

  test("while open, calls are refused without running; after halfOpenAfterMs one probe runs and its success closes it", async () => {
    const { b, states } = breaker();
    for (let i = 0; i < 3; i++) await run(b, outcomes.refused);
    let ran = false;
    const refused = await b
      .execute(async () => {
        ran = true;
        return outcomes.ok();
      })
      .catch((err) => err);
    expect(isBreakerRejection(refused)).toBe(true);
    expect(ran).toBe(false);
    expect(b.probeReady).toBe(false);
    await waitFor("the probe to be due", () => b.probeReady, { timeoutMs: 1_000, intervalMs: 5 });
    const held = deferred<Outcome>();
    const probe = b.execute(() => held.promise);
    expect(b.state).toBe("half-open");
    expect(b.probeReady).toBe(false);
    held.resolve(outcomes.ok());
    await probe;
    expect(b.state).toBe("closed");
    expect(states).toEqual(["open", "open", "half-open", "closed"]);
  });

  test("a failed probe reopens it for twice as long, up to maxHalfOpenAfterMs", async () => {
    jest.useFakeTimers(); // cockatiel and the breaker read Date.now: each wait comes out exact
    const { b } = breaker({ halfOpenAfterMs: 30, maxHalfOpenAfterMs: 70 });
    const waits: number[] = [];
    await run(b, outcomes.refused);
    await run(b, outcomes.refused);
    const openedAt = () => Date.now(); // the clock stands still unless the test moves it
    await run(b, outcomes.refused);
    waits.push(b.probeAt - openedAt());
    for (let round = 0; round < 3; round++) {
      jest.advanceTimersByTime(waits.at(-1)!);
      expect(b.probeReady).toBe(false); // due 1 ms after cockatiel would let it through
      jest.advanceTimersByTime(1);
      expect(b.probeReady).toBe(true);
      await run(b, outcomes.refused);
      expect(b.state).toBe("open");
      waits.push(b.probeAt - openedAt());
    }
    expect(waits).toEqual([30, 60, 70, 70]);
  });

  test("reset() closes it at once and forgets past failures", async () => {
    const { b } = breaker();
    for (let i = 0; i < 3; i++) await run(b, outcomes.refused);
    expect(b.state).toBe("open");
    b.reset();
    expect(b.state).toBe("closed");
    await run(b, outcomes.refused);
    await run(b, outcomes.refused);
    expect(b.state).toBe("closed");
  });
});

describe("what counts as an endpoint failure", () => {
  test("4xx and gRPC application errors are answers; 5xx (not 501), resets, timeouts, INTERNAL and UNAVAILABLE are failures", () => {
    const table: [Outcome, Verdict][] = [
      [outcomes.ok(), "ok"],
      [outcomes.status(404), "ok"],
      [outcomes.status(429), "ok"],
      [outcomes.status(501), "ok"],
      [outcomes.status(500), "failure"],
      [outcomes.status(502), "unavailable"],
      [outcomes.status(503), "unavailable"],
      [outcomes.status(504), "unavailable"],
      [outcomes.refused(), "connect"],
      [outcomes.reset(), "unavailable"],
      [outcomes.timeout(), "timeout"],
      [outcomes.reply(), "ok"],
      [outcomes.grpc(GrpcStatus.INVALID_ARGUMENT), "ok"],
      [outcomes.grpc(GrpcStatus.NOT_FOUND), "ok"],
      [outcomes.grpc(GrpcStatus.RESOURCE_EXHAUSTED), "ok"],
      [outcomes.grpc(GrpcStatus.INTERNAL), "failure"],
      [outcomes.grpc(GrpcStatus.UNAVAILABLE, "Connection dropped"), "unavailable"],
      [outcomes.grpcUnsent(GrpcStatus.UNAVAILABLE, "cannot connect to 127.0.0.1:1: connect ECONNREFUSED"), "connect"],
      // The client's flag decides, not the text: grpc-js's wording on a sent call is no "connect".
      [outcomes.grpc(GrpcStatus.UNAVAILABLE, "No connection established. Last error: ECONNREFUSED"), "unavailable"],
      [outcomes.grpcUnsent(GrpcStatus.DEADLINE_EXCEEDED, "waited for a connection"), "connect"],
      [outcomes.grpc(GrpcStatus.DEADLINE_EXCEEDED), "timeout"],
    ];
    expect(table.map(([o]) => classify(o))).toEqual(table.map(([, v]) => v));
  });
});

describe("outlier ejection", () => {
  const settings = { consecutiveFailures: 2, baseEjectionMs: 40, maxEjectionMs: 100, maxEjectedPercent: 50 };
  const make = (n: number) => {
    const list = Array.from(
      { length: n },
      (_, i) =>
        new Endpoint(
          `10.0.0.${i + 1}:80`,
          "http",
          { consecutiveFailures: 99, halfOpenAfterMs: 1_000, maxHalfOpenAfterMs: 1_000 },
          1,
        ),
    );
    const events: string[] = [];
    const detector = new OutlierDetector(
      settings,
      () => list,
      (e, ms) => events.push(`eject ${e.address} ${ms}`),
      (e) => events.push(`readmit ${e.address}`),
    );
    return { list, events, detector };
  };

  test("ejects after consecutiveFailures in a row, for baseEjectionMs doubling per ejection in a row, and readmits when the time is up", () => {
    // On a test clock: a streak is forgiven after maxEjectionMs in service, so on a busy machine a
    // real-clock gap between readmission and the next failures would reset it.
    jest.useFakeTimers();
    const { list, events, detector } = make(3);
    const e = list[0]!;
    detector.onFailure(e);
    detector.onSuccess(e);
    detector.onFailure(e);
    expect(e.ejected).toBe(false);
    detector.onFailure(e);
    expect(e.ejected).toBe(true);
    expect(e.available).toBe(false);
    jest.advanceTimersByTime(39);
    expect(e.ejected).toBe(true);
    jest.advanceTimersByTime(1);
    expect(e.ejected).toBe(false);
    expect(e.available).toBe(true);
    detector.onFailure(e);
    detector.onFailure(e);
    jest.advanceTimersByTime(80);
    expect(e.ejected).toBe(false);
    detector.onFailure(e);
    detector.onFailure(e);
    jest.advanceTimersByTime(100);
    expect(e.ejected).toBe(false);
    expect(events).toEqual([
      "eject 10.0.0.1:80 40",
      "readmit 10.0.0.1:80",
      "eject 10.0.0.1:80 80",
      "readmit 10.0.0.1:80",
      "eject 10.0.0.1:80 100",
      "readmit 10.0.0.1:80",
    ]);
    expect(e.ejections).toBe(3);
    expect(e.lastEjectedAt).toBeLessThanOrEqual(e.lastReadmittedAt!);
    detector.stop();
  });

  test("an ejection that ends while the endpoint fails its health checks reports no readmission; Retry-After is the next check", () => {
    jest.useFakeTimers();
    const { list, events, detector } = make(3);
    const e = list[0]!;
    detector.onFailure(e, true);
    e.health = "unhealthy";
    e.refreshAvailability();
    jest.advanceTimersByTime(40);
    expect(e.ejected).toBe(false);
    expect(e.available).toBe(false);
    expect(events).toEqual(["eject 10.0.0.1:80 40"]);
    // Out until a health check passes (which also ends ejection and breaker): that is when it
    // may take traffic, not when its 40 ms ejection would have ended.
    detector.onFailure(list[1]!, true);
    const now = Date.now();
    const l = list[1]!;
    l.health = "unhealthy";
    l.refreshAvailability();
    expect(l.ejected).toBe(true);
    expect(l.availableFrom(now, now + 10)).toBe(now + 10);
    detector.stop();
  });

  test("one refused connection ejects at once: nothing listens there", () => {
    const { list, detector } = make(3);
    detector.onFailure(list[0]!, true);
    expect(list[0]!.ejected).toBe(true);
    detector.stop();
  });

  test("never ejects more than maxEjectedPercent of the endpoints (but at least one)", () => {
    const { list, detector } = make(4);
    for (const e of list) for (let i = 0; i < 5; i++) detector.onFailure(e);
    expect(list.filter((e) => e.ejected).length).toBe(2);
    const single = make(1);
    for (let i = 0; i < 2; i++) single.detector.onFailure(single.list[0]!);
    expect(single.list[0]!.ejected).toBe(true);
    detector.stop();
    single.detector.stop();
  });
});

describe("an upstream whose endpoints are all out", () => {
  test("answers no-endpoint at once with Retry-After = seconds until the soonest probe, then probes and recovers", async () => {
    const config = testConfig({
      endpoints: "127.0.0.1:1,127.0.0.1:2",
      upstream:
        "circuitBreaker: { consecutiveFailures: 1, halfOpenAfterMs: 1100 }, outlierDetection: { maxEjectedPercent: 0 }",
      route: "retry: { attempts: 1 }",
    });
    const route = config.routes[0]!;
    // On a clock the test moves (Date.now, performance.now, timers): "at once" means the answer
    // came with the clock standing still, so it waited on no timer.
    jest.useFakeTimers();
    const events: UpstreamEvent[] = [];
    const upstream = testUpstream(config, { onEvent: (e) => events.push(e) });
    let healthy = false;
    let sent = 0;
    const send = async () => {
      sent++;
      return healthy ? outcomes.ok() : outcomes.refused();
    };
    await dispatch(upstream, route, context(), false, send);
    await dispatch(upstream, route, context(), false, send);
    expect(upstream.endpoints.map((e) => e.breakerState)).toEqual(["open", "open"]);

    const before = sent;
    let result: Awaited<ReturnType<typeof dispatch>> | undefined;
    void dispatch(upstream, route, context(), false, send).then((r) => (result = r));
    await settle();
    expect(sent).toBe(before);
    expect(result).toMatchObject({ kind: "no-endpoint", retryAfterSeconds: 2, endpoints: 2 });

    healthy = true;
    jest.advanceTimersByTime(1_099);
    expect(upstream.endpoints.some((e) => e.available)).toBe(false);
    jest.advanceTimersByTime(2); // halfOpenAfterMs, and the 1 ms the breaker adds
    expect(upstream.endpoints.some((e) => e.available)).toBe(true);
    expect((await dispatch(upstream, route, context(), false, send)).kind).toBe("response");
    expect(upstream.endpoints.some((e) => e.breakerState === "closed")).toBe(true);
    const breakerEvents = events.filter((e) => e.type === "breaker").map((e) => (e.type === "breaker" ? e.state : ""));
    expect(breakerEvents).toEqual(["open", "open", "half-open", "closed"]);
    upstream.close();
  });
});

describe("a try the client cancelled (it went away mid-request)", () => {
  test("a try the client cancelled is no evidence: answered at once, not retried, not counted by the breaker, health or latency", async () => {
    const config = testConfig({
      endpoints: "127.0.0.1:1",
      upstream: "circuitBreaker: { consecutiveFailures: 2 }",
      route: "retry: { attempts: 3 }",
    });
    const upstream = testUpstream(config);
    const [endpoint] = upstream.endpoints;
    let sent = 0;
    const cancelled = async () => {
      sent++;
      return outcomes.cancelled();
    };
    for (let i = 0; i < 5; i++) {
      const result = await dispatch(upstream, config.routes[0]!, context(), true, cancelled);
      expect(result).toEqual({ kind: "cancelled" });
    }
    expect(sent).toBe(5);
    expect(endpoint!.breakerState).toBe("closed");
    expect(endpoint!.failures).toBe(0);
    expect(endpoint!.available).toBe(true);
    // Nor does it reset a run of failures: one more failure after the cancelled tries opens it.
    await dispatch(upstream, config.routes[0]!, context(), false, async () => outcomes.status(503));
    await dispatch(upstream, config.routes[0]!, context(), false, cancelled);
    await dispatch(upstream, config.routes[0]!, context(), false, async () => outcomes.status(503));
    expect(endpoint!.breakerState).toBe("open");
    upstream.close();
  });

  test("a half-open breaker's probe that the client cancelled does not close it", async () => {
    const config = testConfig({
      endpoints: "127.0.0.1:1",
      upstream:
        "circuitBreaker: { consecutiveFailures: 1, halfOpenAfterMs: 30 }, outlierDetection: { maxEjectedPercent: 0 }",
      route: "retry: { attempts: 1 }",
    });
    const upstream = testUpstream(config);
    const [endpoint] = upstream.endpoints;
    const route = config.routes[0]!;
    await dispatch(upstream, route, context(), false, async () => outcomes.refused());
    expect(endpoint!.breakerState).toBe("open");
    await waitFor("the probe to be due", () => endpoint!.available, { timeoutMs: 1_000, intervalMs: 5 });
    expect(await dispatch(upstream, route, context(), false, async () => outcomes.cancelled())).toEqual({
      kind: "cancelled",
    });
    expect(endpoint!.breakerState).toBe("open");
    await waitFor("the next probe", () => endpoint!.available, { timeoutMs: 1_000, intervalMs: 5 });
    expect((await dispatch(upstream, route, context(), false, async () => outcomes.ok())).kind).toBe("response");
    expect(endpoint!.breakerState).toBe("closed");
    upstream.close();
  });
});
