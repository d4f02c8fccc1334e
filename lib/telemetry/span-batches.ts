/**
 * The span processor behind OTLP/protobuf export (tracing.ts): the SDK's BatchSpanProcessor's
 * contract — the OTEL_BSP_* settings, sampled spans only, one export at a time, at most
 * `maxExportBatchSize` spans per export, every `scheduledDelayMillis` or as soon as a batch is
 * full, spans dropped (and the drop logged) once `maxQueueSize` wait — with one difference in how.
 * Spans are serialized in groups of SERIALIZE_EVERY as they end, while they are still in the CPU's
 * caches, and an export sends the groups' bytes together: an ExportTraceServiceRequest is one
 * repeated field (`resource_spans`), so serialized requests concatenate into one. The serializer
 * is the exporter library's own (`ProtobufTraceSerializer`); the sending — retries, headers,
 * compression, TLS, the export timeout — its export delegate's, configured as its
 * OTLPTraceExporter configures it.
 *
 * A span is serialized with its resource as it is then: tracing.ts makes the resource from plain
 * attributes (no detectors), so none is ever still waiting for asynchronous attributes, which the
 * SDK's processor would wait for before an export.
 *
 * Why: serializing 512 spans at export time, long after most of them ended, cost the gateway
 * ~7.5 µs per request under load where the same serialization costs ~1.5 in a loop — the spans
 * had been pushed out of the caches by the requests since. bench/README.md has the figures.
 */
import { context, diag, TraceFlags } from "@opentelemetry/api";
import { ExportResultCode, globalErrorHandler, suppressTracing } from "@opentelemetry/core";
import type { IOtlpExportDelegate } from "@opentelemetry/otlp-exporter-base";
import { convertLegacyHttpOptions, createOtlpHttpExportDelegate } from "@opentelemetry/otlp-exporter-base/node-http";
import type { OTLPExporterNodeConfigBase } from "@opentelemetry/otlp-exporter-base/node-http";
import { ProtobufTraceSerializer } from "@opentelemetry/otlp-transformer";
import type { ReadableSpan, SpanProcessor } from "@opentelemetry/sdk-trace";
import type { ExportSender } from "./renewing-sender.ts";

/** Spans serialized together as they end: small enough to be still cached, large enough that a group's resource and scope (repeated per group) stay a few per cent of the body. */
export const SERIALIZE_EVERY = 32;

/** Serialized spans, as the export delegate is handed them. */
export interface SerializedSpans {
  /** ExportTraceServiceRequest messages, each a group of spans. */
  groups: Uint8Array[];
  /** How many spans they hold. */
  spans: number;
}

export interface SpanBatchOptions {
  scheduledDelayMillis: number;
  maxQueueSize: number;
  maxExportBatchSize: number;
  exportTimeoutMillis: number;
}

/** The export delegate of the library's OTLPTraceExporter (http/protobuf), taking serialized groups. */
export function otlpProtobufDelegate(config: OTLPExporterNodeConfigBase): IOtlpExportDelegate<SerializedSpans> {
  return createOtlpHttpExportDelegate(
    convertLegacyHttpOptions(config, "TRACES", "v1/traces", { "Content-Type": "application/x-protobuf" }),
    {
      serializeRequest: (batch: SerializedSpans) =>
        batch.groups.length === 1 ? batch.groups[0]! : Bun.concatArrayBuffers(batch.groups, Infinity, true),
      deserializeResponse: ProtobufTraceSerializer.deserializeResponse,
    },
    "otlp_http_span_exporter",
    { name: "span", countItems: (batch: SerializedSpans) => batch.spans },
    undefined,
  );
}

export class SerializingBatchSpanProcessor implements SpanProcessor {
  readonly #delegate: ExportSender<SerializedSpans>;
  readonly #options: SpanBatchOptions;
  readonly #groupSize: number;
  /** Ended, not yet serialized (fewer than a group). */
  #ended: ReadableSpan[] = [];
  /** Serialized, not yet exported: each group's ExportTraceServiceRequest and how many spans it holds. */
  #groups: { bytes: Uint8Array; spans: number }[] = [];
  /** Spans waiting: in #ended and #groups. */
  #queued = 0;
  #dropped = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** The export under way (one at a time). */
  #exporting: Promise<void> | undefined;
  #shutdown: Promise<void> | undefined;
  /** Flushes under way: an export ending then leaves what is left to them. */
  #flushing = 0;

  constructor(delegate: ExportSender<SerializedSpans>, options: SpanBatchOptions) {
    this.#delegate = delegate;
    if (options.maxExportBatchSize > options.maxQueueSize) {
      diag.warn("maxExportBatchSize is larger than maxQueueSize: exporting at most maxQueueSize spans at a time");
      options = { ...options, maxExportBatchSize: options.maxQueueSize };
    }
    this.#options = options;
    this.#groupSize = Math.min(SERIALIZE_EVERY, options.maxExportBatchSize);
  }

  onStart(): void {}

  onEnd(span: ReadableSpan): void {
    if (this.#shutdown || (span.spanContext().traceFlags & TraceFlags.SAMPLED) === 0) return;
    if (this.#queued >= this.#options.maxQueueSize) {
      if (this.#dropped++ === 0) diag.debug("maxQueueSize reached, dropping spans");
      return;
    }
    if (this.#dropped > 0) {
      diag.warn(`Dropped ${this.#dropped} spans because maxQueueSize reached`);
      this.#dropped = 0;
    }
    this.#ended.push(span);
    this.#queued++;
    if (this.#ended.length >= this.#groupSize) this.#serializeEnded();
    this.#schedule();
  }

  forceFlush(): Promise<void> {
    return this.#shutdown ?? this.#flushAll();
  }

  shutdown(): Promise<void> {
    this.#shutdown ??= this.#flushAll().then(() => this.#delegate.shutdown());
    return this.#shutdown;
  }

  /** The spans in #ended, serialized into one group; a group the serializer refuses is dropped, logged. */
  #serializeEnded(): void {
    const spans = this.#ended;
    this.#ended = [];
    try {
      this.#groups.push({ bytes: ProtobufTraceSerializer.serializeRequest(spans)!, spans: spans.length });
    } catch (err) {
      this.#queued -= spans.length;
      globalErrorHandler(err as Error);
    }
  }

  /** An export now when a batch is full, otherwise one after the delay; nothing while one is under way. */
  #schedule(): void {
    if (this.#exporting) return;
    if (this.#queued >= this.#options.maxExportBatchSize) this.#startExport();
    else if (this.#timer === undefined) {
      this.#timer = setTimeout(() => this.#startExport(), this.#options.scheduledDelayMillis);
      this.#timer.unref();
    }
  }

  #startExport(): void {
    this.#clearTimer();
    if (this.#exporting || this.#queued === 0) return;
    this.#exporting = this.#exportOne()
      .catch((err: Error) => globalErrorHandler(err))
      .finally(() => {
        this.#exporting = undefined;
        if (this.#queued > 0 && this.#flushing === 0) this.#schedule();
      });
  }

  #clearTimer(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** Exports every span waiting, a batch at a time, after the export under way. */
  async #flushAll(): Promise<void> {
    this.#flushing++;
    try {
      this.#clearTimer();
      await this.#exporting;
      const exports: Promise<void>[] = [];
      while (this.#queued > 0) exports.push(this.#exportOne());
      await Promise.all(exports);
    } finally {
      this.#flushing--;
    }
  }

  /** Sends up to a batch of the waiting spans; rejects when the export fails or outlasts the export timeout. */
  #exportOne(): Promise<void> {
    const max = this.#options.maxExportBatchSize;
    // A partial batch goes out as it is: its last, partial group is serialized now.
    if (this.#ended.length > 0 && (this.#groups.length === 0 || this.#queued < max)) this.#serializeEnded();
    let spans = 0;
    let taken = 0;
    while (taken < this.#groups.length && spans + this.#groups[taken]!.spans <= max)
      spans += this.#groups[taken++]!.spans;
    const batch: SerializedSpans = { groups: this.#groups.splice(0, taken).map((group) => group.bytes), spans };
    this.#queued -= spans;
    if (spans === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("Timeout")), this.#options.exportTimeoutMillis);
      context.with(suppressTracing(context.active()), () =>
        this.#delegate.export(batch, (result) => {
          clearTimeout(timer);
          if (result.code === ExportResultCode.SUCCESS) resolve();
          else reject(result.error ?? new Error("span export failed"));
        }),
      );
    });
  }
}
