/**
 * The trace context of a gateway that records no spans (no exporter: telemetry/index.ts with
 * `recording: false`): no SDK span is made, yet the caller's trace continues — same trace id,
 * a fresh span id, the sampled flag kept — or a new valid one starts, and the upstream gets a
 * `traceparent` naming the gateway's span; log lines see the ids (lib/telemetry/spans.ts).
 */
import { describe, expect, test } from "bun:test";
import { context, trace } from "@opentelemetry/api";
import { logFieldsOf } from "../../lib/telemetry/spans.ts";
import { installContextManager } from "../../lib/telemetry/tracing.ts";
import { GatewayTelemetry } from "../src/telemetry/index.ts";
import { Endpoint } from "../src/upstream/endpoint.ts";

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$/;
const CALLER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
// As in the gateway process (startTracing installs it): a request runs in its scope's context.
installContextManager();
const breaker = { consecutiveFailures: 5, halfOpenAfterMs: 1000, maxHalfOpenAfterMs: 10_000 };

function forward(
  telemetry: GatewayTelemetry,
  incoming: Headers,
): { scope: ReturnType<GatewayTelemetry["begin"]>; sent: string } {
  const scope = telemetry.begin(incoming, "req-1", "GET", "/p");
  const endpoint = new Endpoint("127.0.0.1:1", "http", breaker, 10);
  context.with(scope, () => {
    const hooks = telemetry.httpTries("up", "GET", "/p", incoming);
    const token = hooks.beforeTry(endpoint);
    hooks.onTry(token, endpoint, { kind: "timeout" }, "timeout", 1);
  });
  endpoint.close();
  return { scope, sent: incoming.get("traceparent") ?? "" };
}

describe("trace context without recording", () => {
  const telemetry = new GatewayTelemetry({ recording: false });

  test("a caller's traceparent is continued: its trace id and sampled flag, the gateway's own span id", () => {
    const { scope, sent } = forward(telemetry, new Headers({ traceparent: CALLER }));
    const [, traceId, spanId, flags] = TRACEPARENT.exec(sent)!;
    expect(traceId).toBe("0af7651916cd43dd8448eb211c80319c");
    expect(spanId).not.toBe("b7ad6b7169203331");
    expect(flags).toBe("01");
    expect(trace.getSpan(scope)!.isRecording()).toBe(false);
    expect(logFieldsOf(scope)).toEqual({ trace_id: traceId!, span_id: spanId!, request_id: "req-1" });
  });

  test("without one (or with an invalid one) a new trace starts, unsampled, with valid non-zero ids", () => {
    const ids = new Set<string>();
    for (const incoming of [
      new Headers(),
      new Headers({ traceparent: "00-00000000000000000000000000000000-b7ad6b7169203331-01" }),
    ]) {
      for (let i = 0; i < 200; i++) {
        const { sent } = forward(telemetry, new Headers(incoming));
        const [, traceId, spanId, flags] = TRACEPARENT.exec(sent)!;
        expect(flags).toBe("00");
        expect(/^0+$/.test(traceId!) || /^0+$/.test(spanId!)).toBe(false);
        ids.add(traceId!);
      }
    }
    expect(ids.size).toBe(400);
  });
});
