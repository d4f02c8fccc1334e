import { afterEach, describe, expect, test } from "bun:test";
import { diag, DiagLogLevel, SpanKind } from "@opentelemetry/api";
import { ExportResultCode, type ExportResult } from "@opentelemetry/core";
import type { IOtlpExportDelegate } from "@opentelemetry/otlp-exporter-base";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { AlwaysOffSampler, AlwaysOnSampler, type Sampler, TracerProvider } from "@opentelemetry/sdk-trace";
import {
  otlpProtobufDelegate,
  SERIALIZE_EVERY,
  type SerializedSpans,
  SerializingBatchSpanProcessor,
  type SpanBatchOptions,
} from "./span-batches.ts";
import { decodeProtobuf, otlpAccepted, type OtlpTraces, otlpTraces, plainAttributes } from "./testing/otlp.ts";

const OPTIONS: SpanBatchOptions = {
  scheduledDelayMillis: 600_000,
  maxQueueSize: 4096,
  maxExportBatchSize: 512,
  exportTimeoutMillis: 30_000,
};

/** A delegate that keeps what it is handed and answers when the test says. */
function recordingDelegate(answer: "at-once" | "never" = "at-once") {
  const batches: { spans: number; traces: OtlpTraces }[] = [];
  const pending: ((result: ExportResult) => void)[] = [];
  let shutDown = false;
  const delegate: IOtlpExportDelegate<SerializedSpans> = {
    export(batch, done) {
      const body = Bun.concatArrayBuffers(batch.groups, Infinity, true);
      batches.push({ spans: batch.spans, traces: decodeProtobuf(body) });
      if (answer === "at-once") done({ code: ExportResultCode.SUCCESS });
      else pending.push(done);
    },
    forceFlush: async () => {},
    shutdown: async () => {
      shutDown = true;
    },
    setMetrics() {},
  };
  return { delegate, batches, pending, isShutDown: () => shutDown };
}

function spansOf(traces: OtlpTraces) {
  return traces.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans));
}

function providerWith(processor: SerializingBatchSpanProcessor, sampler: Sampler = new AlwaysOnSampler()) {
  const provider = new TracerProvider({
    resource: resourceFromAttributes({ "service.name": "demo", "service.instance.id": "demo-1" }),
    sampler,
    spanProcessors: [processor],
  });
  const tracer = provider.getTracer("portico", "1.0.0");
  return {
    provider,
    /** Ends `n` spans named span-<first + i>. */
    endSpans(n: number, first = 0) {
      for (let i = 0; i < n; i++)
        tracer.startSpan(`span-${first + i}`, { kind: SpanKind.SERVER, attributes: { i: first + i } }).end();
    },
  };
}

afterEach(() => diag.disable());

describe("SerializingBatchSpanProcessor", () => {
  test("spans are serialized in groups as they end and exported together; every span arrives once, whole", async () => {
    const { delegate, batches } = recordingDelegate();
    const { endSpans, provider } = providerWith(new SerializingBatchSpanProcessor(delegate, OPTIONS));
    endSpans(100);
    expect(batches).toHaveLength(0);
    await provider.forceFlush();
    expect(batches).toHaveLength(1);
    const [batch] = batches;
    // Three full groups and the partial one serialized at the flush, each its own resource_spans.
    expect(batch!.traces.resourceSpans.map((r) => r.scopeSpans[0]!.spans.length)).toEqual([
      SERIALIZE_EVERY,
      SERIALIZE_EVERY,
      SERIALIZE_EVERY,
      100 - 3 * SERIALIZE_EVERY,
    ]);
    expect(batch!.spans).toBe(100);
    const spans = spansOf(batch!.traces);
    expect(spans.map((s) => s.name)).toEqual(Array.from({ length: 100 }, (_, i) => `span-${i}`));
    expect(new Set(spans.map((s) => s.spanId)).size).toBe(100);
    expect(plainAttributes(spans[42]!.attributes)).toEqual({ i: 42 });
    for (const r of batch!.traces.resourceSpans)
      expect(plainAttributes(r.resource.attributes)).toMatchObject({
        "service.name": "demo",
        "service.instance.id": "demo-1",
      });
  });

  test("a full batch is exported at once, at most maxExportBatchSize spans each; the rest on the schedule", async () => {
    const { delegate, batches } = recordingDelegate();
    const { endSpans } = providerWith(
      new SerializingBatchSpanProcessor(delegate, { ...OPTIONS, maxExportBatchSize: 40, scheduledDelayMillis: 50 }),
    );
    endSpans(90);
    // 40 reached: an export of the whole groups that fit (32), never more than 40…
    expect(batches.map((b) => b.spans)).toEqual([32]);
    // …and, once it is answered, the next full batch at once.
    await Bun.sleep(1);
    expect(batches.map((b) => b.spans)).toEqual([32, 32]);
    await Bun.sleep(200);
    expect(batches.map((b) => b.spans)).toEqual([32, 32, 26]);
    expect(batches.flatMap((b) => spansOf(b.traces).map((s) => s.name))).toEqual(
      Array.from({ length: 90 }, (_, i) => `span-${i}`),
    );
  });

  test("one export at a time; spans past maxQueueSize are dropped and the drop is logged", async () => {
    const warnings: string[] = [];
    diag.setLogger(
      { error() {}, warn: (m: string) => void warnings.push(m), info() {}, debug() {}, verbose() {} },
      DiagLogLevel.WARN,
    );
    const { delegate, batches, pending } = recordingDelegate("never");
    const { endSpans } = providerWith(
      new SerializingBatchSpanProcessor(delegate, { ...OPTIONS, maxQueueSize: 64, maxExportBatchSize: 32 }),
    );
    endSpans(32);
    expect(batches.map((b) => b.spans)).toEqual([32]);
    // The collector has not answered: the queue fills (64), and what comes after is dropped.
    endSpans(70, 32);
    expect(batches).toHaveLength(1);
    pending[0]!({ code: ExportResultCode.SUCCESS });
    await Bun.sleep(10);
    // The answer lets the next export go; a span accepted again reports the 6 dropped.
    expect(batches.map((b) => b.spans)).toEqual([32, 32]);
    endSpans(1, 500);
    expect(warnings).toEqual(["Dropped 6 spans because maxQueueSize reached"]);
    expect(spansOf(batches[1]!.traces)[0]!.name).toBe("span-32");
  });

  test("a flush waits for its exports; one that outlasts the export timeout rejects the flush", async () => {
    const { delegate } = recordingDelegate("never");
    const processor = new SerializingBatchSpanProcessor(delegate, { ...OPTIONS, exportTimeoutMillis: 100 });
    const { endSpans } = providerWith(processor);
    endSpans(3);
    const started = performance.now();
    const outcome = await processor.forceFlush().then(
      () => "flushed",
      (err: unknown) => String(err),
    );
    expect(outcome).toContain("Timeout");
    expect(performance.now() - started).toBeLessThan(3_000);
  });

  test("unsampled spans are not exported; shutdown exports what is left, shuts the delegate and takes no more", async () => {
    const { delegate, batches, isShutDown } = recordingDelegate();
    const off = providerWith(new SerializingBatchSpanProcessor(delegate, OPTIONS), new AlwaysOffSampler());
    off.endSpans(5);
    await off.provider.forceFlush();
    expect(batches).toHaveLength(0);

    const processor = new SerializingBatchSpanProcessor(delegate, OPTIONS);
    const { endSpans } = providerWith(processor);
    endSpans(5);
    await processor.shutdown();
    expect(isShutDown()).toBe(true);
    expect(batches.map((b) => b.spans)).toEqual([5]);
    endSpans(5, 5);
    await processor.forceFlush();
    expect(batches).toHaveLength(1);
  });

  test("through the library's delegate to a real receiver: one OTLP/protobuf request of many groups", async () => {
    const exports: { contentType: string; traces: OtlpTraces; encoding: string | null }[] = [];
    const receiver = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(req) {
        const { traces, contentType } = await otlpTraces(req);
        exports.push({ contentType, traces, encoding: req.headers.get("content-encoding") });
        return otlpAccepted(contentType);
      },
    });
    try {
      const processor = new SerializingBatchSpanProcessor(
        otlpProtobufDelegate({ url: `http://127.0.0.1:${receiver.port}/v1/traces`, compression: "gzip" as never }),
        OPTIONS,
      );
      const { endSpans } = providerWith(processor);
      endSpans(200);
      await processor.shutdown();
    } finally {
      receiver.stop(true);
    }
    expect(exports).toHaveLength(1);
    expect([exports[0]!.contentType, exports[0]!.encoding]).toEqual(["application/x-protobuf", "gzip"]);
    expect(exports[0]!.traces.resourceSpans).toHaveLength(Math.ceil(200 / SERIALIZE_EVERY));
    const spans = spansOf(exports[0]!.traces);
    expect(spans.map((s) => s.name)).toEqual(Array.from({ length: 200 }, (_, i) => `span-${i}`));
    expect(spans.every((s) => s.traceId.length === 32 && s.kind === 2)).toBe(true);
  });

  test("an export the collector refuses is reported and the next batches still go out", async () => {
    const errors: string[] = [];
    diag.setLogger(
      {
        error: (m: string, ...rest: unknown[]) => void errors.push([m, ...rest.map(String)].join(" ")),
        warn() {},
        info() {},
        debug() {},
        verbose() {},
      },
      DiagLogLevel.ERROR,
    );
    let requests = 0;
    const received: string[] = [];
    const receiver = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(req) {
        const { traces, contentType } = await otlpTraces(req);
        // The first export is refused with a status OTLP says not to retry.
        if (requests++ === 0) return new Response("bad", { status: 400 });
        received.push(...spansOf(traces).map((s) => s.name));
        return otlpAccepted(contentType);
      },
    });
    try {
      const processor = new SerializingBatchSpanProcessor(
        otlpProtobufDelegate({ url: `http://127.0.0.1:${receiver.port}/v1/traces`, timeoutMillis: 2000 }),
        { ...OPTIONS, maxExportBatchSize: 4 },
      );
      const { endSpans } = providerWith(processor);
      endSpans(4);
      for (let i = 0; i < 100 && errors.length === 0; i++) await Bun.sleep(10);
      // Two full batches: they go out on their own, without a flush.
      endSpans(8, 4);
      for (let i = 0; i < 200 && received.length < 8; i++) await Bun.sleep(10);
    } finally {
      receiver.stop(true);
    }
    expect(requests).toBe(3);
    expect(errors.length).toBeGreaterThan(0);
    expect(errors.join("\n")).toContain("400");
    expect(received.sort()).toEqual(Array.from({ length: 8 }, (_, i) => `span-${i + 4}`).sort());
  });
});
