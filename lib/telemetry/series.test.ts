import { describe, expect, test } from "bun:test";
import { Registry } from "prom-client";
import { counterView, histogramView, Series, SeriesSet } from "./series.ts";

describe("Series", () => {
  test("a value lands in the first bucket whose bound is >= it (Prometheus' le), above all bounds in +Inf", () => {
    const series = new Series({}, [0.1, 1]);
    for (const v of [0.05, 0.1, 0.5, 1, 7]) series.observe(v);
    expect([...series.buckets]).toEqual([2, 2, 1]);
    expect(series.count).toBe(5);
    expect(series.sum).toBeCloseTo(8.65);
  });

  test("a counter series has no buckets and only counts", () => {
    const series = new Series({ outcome: "ok" }, []);
    series.inc();
    series.inc();
    expect(series.buckets.length).toBe(0);
    expect(series.count).toBe(2);
  });
});

describe("SeriesSet", () => {
  test("the same label values give the same series object (bound once, no lookup garbage)", () => {
    const set = new SeriesSet(["route", "method", "status_code"], [1]);
    const a = set.get("projects", "GET", "200");
    expect(set.get("projects", "GET", "200")).toBe(a);
    expect(set.get("projects", "POST", "200")).not.toBe(a);
    expect(a.labels).toEqual({ route: "projects", method: "GET", status_code: "200" });
    expect([...set]).toHaveLength(2);
  });

  test("retain drops the series it is told to, and a dropped one starts again from zero", () => {
    const set = new SeriesSet(["upstream", "endpoint"]);
    set.get("webapp", "a:1").inc();
    set.get("webapp", "b:1").inc();
    set.retain((labels) => labels.endpoint !== "a:1");
    expect([...set].map((s) => s.labels.endpoint)).toEqual(["b:1"]);
    expect(set.get("webapp", "a:1").count).toBe(0);
  });

  test("refuses more than three labels", () => {
    expect(() => new SeriesSet(["a", "b", "c", "d"])).toThrow("at most 3 labels");
  });
});

describe("exposition through a prom-client Registry", () => {
  test("one set feeds a counter and a cumulative histogram with _sum and _count", async () => {
    const registry = new Registry();
    registry.setDefaultLabels({ service: "test" });
    const set = new SeriesSet(["route"], [0.1, 1]);
    counterView(registry, "demo_requests_total", "Requests.", set);
    histogramView(registry, "demo_request_duration_seconds", "Durations.", set);
    for (const v of [0.05, 0.5, 2]) set.get("r").observe(v);
    const text = await registry.metrics();
    expect(text).toContain("# TYPE demo_requests_total counter");
    expect(text).toContain('demo_requests_total{route="r",service="test"} 3');
    expect(text).toContain("# TYPE demo_request_duration_seconds histogram");
    expect(text).toContain('demo_request_duration_seconds_bucket{route="r",le="0.1",service="test"} 1');
    expect(text).toContain('demo_request_duration_seconds_bucket{route="r",le="1",service="test"} 2');
    expect(text).toContain('demo_request_duration_seconds_bucket{route="r",le="+Inf",service="test"} 3');
    expect(text).toContain('demo_request_duration_seconds_sum{route="r",service="test"} 2.55');
    expect(text).toContain('demo_request_duration_seconds_count{route="r",service="test"} 3');
  });
});
