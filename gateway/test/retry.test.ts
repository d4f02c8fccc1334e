/** Retries (only where safe, on another endpoint, within the route timeout) and the retry budget. */
import { describe, expect, jest, test } from "bun:test";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { dispatch, type NoEndpoint } from "../src/upstream/dispatch.ts";
import type { Endpoint } from "../src/upstream/endpoint.ts";
import type { Outcome } from "../src/upstream/outcome.ts";
import { RetryBudget } from "../src/upstream/retry-budget.ts";
import { context, outcomes, testConfig, testUpstream } from "./upstream-harness.ts";

/** Runs one request through a fresh upstream; `answer(endpoint, try)` plays the transport. */
async function request(opts: {
  idempotent: boolean;
  answer: (e: Endpoint, n: number) => Outcome | Promise<Outcome>;
  route?: string;
  upstream?: string;
  protocol?: "http" | "grpc";
  timeoutMs?: number;
}) {
  const config = testConfig(opts);
  const upstream = testUpstream(config);
  const tried: string[] = [];
  const timeouts: number[] = [];
  const result = await dispatch(
    upstream,
    config.routes[0]!,
    context(),
    opts.idempotent,
    async (endpoint, timeoutMs) => {
      tried.push(endpoint.address);
      timeouts.push(timeoutMs);
      return opts.answer(endpoint, tried.length);
    },
  );
  upstream.close();
  return { result, tried, timeouts, retries: upstream.retries };
}

const status = (r: Outcome | NoEndpoint) => (r.kind === "response" ? r.response.status : r.kind);

describe("what is retried", () => {
  test("a refused connection is retried on another endpoint, for POST too", async () => {
    const { result, tried, retries } = await request({
      idempotent: false,
      answer: (_, n) => (n === 1 ? outcomes.refused() : outcomes.ok()),
    });
    expect(status(result)).toBe(200);
    expect(tried.length).toBe(2);
    expect(tried[0]).not.toBe(tried[1]);
    expect(retries.attempted).toBe(1);
  });

  test("POST is not retried after a 502/503/504, a reset or a timeout; it was maybe processed", async () => {
    for (const failure of [
      outcomes.status(502),
      outcomes.status(503),
      outcomes.status(504),
      outcomes.reset(),
      outcomes.timeout(),
    ]) {
      const { tried } = await request({ idempotent: false, answer: () => failure });
      expect(tried.length).toBe(1);
    }
  });

  test("an idempotent request is retried after 502/503/504 or a reset, each time on an endpoint not tried yet", async () => {
    const { result, tried } = await request({
      idempotent: true,
      answer: (_, n) => (n === 1 ? outcomes.status(503) : n === 2 ? outcomes.reset() : outcomes.ok()),
    });
    expect(status(result)).toBe(200);
    expect(new Set(tried).size).toBe(3);
  });

  test("a 500 is not retried, whatever the method", async () => {
    const { tried } = await request({ idempotent: true, answer: () => outcomes.status(500) });
    expect(tried.length).toBe(1);
  });

  test("gRPC UNAVAILABLE is retried only on a route marked idempotent; one never sent (no connection) always", async () => {
    const unavailable = () => outcomes.grpc(GrpcStatus.UNAVAILABLE, "Connection dropped");
    const notConnected = () =>
      outcomes.grpcUnsent(GrpcStatus.UNAVAILABLE, "cannot connect to 127.0.0.1:1: connect ECONNREFUSED");
    expect(
      (
        await request({
          protocol: "grpc",
          idempotent: false,
          answer: (_, n) => (n === 1 ? unavailable() : outcomes.reply()),
        })
      ).tried.length,
    ).toBe(1);
    expect(
      (
        await request({
          protocol: "grpc",
          idempotent: true,
          answer: (_, n) => (n === 1 ? unavailable() : outcomes.reply()),
        })
      ).tried.length,
    ).toBe(2);
    expect(
      (
        await request({
          protocol: "grpc",
          idempotent: false,
          answer: (_, n) => (n === 1 ? notConnected() : outcomes.reply()),
        })
      ).tried.length,
    ).toBe(2);
  });

  test("no more than retry.attempts tries; the last failure is answered", async () => {
    const { result, tried } = await request({
      idempotent: true,
      route: "retry: { attempts: 2 }",
      answer: () => outcomes.status(503),
    });
    expect(tried.length).toBe(2);
    expect(status(result)).toBe(503);
  });

  test("with more attempts than two, every try still goes to an endpoint not tried yet; none left ends the retries", async () => {
    for (let run = 0; run < 50; run++) {
      const { tried } = await request({
        idempotent: true,
        upstream: "circuitBreaker: { consecutiveFailures: 1000 }, outlierDetection: { consecutiveFailures: 1000 }",
        route: "retry: { attempts: 5, budgetPercent: 100, minRetriesPerSecond: 1000 }",
        answer: () => outcomes.status(503),
      });
      // Three endpoints: three tries, each on its own, then nothing untried is left.
      expect(new Set(tried).size).toBe(tried.length);
      expect(tried.length).toBe(3);
    }
  });

  test("the route timeout bounds the whole request: a try gets perTryTimeoutMs, or what is left if less", async () => {
    // On a test clock each of the first two tries takes exactly its 120 ms, so the third gets
    // exactly what is left of the 300 ms route timeout.
    jest.useFakeTimers();
    try {
      const { timeouts } = await request({
        idempotent: true,
        timeoutMs: 300,
        route: "retry: { perTryTimeoutMs: 120 }",
        answer: (_, n) => {
          if (n < 3) jest.advanceTimersByTime(120);
          return outcomes.timeout();
        },
      });
      expect(timeouts).toEqual([120, 120, 60]);
    } finally {
      jest.useRealTimers();
    }
  });
});

describe("retry budget", () => {
  test("retries may add at most budgetPercent of the requests (plus the per-second floor) over 10 s", () => {
    const start = 1_000_000;
    const budget = new RetryBudget(20, 0, start);
    for (let i = 0; i < 100; i++) budget.recordRequest(start);
    let allowed = 0;
    while (budget.tryRetry(start + 500)) allowed++;
    expect(allowed).toBe(20);
    // 10 s later the window has moved past those requests: nothing left until new ones come.
    expect(budget.tryRetry(start + 10_500)).toBe(false);
    for (let i = 0; i < 10; i++) budget.recordRequest(start + 10_600);
    expect(budget.tryRetry(start + 10_700)).toBe(true);
    expect(budget.tryRetry(start + 10_700)).toBe(true);
    expect(budget.tryRetry(start + 10_700)).toBe(false);
  });

  test("the floor lets a quiet route retry: minRetriesPerSecond × 10 s", () => {
    const budget = new RetryBudget(20, 5, 0);
    let allowed = 0;
    while (budget.tryRetry(1)) allowed++;
    expect(allowed).toBe(50);
  });

  test("an exhausted budget answers the failure instead of retrying, and is counted", async () => {
    const config = testConfig({ route: "retry: { budgetPercent: 0, minRetriesPerSecond: 0 }" });
    const upstream = testUpstream(config);
    let tries = 0;
    const result = await dispatch(upstream, config.routes[0]!, context(), false, async () => {
      tries++;
      return outcomes.refused();
    });
    expect(result.kind).toBe("connect-error");
    expect(tries).toBe(1);
    expect(upstream.retries).toEqual({ attempted: 0, budgetExhausted: 1 });
    upstream.close();
  });
});
