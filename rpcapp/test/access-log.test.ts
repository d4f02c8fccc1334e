/**
 * The access line of each RPC: its format against pino's own, the trace it names with and
 * without recorded spans, and probes (health checks, reflection) left out unless LOG_PROBES —
 * but counted in the metrics either way.
 */
import { afterAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { trace } from "@opentelemetry/api";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace";
import { createLogger } from "../../lib/log.ts";
import { createMetricsRegistry, GrpcServerMetrics } from "../../lib/telemetry/metrics.ts";
import { startTracing } from "../../lib/telemetry/tracing.ts";
import { waitFor } from "../../scripts/stack/testing/processes.ts";
import { AccessLog } from "../src/access-log.ts";
import { type InProcessRpcapp, startInProcess, TEST_IDENTITY } from "./fixtures.ts";

const CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN = "b7ad6b7169203331";
const ISO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
/** Every field of an access line, in the order pino writes them. */
const FIELDS = [
  "level",
  "time",
  "service",
  "version",
  "instance",
  "trace_id",
  "span_id",
  "request_id",
  "method",
  "grpc_code",
  "duration_ms",
  "peer",
  "msg",
];

// A test below starts tracing, whose provider may become the process's global one: leave none behind.
afterAll(() => trace.disable());

function callerMetadata(requestId: string, sampled: boolean): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set("x-request-id", requestId);
  metadata.set("traceparent", `00-${CALLER_TRACE}-${CALLER_SPAN}-${sampled ? "01" : "00"}`);
  return metadata;
}

async function lineOf(app: InProcessRpcapp, requestId: string): Promise<Record<string, unknown>> {
  await waitFor(`the access line of ${requestId}`, () => app.logs.some((l) => l.request_id === requestId));
  const lines = app.logs.filter((l) => l.request_id === requestId);
  expect(lines).toHaveLength(1);
  return lines[0]!;
}

async function withApp<T>(opts: Parameters<typeof startInProcess>[0], run: (app: InProcessRpcapp) => Promise<T>) {
  const app = await startInProcess(opts);
  try {
    return await run(app);
  } finally {
    await app.close();
  }
}

describe("AccessLog", () => {
  test("writes the line pino would write for the same fields, quoting what needs it", () => {
    const lines: string[] = [];
    const log = createLogger(TEST_IDENTITY, { destination: { write: (l) => void lines.push(l) }, mixin: () => ({}) });
    const method = 'odd.Service/"Quoted"';
    const peer = 'ipv6:[::1]:5 "and more"';
    new AccessLog(log).write("error", {
      quotedMethod: JSON.stringify(method),
      codeName: "INTERNAL",
      seconds: 0.0015,
      span: { traceId: CALLER_TRACE, spanId: CALLER_SPAN, traceFlags: 1 },
      requestId: "req-1",
      peer,
    });
    const fields = { trace_id: CALLER_TRACE, span_id: CALLER_SPAN, request_id: "req-1", method };
    log.error({ ...fields, grpc_code: "INTERNAL", duration_ms: 1.5, peer }, "rpc");

    expect(lines).toHaveLength(2);
    expect(lines[0]).toEndWith("}\n");
    const [ours, pinos] = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(Object.keys(ours!)).toEqual(Object.keys(pinos!));
    expect({ ...ours, time: "" }).toEqual({ ...pinos, time: "" });
    expect(ours!.time).toMatch(ISO_TIME);
    expect(ours!.level).toBe("error");
  });

  test("writes nothing below the logger's level", () => {
    const lines: string[] = [];
    const log = createLogger(TEST_IDENTITY, { level: "warn", destination: { write: (l) => void lines.push(l) } });
    const entry = { quotedMethod: '"a.B/C"', codeName: "OK", seconds: 0, span: undefined, requestId: "r", peer: "p" };
    new AccessLog(log).write("info", entry);
    expect(lines).toEqual([]);
    new AccessLog(log).write("error", entry);
    expect(lines).toHaveLength(1);
  });
});

describe("the access line of a call", () => {
  test("without recorded spans, continues the caller's trace under a span id of its own", async () => {
    await withApp({ telemetry: { recording: false } }, async (app) => {
      const { reply } = await app.clients.verifyUser({ id: 7, token: "t" }, callerMetadata("acc-unrecorded", true));
      expect(reply).toEqual({ message: "Verified: 7" });
      const line = await lineOf(app, "acc-unrecorded");
      expect(Object.keys(line)).toEqual(FIELDS);
      expect(line).toMatchObject({
        level: "info",
        service: "rpcapp",
        version: TEST_IDENTITY.version,
        instance: TEST_IDENTITY.instance,
        trace_id: CALLER_TRACE,
        method: "userverify.UserVerify/VerifyUser",
        grpc_code: "OK",
        msg: "rpc",
      });
      expect(line.span_id).toMatch(/^[0-9a-f]{16}$/);
      expect(line.span_id).not.toBe(CALLER_SPAN);
      expect(line.time).toMatch(ISO_TIME);
      expect(line.duration_ms).toBeNumber();
      expect(line.peer).toMatch(/^127\.0\.0\.1:\d+$/);
    });
  });

  test("with recorded spans, names the server span, a child of the caller's, with the rpc attributes", async () => {
    const exporter = new InMemorySpanExporter();
    const tracing = await startTracing(TEST_IDENTITY, { env: { OTEL_BSP_SCHEDULE_DELAY: "60000" }, exporter });
    try {
      await withApp({ telemetry: { tracer: tracing.tracer, recording: true } }, async (app) => {
        await app.clients.verifyUser({ id: 0, token: "" }, callerMetadata("acc-recorded", true));
        const line = await lineOf(app, "acc-recorded");
        await tracing.flush();
        const spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === CALLER_TRACE);
        expect(spans).toHaveLength(1);
        const span = spans[0]!;
        expect(span.name).toBe("userverify.UserVerify/VerifyUser");
        expect(span.parentSpanContext?.spanId).toBe(CALLER_SPAN);
        expect(span.attributes).toMatchObject({
          "rpc.system": "grpc",
          "rpc.service": "userverify.UserVerify",
          "rpc.method": "VerifyUser",
          "rpc.grpc.status_code": grpc.status.INVALID_ARGUMENT,
          "portico.request_id": "acc-recorded",
        });
        expect(line).toMatchObject({
          trace_id: CALLER_TRACE,
          span_id: span.spanContext().spanId,
          grpc_code: "INVALID_ARGUMENT",
          level: "info",
        });
      });
    } finally {
      await tracing.shutdown();
    }
  });
});

describe("probes", () => {
  test("health checks and reflection write no access line by default, but are counted", async () => {
    const metrics = new GrpcServerMetrics(createMetricsRegistry(TEST_IDENTITY, { processMetrics: false }));
    await withApp({ telemetry: { metrics } }, async (app) => {
      expect((await app.clients.check("")).reply).toEqual({ status: "SERVING" });
      expect((await app.clients.check("no.such.Service")).error?.code).toBe(grpc.status.NOT_FOUND);
      expect(await app.clients.listServices()).toContain("userverify.UserVerify");
      // Lines keep their order: once this call's line is there, a probe's would be too.
      await app.clients.verifyUser({ id: 1, token: "t" }, callerMetadata("after-probes", false));
      await lineOf(app, "after-probes");

      expect(app.logs.filter((l) => l.msg === "rpc").map((l) => l.method)).toEqual([
        "userverify.UserVerify/VerifyUser",
      ]);
      expect(metrics.calls.get("grpc.health.v1.Health/Check", "OK").count).toBe(1);
      expect(metrics.calls.get("grpc.health.v1.Health/Check", "NOT_FOUND").count).toBe(1);
      expect(metrics.calls.get("grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "OK").count).toBe(1);
      expect(metrics.calls.get("userverify.UserVerify/VerifyUser", "OK").count).toBe(1);
      expect(metrics.inFlight).toBe(0);
    });
  });

  test("with logProbes (LOG_PROBES=true), health checks and reflection are logged too", async () => {
    await withApp({ logProbes: true }, async (app) => {
      await app.clients.check("");
      await app.clients.listServices();
      await waitFor("two probe lines", () => app.logs.filter((l) => l.msg === "rpc").length === 2);
      const lines = app.logs.filter((l) => l.msg === "rpc");
      expect(lines.map((l) => [l.method, l.grpc_code])).toEqual([
        ["grpc.health.v1.Health/Check", "OK"],
        ["grpc.reflection.v1.ServerReflection/ServerReflectionInfo", "OK"],
      ]);
      // Ids to correlate by, even for a health check, which never records a span.
      expect(lines[0]!.trace_id).toMatch(/^[0-9a-f]{32}$/);
      expect(lines[0]!.request_id).toMatch(/^[0-9a-f-]{36}$/);
    });
  });
});
