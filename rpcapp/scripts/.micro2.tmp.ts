import * as grpc from "@grpc/grpc-js";
import { ROOT_CONTEXT, SpanKind, trace } from "@opentelemetry/api";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { RandomIdGenerator } from "@opentelemetry/sdk-trace";
import { metadataGetter } from "../../lib/telemetry/spans.ts";
import { startTracing } from "../../lib/telemetry/tracing.ts";

const identity = { service: "rpcapp", version: "dev", instance: "x" };
const tracing = await startTracing(identity, { env: {} });
const md = new grpc.Metadata();
md.set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
const attrs = Object.freeze({ "rpc.system": "grpc", "rpc.service": "a.B", "rpc.method": "C" });
const p = new W3CTraceContextPropagator();
const ids = new RandomIdGenerator();
function bench(name: string, n: number, f: () => void) {
  for (let i = 0; i < n / 5; i++) f();
  const t = performance.now();
  for (let i = 0; i < n; i++) f();
  console.log(`${name}: ${(((performance.now() - t) * 1000) / n).toFixed(3)} µs`);
}
const parent = p.extract(ROOT_CONTEXT, md, metadataGetter);
for (let r = 0; r < 2; r++) {
bench("extract", 200000, () => p.extract(ROOT_CONTEXT, md, metadataGetter));
bench("generateSpanId", 200000, () => ids.generateSpanId());
bench("startSpan (attrs)", 200000, () => tracing.tracer.startSpan("a.B/C", { kind: SpanKind.SERVER, attributes: attrs }, parent));
bench("startSpan (no attrs)", 200000, () => tracing.tracer.startSpan("a.B/C", { kind: SpanKind.SERVER }, parent));
bench("setSpan", 200000, () => trace.setSpan(parent, trace.wrapSpanContext({ traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", traceFlags: 0 })));
}
