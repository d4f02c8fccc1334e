import { afterAll, describe, expect, test } from "bun:test";
import type { Registry } from "prom-client";
import { closeSync, openSync } from "node:fs";
import { requireBinary } from "../../scripts/stack/testing/processes.ts";
import {
  createMetricsRegistry as createRegistry,
  GrpcServerMetrics,
  HttpServerMetrics,
  httpMethodLabel,
  statusCodeLabel,
  stopProcessMetrics,
} from "./metrics.ts";

const IDENTITY = { service: "demo", version: "1.2.3", instance: "demo-1" };
const created: Registry[] = [];
/** Registries whose event-loop timers stop when this file is done. */
const createMetricsRegistry = (...args: Parameters<typeof createRegistry>) => {
  const registry = createRegistry(...args);
  created.push(registry);
  return registry;
};
afterAll(() => created.forEach(stopProcessMetrics));
const hasPromtool = requireBinary("promtool");

/** Parses `name{labels} value` lines into [series, value] pairs (comments skipped). */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

function sampleValue(text: string, series: string): number {
  const value = samples(text).get(series);
  if (value === undefined) throw new Error(`no sample ${series} in:\n${text}`);
  return value;
}

async function promtoolCheck(text: string): Promise<{ exitCode: number; output: string }> {
  const proc = Bun.spawn(["promtool", "check", "metrics"], { stdin: new Blob([text]), stdout: "pipe", stderr: "pipe" });
  const output = (await new Response(proc.stdout).text()) + (await new Response(proc.stderr).text());
  return { exitCode: await proc.exited, output };
}

describe("a service's registry", () => {
  test("labels every series with the service, and says which version runs where in portico_build_info", async () => {
    const registry = createMetricsRegistry(IDENTITY, { processMetrics: false });
    new HttpServerMetrics(registry).observe("/x", "GET", 200, 0.01);
    const text = await registry.metrics();
    expect(sampleValue(text, 'portico_build_info{service="demo",version="1.2.3",instance="demo-1"}')).toBe(1);
    const series = [...samples(text).keys()];
    // Not vacuous: the build info and the request just observed are among the series checked.
    expect(series.filter((s) => s.startsWith("portico_build_info") || s.includes('route="/x"')).length).toBeGreaterThan(
      1,
    );
    for (const name of series) expect(name).toContain('service="demo"');
  });

  test("exports only process metrics that are true under Bun: no GC, handle or nodejs_* series", async () => {
    const text = await createMetricsRegistry(IDENTITY).metrics();
    const names = [...text.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]);
    expect(names).toEqual(
      expect.arrayContaining([
        "process_cpu_seconds_total",
        "process_cpu_user_seconds_total",
        "process_cpu_system_seconds_total",
        "process_resident_memory_bytes",
        "bun_heap_used_bytes",
        "bun_heap_capacity_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
        "bun_event_loop_lag_seconds",
      ]),
    );
    for (const name of names) expect(name).not.toMatch(/^nodejs_|gc_|handles|process_heap_bytes/);
  });

  test("process figures follow the process: CPU grows with work, open fds with a file opened, RSS and heap are real sizes", async () => {
    const registry = createMetricsRegistry(IDENTITY);
    const before = await registry.metrics();
    const fd = openSync(import.meta.path, "r");
    // Burn 50 ms of CPU (measured as CPU, not wall time: a busy machine may preempt us).
    const start = process.cpuUsage();
    const deadline = performance.now() + 5_000;
    while (performance.now() < deadline && process.cpuUsage(start).user < 50_000) Math.sqrt(Math.random());
    const after = await registry.metrics();
    closeSync(fd);
    const at = (text: string, name: string) => sampleValue(text, `${name}{service="demo"}`);
    expect(at(after, "process_cpu_seconds_total") - at(before, "process_cpu_seconds_total")).toBeGreaterThanOrEqual(
      0.05,
    );
    expect(at(after, "process_cpu_seconds_total")).toBeCloseTo(
      at(after, "process_cpu_user_seconds_total") + at(after, "process_cpu_system_seconds_total"),
      2,
    );
    expect(at(after, "process_open_fds") - at(before, "process_open_fds")).toBe(1);
    expect(at(after, "process_resident_memory_bytes")).toBeGreaterThan(10 * 1024 * 1024);
    expect(at(after, "bun_heap_used_bytes")).toBeGreaterThan(100_000);
    expect(at(after, "bun_heap_capacity_bytes")).toBeGreaterThanOrEqual(at(after, "bun_heap_used_bytes") * 0.5);
    // A timestamp, not a duration: the start time this test works out itself, to the second the
    // gauge rounds to (plus a second for the clock to tick between the two readings).
    const startedAtSeconds = Date.now() / 1000 - process.uptime();
    expect(Math.abs(at(after, "process_start_time_seconds") - startedAtSeconds)).toBeLessThan(2);
  });

  test("the event-loop lag histogram sees a loop that was blocked", async () => {
    const registry = createMetricsRegistry(IDENTITY, { lagSampleMs: 10 });
    await Bun.sleep(30);
    const until = performance.now() + 120;
    while (performance.now() < until) Math.sqrt(Math.random()); // block the loop
    await Bun.sleep(30);
    const text = await registry.metrics();
    expect(sampleValue(text, 'bun_event_loop_lag_seconds_sum{service="demo"}')).toBeGreaterThan(0.08);
    // The blocked sample lies above the 0.1 s bound.
    expect(
      sampleValue(text, 'bun_event_loop_lag_seconds_bucket{le="+Inf",service="demo"}') -
        sampleValue(text, 'bun_event_loop_lag_seconds_bucket{le="0.1",service="demo"}'),
    ).toBeGreaterThanOrEqual(1);
  });

  test.skipIf(!hasPromtool)("passes promtool check metrics, request metrics included", async () => {
    const registry = createMetricsRegistry(IDENTITY);
    new HttpServerMetrics(registry).observe("/projects/:id", "GET", 404, 0.002);
    new GrpcServerMetrics(registry).observe("pkg.Svc/Do", "OK", 0.001);
    expect(await promtoolCheck(await registry.metrics())).toEqual({ exitCode: 0, output: "" });
  });
});

describe("RED metrics", () => {
  test("HTTP: one observation moves the counter and the histogram of its route, method and status", async () => {
    const registry = createMetricsRegistry(IDENTITY, { processMetrics: false });
    const http = new HttpServerMetrics(registry);
    http.observe("/projects", "POST", 201, 0.004);
    http.observe("/projects", "POST", 201, 0.2);
    http.inFlight = 2;
    const text = await registry.metrics();
    const labels = 'route="/projects",method="POST",status_code="201",service="demo"';
    expect(sampleValue(text, `http_server_requests_total{${labels}}`)).toBe(2);
    expect(sampleValue(text, `http_server_request_duration_seconds_count{${labels}}`)).toBe(2);
    expect(
      sampleValue(
        text,
        `http_server_request_duration_seconds_bucket{${labels.replace(",service", ',le="0.005",service')}}`,
      ),
    ).toBe(1);
    expect(sampleValue(text, 'http_server_requests_in_flight{service="demo"}')).toBe(2);
  });

  test("a method a client invents becomes _OTHER, so it cannot create series", () => {
    expect(["GET", "DELETE", "BREW", "get", "X".repeat(100)].map(httpMethodLabel)).toEqual([
      "GET",
      "DELETE",
      "_OTHER",
      "_OTHER",
      "_OTHER",
    ]);
    expect(statusCodeLabel(200)).toBe("200");
    expect(statusCodeLabel(200)).toBe(statusCodeLabel(200));
    expect(statusCodeLabel(1000)).toBe("other");
  });

  test("gRPC: calls by method and code, with their latency", async () => {
    const registry = createMetricsRegistry(IDENTITY, { processMetrics: false });
    const grpc = new GrpcServerMetrics(registry);
    grpc.observe("userverify.UserVerify/VerifyUser", "OK", 0.001);
    grpc.observe("userverify.UserVerify/VerifyUser", "INVALID_ARGUMENT", 0.001);
    const text = await registry.metrics();
    expect(
      sampleValue(
        text,
        'grpc_server_handled_total{grpc_method="userverify.UserVerify/VerifyUser",grpc_code="OK",service="demo"}',
      ),
    ).toBe(1);
    expect(
      sampleValue(
        text,
        'grpc_server_handling_seconds_count{grpc_method="userverify.UserVerify/VerifyUser",grpc_code="INVALID_ARGUMENT",service="demo"}',
      ),
    ).toBe(1);
  });
});
