import * as grpc from "@grpc/grpc-js";
import { trace } from "@opentelemetry/api";
import { createLogger } from "../../lib/log.ts";
import { requestIdOrNew } from "../../lib/request-id.ts";
import { metadataGetter, startServerSpan } from "../../lib/telemetry/spans.ts";
import { startTracing } from "../../lib/telemetry/tracing.ts";
import { AccessLog } from "../src/access-log.ts";
import { batchedStdout } from "../src/log-output.ts";

const identity = { service: "rpcapp", version: "dev", instance: "x" };
const tracing = await startTracing(identity, { env: {} });
const md = new grpc.Metadata();
md.set("x-request-id", "cost-run-1");
md.set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
const attrs = Object.freeze({ "rpc.system": "grpc", "rpc.service": "a.B", "rpc.method": "C" });
function bench(name: string, n: number, f: () => void) {
  for (let i = 0; i < n / 10; i++) f();
  const t = performance.now();
  for (let i = 0; i < n; i++) f();
  console.error(`${name}: ${(((performance.now() - t) * 1000) / n).toFixed(3)} µs`);
}
bench("requestIdOrNew", 200000, () => requestIdOrNew(md.get("x-request-id")[0]));
bench("startServerSpan+end", 200000, () => { const c = startServerSpan(tracing.tracer, "a.B/C", md, metadataGetter, "cost-run-1", attrs, true); trace.getSpan(c)!.end(); });
bench("metadata.set x3", 200000, () => { const m = new grpc.Metadata(); m.set("x-served-by", "x"); m.set("x-service-version", "dev"); m.set("x-request-id", "cost-run-1"); });
const log = createLogger(identity, { destination: batchedStdout() });
const al = new AccessLog(log);
const sc = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", traceFlags: 0 };
bench("accessLog.write (batched, flushed per tick)", 20000, () => al.write("info", { quotedMethod: '"a.B/C"', codeName: "OK", seconds: 0.000123, span: sc, requestId: "cost-run-1", peer: "127.0.0.1:1234" }));
const logSync = createLogger(identity);
bench("pino log.info sync", 20000, () => logSync.info({ method: "a.B/C", grpc_code: "OK", duration_ms: 0.123, request_id: "cost-run-1", peer: "127.0.0.1:1234" }, "rpc"));
