import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { context, ROOT_CONTEXT, SpanKind, trace, TraceFlags } from "@opentelemetry/api";
import { ExportResultCode } from "@opentelemetry/core";
import { InMemorySpanExporter, type ReadableSpan, SamplingDecision, type SpanExporter } from "@opentelemetry/sdk-trace";
import { createCa, issue } from "../../scripts/tls/pki.ts";
import { EnvError } from "../env.ts";
import { createLogger } from "../log.ts";
import {
  endHttpSpan,
  headersGetter,
  headersSetter,
  logFieldsOf,
  metadataGetter,
  metadataSetter,
  requestIdOf,
  startClientSpan,
  startServerSpan,
} from "./spans.ts";
import { otlpAccepted, type OtlpTraces, otlpTraces, plainAttributes } from "./testing/otlp.ts";
import { samplerFor, startTracing, tracingConfigFromEnv } from "./tracing.ts";

const IDENTITY = { service: "demo", version: "1.2.3", instance: "demo-1" };
const CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN = "b7ad6b7169203331";
const sampledParent = `00-${CALLER_TRACE}-${CALLER_SPAN}-01`;
/** OTLP's SpanKind numbers from 1 for INTERNAL (the API's from 0): SERVER is 2 on the wire. */
const OTLP_SPAN_KIND_SERVER = 2;

// The first provider started here became the process's global one: leave none behind for other files.
afterAll(() => trace.disable());

/** Tracing that records into memory, as it would export to OTLP. */
async function recordingTracing(scheduleDelayMs = 60_000) {
  const exporter = new InMemorySpanExporter();
  const tracing = await startTracing(IDENTITY, { env: { OTEL_BSP_SCHEDULE_DELAY: String(scheduleDelayMs) }, exporter });
  return { tracing, exporter };
}

/** A minimal stand-in for grpc-js Metadata (string values only). */
function fakeMetadata() {
  const map = new Map<string, string>();
  return {
    get: (k: string) => (map.has(k) ? [map.get(k)!] : []),
    set: (k: string, v: string) => void map.set(k, v),
    getMap: () => Object.fromEntries(map),
    map,
  };
}

describe("configuration from the OTEL_* environment", () => {
  test("defaults: export nothing, sample parent-based always-on, batch every 5 s", () => {
    expect(tracingConfigFromEnv({})).toEqual({
      tracesUrl: undefined,
      protocol: "http/protobuf",
      headers: {},
      compression: "none",
      exportTimeoutMs: 5000,
      tls: undefined,
      readTls: undefined,
      tlsReloadIntervalMs: 5000,
      sampler: "parentbased_always_on",
      ratio: 1,
      scheduleDelayMs: 5000,
      maxQueueSize: 4096,
      maxExportBatchSize: 512,
      batchExportTimeoutMs: 30_000,
      resourceAttributes: {},
    });
  });

  test("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is the traces URL as given, and wins over the base URL", () => {
    expect(
      tracingConfigFromEnv({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://otlp.example.com/otlp/v1/traces" }).tracesUrl,
    ).toBe("https://otlp.example.com/otlp/v1/traces");
    expect(
      tracingConfigFromEnv({
        OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://collector:4318/traces",
      }).tracesUrl,
    ).toBe("http://collector:4318/traces");
  });

  test("headers, compression and timeouts: the traces variable wins over the general one (per header)", () => {
    const config = tracingConfigFromEnv({
      OTEL_EXPORTER_OTLP_HEADERS: "x-api-key=general, x-tenant = acme%2Ceu ,,",
      OTEL_EXPORTER_OTLP_TRACES_HEADERS: "x-api-key=s3cr%3Dt",
      OTEL_EXPORTER_OTLP_COMPRESSION: "gzip",
      OTEL_EXPORTER_OTLP_TIMEOUT: "7000",
      OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: "3000",
    });
    expect(config.headers).toEqual({ "x-api-key": "s3cr=t", "x-tenant": "acme,eu" });
    expect(config.compression).toBe("gzip");
    expect(config.exportTimeoutMs).toBe(3000);
    expect(
      tracingConfigFromEnv({ OTEL_EXPORTER_OTLP_COMPRESSION: "gzip", OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: "none" })
        .compression,
    ).toBe("none");
    expect(tracingConfigFromEnv({ OTEL_EXPORTER_OTLP_TIMEOUT: "7000" }).exportTimeoutMs).toBe(7000);
  });

  test("the batch processor's sizes and timeout; resource attributes", () => {
    const config = tracingConfigFromEnv({
      OTEL_BSP_MAX_QUEUE_SIZE: "100",
      OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "100",
      OTEL_BSP_EXPORT_TIMEOUT: "2500",
      OTEL_RESOURCE_ATTRIBUTES: "deployment.environment.name=prod, k8s.namespace.name = portico ,team=a%3Db",
    });
    expect([config.maxQueueSize, config.maxExportBatchSize, config.batchExportTimeoutMs]).toEqual([100, 100, 2500]);
    expect(config.resourceAttributes).toEqual({
      "deployment.environment.name": "prod",
      "k8s.namespace.name": "portico",
      team: "a=b",
    });
  });

  test("OTEL_BSP_EXPORT_TIMEOUT bounds an export that never answers", async () => {
    const exporter: SpanExporter = { export: () => {}, shutdown: async () => {} };
    const tracing = await startTracing(IDENTITY, {
      env: { OTEL_BSP_SCHEDULE_DELAY: "600000", OTEL_BSP_EXPORT_TIMEOUT: "100" },
      exporter,
    });
    trace.getSpan(startServerSpan(tracing.tracer, "GET", new Headers(), headersGetter, "req-stuck", {}))!.end();
    const started = performance.now();
    // With the default (30 s) the flush would outlast this test's 5 s.
    const outcome = await tracing.flush().then(
      () => "flushed",
      (err: unknown) => String(err),
    );
    expect(outcome).toContain("Timeout");
    expect(performance.now() - started).toBeLessThan(3_000);
  });

  test("OTEL_EXPORTER_OTLP_ENDPOINT is a base URL: spans go to its /v1/traces", () => {
    expect(tracingConfigFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger-collector:4318" }).tracesUrl).toBe(
      "http://jaeger-collector:4318/v1/traces",
    );
    expect(tracingConfigFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger-collector:4318/" }).tracesUrl).toBe(
      "http://jaeger-collector:4318/v1/traces",
    );
  });

  test("the encoding: http/protobuf unless OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL says http/json; the traces one wins", () => {
    expect(tracingConfigFromEnv({ OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" }).protocol).toBe("http/json");
    expect(tracingConfigFromEnv({ OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/json" }).protocol).toBe("http/json");
    expect(
      tracingConfigFromEnv({
        OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
        OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/protobuf",
      }).protocol,
    ).toBe("http/protobuf");
  });

  test("a bad value stops start-up with a message naming the variable", () => {
    const bad: [Record<string, string>, string][] = [
      [{ OTEL_EXPORTER_OTLP_ENDPOINT: "jaeger:4318" }, "OTEL_EXPORTER_OTLP_ENDPOINT"],
      [{ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318 oops" }, "OTEL_EXPORTER_OTLP_ENDPOINT"],
      [{ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:99999" }, "OTEL_EXPORTER_OTLP_ENDPOINT"],
      [{ OTEL_EXPORTER_OTLP_ENDPOINT: "http://:::" }, "OTEL_EXPORTER_OTLP_ENDPOINT"],
      [{ OTEL_EXPORTER_OTLP_ENDPOINT: "http://jaeger:4318?x=1" }, "OTEL_EXPORTER_OTLP_ENDPOINT"],
      [{ OTEL_EXPORTER_OTLP_ENDPOINT: "ftp://jaeger:4318" }, "OTEL_EXPORTER_OTLP_ENDPOINT"],
      [{ OTEL_TRACES_SAMPLER: "sometimes" }, "OTEL_TRACES_SAMPLER"],
      [{ OTEL_TRACES_SAMPLER_ARG: "1.5" }, "OTEL_TRACES_SAMPLER_ARG"],
      [{ OTEL_TRACES_SAMPLER_ARG: "half" }, "OTEL_TRACES_SAMPLER_ARG"],
      [{ OTEL_BSP_SCHEDULE_DELAY: "0" }, "OTEL_BSP_SCHEDULE_DELAY"],
      // OTLP over gRPC is not offered: said at start-up, not found missing at the first export.
      [{ OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" }, "OTEL_EXPORTER_OTLP_PROTOCOL"],
      [{ OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "http/xml" }, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"],
      [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "collector:4318/v1/traces" }, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"],
      [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "http://c:4318/v1/traces#x" }, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"],
      [{ OTEL_EXPORTER_OTLP_COMPRESSION: "zstd" }, "OTEL_EXPORTER_OTLP_COMPRESSION"],
      [{ OTEL_EXPORTER_OTLP_TRACES_COMPRESSION: "brotli" }, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION"],
      [{ OTEL_EXPORTER_OTLP_TIMEOUT: "0" }, "OTEL_EXPORTER_OTLP_TIMEOUT"],
      [{ OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: "5s" }, "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT"],
      [{ OTEL_BSP_MAX_QUEUE_SIZE: "0" }, "OTEL_BSP_MAX_QUEUE_SIZE"],
      [{ OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "many" }, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"],
      // A batch is taken from the queue: it cannot be larger.
      [{ OTEL_BSP_MAX_QUEUE_SIZE: "100", OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "512" }, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"],
      [{ OTEL_BSP_EXPORT_TIMEOUT: "-1" }, "OTEL_BSP_EXPORT_TIMEOUT"],
      [{ OTEL_RESOURCE_ATTRIBUTES: "deployment.environment.name" }, "OTEL_RESOURCE_ATTRIBUTES: entry 1"],
      [{ OTEL_RESOURCE_ATTRIBUTES: "a=1,=2" }, "OTEL_RESOURCE_ATTRIBUTES: entry 2"],
      [{ OTEL_RESOURCE_ATTRIBUTES: "a=%E0%A4%A" }, "OTEL_RESOURCE_ATTRIBUTES: entry 1"],
      [
        { OTEL_EXPORTER_OTLP_HEADERS: "x api key=1" },
        "OTEL_EXPORTER_OTLP_HEADERS: header 1's name is not an HTTP token",
      ],
      [{ OTEL_EXPORTER_OTLP_TRACES_HEADERS: "a=1,x-api-key=a%0D%0Ab" }, "OTEL_EXPORTER_OTLP_TRACES_HEADERS: header 2"],
      [{ OTEL_EXPORTER_OTLP_HEADERS: "x-api-key=%E2%82%AC" }, "outside printable ASCII"],
      [
        { OTEL_EXPORTER_OTLP_HEADERS: "authorization=" },
        "OTEL_EXPORTER_OTLP_HEADERS: header 1 (authorization) has an empty value",
      ],
    ];
    for (const [env, name] of bad) {
      expect(() => tracingConfigFromEnv(env)).toThrow(EnvError);
      expect(() => tracingConfigFromEnv(env)).toThrow(name);
    }
  });

  test("a refused header or URL is named without repeating a secret it carries", () => {
    const messageOf = (env: Record<string, string>) => {
      try {
        tracingConfigFromEnv(env);
      } catch (err) {
        return (err as Error).message;
      }
      throw new Error("accepted");
    };
    const refused: Record<string, string>[] = [
      { OTEL_EXPORTER_OTLP_HEADERS: "authorization=Bearer%20hunter2%0A" },
      { OTEL_EXPORTER_OTLP_HEADERS: "authorization hunter2" },
      { OTEL_EXPORTER_OTLP_HEADERS: "authorization=hunter2%ZZ" },
      { OTEL_EXPORTER_OTLP_HEADERS: "Authorization: Bearer hunter2=" },
      { OTEL_EXPORTER_OTLP_ENDPOINT: "http://user:hunter2@collector:4318" },
      { OTEL_EXPORTER_OTLP_ENDPOINT: "https://user:hunter2@collector:4318/?x=1" },
      { OTEL_EXPORTER_OTLP_ENDPOINT: "https://user:hunter2@collector:99999" },
      { OTEL_EXPORTER_OTLP_ENDPOINT: "user:hunter2@collector:4318" },
      { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://user:hunter2@collector/v1/traces" },
      { OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "https://collector/v1/traces?api_key=hunter2" },
    ];
    for (const env of refused) {
      const message = messageOf(env);
      expect(message).toContain(Object.keys(env)[0]!);
      expect(message).not.toContain("hunter2");
    }
  });

  test("parent-based samplers follow the caller's sampled flag; a ratio of 0 starts no trace of its own", () => {
    const decide = (name: Parameters<typeof samplerFor>[0], ratio: number, parentFlags?: TraceFlags) => {
      const parent =
        parentFlags === undefined
          ? ROOT_CONTEXT
          : trace.setSpanContext(ROOT_CONTEXT, {
              traceId: CALLER_TRACE,
              spanId: CALLER_SPAN,
              traceFlags: parentFlags,
              isRemote: true,
            });
      return samplerFor(name, ratio).shouldSample(parent, CALLER_TRACE, "x", SpanKind.SERVER, {}, []).decision;
    };
    expect(decide("parentbased_traceidratio", 0)).toBe(SamplingDecision.NOT_RECORD);
    expect(decide("parentbased_traceidratio", 0, TraceFlags.SAMPLED)).toBe(SamplingDecision.RECORD_AND_SAMPLED);
    expect(decide("parentbased_always_on", 1, TraceFlags.NONE)).toBe(SamplingDecision.NOT_RECORD);
    expect(decide("parentbased_always_on", 1)).toBe(SamplingDecision.RECORD_AND_SAMPLED);
    expect(decide("always_off", 1, TraceFlags.SAMPLED)).toBe(SamplingDecision.NOT_RECORD);
  });
});

describe("spans across a service boundary", () => {
  test("a server span continues the caller's traceparent; a client span under it passes its own on", async () => {
    const { tracing, exporter } = await recordingTracing();
    const incoming = new Headers({ traceparent: sampledParent });
    const server = startServerSpan(tracing.tracer, "POST", incoming, headersGetter, "req-1", {
      "http.request.method": "POST",
    });
    const outgoing = new Headers();
    const client = context.with(server, () => startClientSpan(tracing.tracer, "POST", outgoing, headersSetter, {}));
    endHttpSpan(client, 201, "client");
    endHttpSpan(trace.getSpan(server)!, 201, "server");
    await tracing.flush();

    const [clientSpan, serverSpan] = exporter.getFinishedSpans();
    expect(serverSpan!.spanContext().traceId).toBe(CALLER_TRACE);
    expect(serverSpan!.parentSpanContext?.spanId).toBe(CALLER_SPAN);
    expect(serverSpan!.attributes).toMatchObject({
      "http.request.method": "POST",
      "http.response.status_code": 201,
      "portico.request_id": "req-1",
    });
    expect(clientSpan!.parentSpanContext?.spanId).toBe(serverSpan!.spanContext().spanId);
    expect(outgoing.get("traceparent")).toBe(`00-${CALLER_TRACE}-${clientSpan!.spanContext().spanId}-01`);
    expect(serverSpan!.resource.attributes).toMatchObject({
      "service.name": "demo",
      "service.version": "1.2.3",
      "service.instance.id": "demo-1",
    });
  });

  test("over gRPC metadata the same way", async () => {
    const { tracing } = await recordingTracing();
    const incoming = fakeMetadata();
    incoming.set("traceparent", sampledParent);
    const server = startServerSpan(tracing.tracer, "pkg.Svc/Do", incoming, metadataGetter, "req-2", {});
    const outgoing = fakeMetadata();
    startClientSpan(tracing.tracer, "pkg.Svc/Do", outgoing, metadataSetter, {}, server).end();
    expect(trace.getSpanContext(server)?.traceId).toBe(CALLER_TRACE);
    expect(outgoing.map.get("traceparent")).toStartWith(`00-${CALLER_TRACE}-`);
  });

  test("a malformed traceparent is ignored: a new trace starts", async () => {
    const { tracing } = await recordingTracing();
    const server = startServerSpan(
      tracing.tracer,
      "GET",
      new Headers({ traceparent: "00-zzzz-1234-01" }),
      headersGetter,
      "req-3",
      {},
    );
    const ids = trace.getSpanContext(server)!;
    expect(ids.traceId).toMatch(/^[0-9a-f]{32}$/);
    expect(ids.traceId).not.toBe("zzzz");
  });

  test("without an endpoint nothing is recorded, yet every request gets ids and passes the trace on", async () => {
    const tracing = await startTracing(IDENTITY, { env: {} });
    expect(tracing.isExporting).toBe(false);
    const server = startServerSpan(tracing.tracer, "GET", new Headers(), headersGetter, "req-4", {});
    const span = trace.getSpan(server)!;
    expect(span.isRecording()).toBe(false);
    expect(span.spanContext().traceId).toMatch(/^(?!0+$)[0-9a-f]{32}$/);
    const outgoing = new Headers();
    startClientSpan(tracing.tracer, "GET", outgoing, headersSetter, {}, server).end();
    expect(outgoing.get("traceparent")).toMatch(new RegExp(`^00-${span.spanContext().traceId}-[0-9a-f]{16}-00$`));
  });

  test("probes (record: false) get ids for their logs, continue the caller's trace id, and export nothing", async () => {
    const { tracing, exporter } = await recordingTracing();
    const probe = startServerSpan(
      tracing.tracer,
      "GET",
      new Headers({ traceparent: sampledParent }),
      headersGetter,
      "probe-1",
      {},
      false,
    );
    const span = trace.getSpan(probe)!;
    span.end();
    await tracing.flush();
    expect(span.isRecording()).toBe(false);
    expect(span.spanContext().traceId).toBe(CALLER_TRACE);
    expect(span.spanContext().spanId).not.toBe(CALLER_SPAN);
    expect(exporter.getFinishedSpans()).toHaveLength(0);
  });

  test("credentials sent as headers never become span attributes", async () => {
    const { tracing, exporter } = await recordingTracing();
    const headers = new Headers({
      authorization: "Bearer s3cr3t-token",
      cookie: "session=c00kie-value",
      "x-api-key": "k3y-value",
      traceparent: sampledParent,
    });
    const server = startServerSpan(tracing.tracer, "GET", headers, headersGetter, "req-5", {
      "http.request.method": "GET",
      "url.path": "/x",
    });
    endHttpSpan(trace.getSpan(server)!, 200, "server");
    await tracing.flush();
    const dump = JSON.stringify(
      exporter.getFinishedSpans().map((s) => ({ attributes: s.attributes, events: s.events, name: s.name })),
    );
    for (const secret of ["s3cr3t-token", "c00kie-value", "k3y-value"]) expect(dump).not.toContain(secret);
  });

  test("spans reach an OTLP/HTTP receiver in protobuf by default, in JSON when asked; either decodes to the same span", async () => {
    const exports: { contentType: string; traces: OtlpTraces }[] = [];
    const receiver = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(req) {
        const { traces, contentType } = await otlpTraces(req);
        exports.push({ contentType, traces });
        return otlpAccepted(contentType);
      },
    });
    try {
      for (const protocol of [undefined, "http/json"]) {
        const tracing = await startTracing(IDENTITY, {
          env: {
            OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiver.port}`,
            ...(protocol ? { OTEL_EXPORTER_OTLP_PROTOCOL: protocol } : {}),
          },
        });
        const server = startServerSpan(
          tracing.tracer,
          "GET",
          new Headers({ traceparent: sampledParent }),
          headersGetter,
          "req-otlp",
          {},
        );
        endHttpSpan(trace.getSpan(server)!, 204, "server");
        await tracing.shutdown();
      }
    } finally {
      receiver.stop(true);
    }
    expect(exports.map((e) => e.contentType)).toEqual(["application/x-protobuf", "application/json"]);
    for (const { traces } of exports) {
      const [resourceSpans] = traces.resourceSpans;
      expect(plainAttributes(resourceSpans!.resource.attributes)).toMatchObject({
        "service.name": "demo",
        "service.instance.id": "demo-1",
      });
      const span = resourceSpans!.scopeSpans[0]!.spans[0]!;
      expect(span).toMatchObject({ traceId: CALLER_TRACE, parentSpanId: CALLER_SPAN, kind: OTLP_SPAN_KIND_SERVER });
      expect(plainAttributes(span.attributes)).toMatchObject({
        "http.response.status_code": 204,
        "portico.request_id": "req-otlp",
      });
    }
  });

  test("what the OTEL_* variables ask of an export reaches a real receiver: URL, headers, gzip, batch size, resource", async () => {
    const exports: {
      path: string;
      apiKey: string | null;
      tenant: string | null;
      encoding: string | null;
      traces: OtlpTraces;
    }[] = [];
    const receiver = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      async fetch(req) {
        const { traces, contentType } = await otlpTraces(req);
        exports.push({
          path: new URL(req.url).pathname,
          apiKey: req.headers.get("x-api-key"),
          tenant: req.headers.get("x-tenant"),
          encoding: req.headers.get("content-encoding"),
          traces,
        });
        return otlpAccepted(contentType);
      },
    });
    try {
      const tracing = await startTracing(IDENTITY, {
        env: {
          OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `http://127.0.0.1:${receiver.port}/tenant-7/traces`,
          OTEL_EXPORTER_OTLP_HEADERS: "x-api-key=k%2C1,x-tenant=general",
          OTEL_EXPORTER_OTLP_TRACES_HEADERS: "x-tenant=acme",
          OTEL_EXPORTER_OTLP_COMPRESSION: "gzip",
          OTEL_BSP_MAX_EXPORT_BATCH_SIZE: "2",
          OTEL_BSP_SCHEDULE_DELAY: "600000",
          OTEL_RESOURCE_ATTRIBUTES: "deployment.environment.name=staging,service.version=9.9.9",
        },
      });
      for (let i = 0; i < 5; i++) {
        const scope = startServerSpan(tracing.tracer, "GET", new Headers(), headersGetter, `req-batch-${i}`, {});
        endHttpSpan(trace.getSpan(scope)!, 200, "server");
      }
      await tracing.shutdown();
    } finally {
      receiver.stop(true);
    }
    // Five spans in batches of at most two (sent concurrently: in any order), each where, how and
    // with what the variables said; the resource's own attributes win over the environment's.
    expect(
      exports.map((e) => e.traces.resourceSpans.flatMap((r) => r.scopeSpans.flatMap((s) => s.spans)).length).sort(),
    ).toEqual([1, 2, 2]);
    for (const e of exports) {
      expect([e.path, e.apiKey, e.tenant, e.encoding]).toEqual(["/tenant-7/traces", "k,1", "acme", "gzip"]);
      expect(plainAttributes(e.traces.resourceSpans[0]!.resource.attributes)).toMatchObject({
        "service.name": "demo",
        "service.version": "1.2.3",
        "service.instance.id": "demo-1",
        "deployment.environment.name": "staging",
      });
    }
  });

  test("an https collector: its CA from OTEL_EXPORTER_OTLP_CERTIFICATE, a client certificate when it asks for one", async () => {
    const dir = mkdtempSync(join(tmpdir(), "otlp-tls-"));
    try {
      const ca = await createCa("otlp test CA");
      const server = await issue(ca, { commonName: "collector", ipAddresses: ["127.0.0.1"], usage: "server" });
      const client = await issue(ca, { commonName: "demo", usage: "client" });
      const other = await issue(await createCa("another CA"), { commonName: "demo", usage: "client" });
      const file = (name: string, text: string) => {
        writeFileSync(join(dir, name), text);
        return join(dir, name);
      };
      const [caFile, certFile, keyFile, otherCert, otherKey] = [
        file("ca.pem", ca.cert),
        file("client.pem", client.cert),
        file("client-key.pem", client.key),
        file("other.pem", other.cert),
        file("other-key.pem", other.key),
      ];
      let received = 0;
      // Mutual TLS: the collector completes a handshake only with a certificate from its CA.
      const receiver = Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        tls: { cert: server.cert, key: server.key, ca: ca.cert, requestCert: true, rejectUnauthorized: true },
        async fetch(req) {
          const { contentType } = await otlpTraces(req);
          received++;
          return otlpAccepted(contentType);
        },
      });
      const exportOneSpan = async (extra: Record<string, string>) => {
        const before = received;
        const tracing = await startTracing(IDENTITY, {
          // A refused handshake is retried until the export's timeout: kept short.
          env: {
            OTEL_EXPORTER_OTLP_ENDPOINT: `https://127.0.0.1:${receiver.port}`,
            OTEL_EXPORTER_OTLP_TIMEOUT: "500",
            ...extra,
          },
        });
        endHttpSpan(
          trace.getSpan(startServerSpan(tracing.tracer, "GET", new Headers(), headersGetter, "r", {}))!,
          200,
          "server",
        );
        await tracing.flush().catch(() => {});
        await tracing.shutdown();
        return received - before;
      };
      try {
        expect(await exportOneSpan({ OTEL_EXPORTER_OTLP_CERTIFICATE: caFile })).toBe(0); // no client certificate
        expect(
          await exportOneSpan({
            OTEL_EXPORTER_OTLP_CERTIFICATE: caFile,
            OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: certFile,
            OTEL_EXPORTER_OTLP_CLIENT_KEY: keyFile,
          }),
        ).toBe(1);
        // The collector's certificate is not trusted without its CA (the system's roots do not have it)…
        expect(
          await exportOneSpan({
            OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: certFile,
            OTEL_EXPORTER_OTLP_CLIENT_KEY: keyFile,
          }),
        ).toBe(0);
        // …and a client certificate from another CA is refused; the traces variables win over the general ones.
        expect(
          await exportOneSpan({
            OTEL_EXPORTER_OTLP_CERTIFICATE: caFile,
            OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: certFile,
            OTEL_EXPORTER_OTLP_CLIENT_KEY: keyFile,
            OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE: otherCert,
            OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY: otherKey,
          }),
        ).toBe(0);
      } finally {
        receiver.stop(true);
      }
      // Refused at start-up, each naming its variable.
      const refused: [Record<string, string>, string][] = [
        [{ OTEL_EXPORTER_OTLP_CERTIFICATE: join(dir, "missing.pem") }, "OTEL_EXPORTER_OTLP_CERTIFICATE: CA bundle"],
        [
          { OTEL_EXPORTER_OTLP_CERTIFICATE: keyFile.replace("client-key", "nothing") },
          "OTEL_EXPORTER_OTLP_CERTIFICATE",
        ],
        [
          { OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: certFile },
          "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE is set without OTEL_EXPORTER_OTLP_CLIENT_KEY",
        ],
        [
          { OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE: certFile, OTEL_EXPORTER_OTLP_CLIENT_KEY: otherKey },
          "is not the key of certificate",
        ],
        [
          { OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4318", OTEL_EXPORTER_OTLP_CERTIFICATE: caFile },
          "OTEL_EXPORTER_OTLP_CERTIFICATE: certificates apply to an https collector",
        ],
      ];
      for (const [env, message] of refused) {
        expect(() => tracingConfigFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "https://collector:4318", ...env })).toThrow(
          EnvError,
        );
        expect(() => tracingConfigFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: "https://collector:4318", ...env })).toThrow(
          message,
        );
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test.each(["http/protobuf", "http/json"])(
    "%s: renewed CA and client certificate files are taken into use without a restart; a broken renewal is not",
    async (protocol) => {
      const dir = mkdtempSync(join(tmpdir(), "otlp-renew-"));
      const [oldCa, newCa] = [await createCa("old collector CA"), await createCa("new collector CA")];
      // The collector has moved to the new CA: its own certificate, and the client certificates it accepts.
      const server = await issue(newCa, { commonName: "collector", ipAddresses: ["127.0.0.1"], usage: "server" });
      const [oldClient, newClient] = [
        await issue(oldCa, { commonName: "demo", usage: "client" }),
        await issue(newCa, { commonName: "demo", usage: "client" }),
      ];
      const caFile = join(dir, "ca.crt");
      const [certFile, keyFile] = [join(dir, "tls.crt"), join(dir, "tls.key")];
      const files = (ca: string, client: { cert: string; key: string }) => {
        writeFileSync(caFile, ca);
        writeFileSync(certFile, client.cert);
        writeFileSync(keyFile, client.key);
      };
      files(oldCa.cert, oldClient);
      let received = 0;
      const receiver = Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        tls: { cert: server.cert, key: server.key, ca: newCa.cert, requestCert: true, rejectUnauthorized: true },
        async fetch(req) {
          const { contentType } = await otlpTraces(req);
          received++;
          return otlpAccepted(contentType);
        },
      });
      const lines: Record<string, unknown>[] = [];
      const log = createLogger(IDENTITY, {
        destination: { write: (line: string) => void lines.push(JSON.parse(line)) },
      });
      const tracing = await startTracing(IDENTITY, {
        log,
        env: {
          OTEL_EXPORTER_OTLP_ENDPOINT: `https://127.0.0.1:${receiver.port}`,
          OTEL_EXPORTER_OTLP_PROTOCOL: protocol,
          OTEL_EXPORTER_OTLP_TIMEOUT: "500",
          OTEL_EXPORTER_OTLP_CERTIFICATE: caFile,
          OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE: certFile,
          OTEL_EXPORTER_OTLP_CLIENT_KEY: keyFile,
          TLS_RELOAD_INTERVAL_MS: "100",
        },
      });
      const exportOne = async () => {
        const before = received;
        const scope = startServerSpan(tracing.tracer, "GET", new Headers(), headersGetter, "r", {});
        endHttpSpan(trace.getSpan(scope)!, 200, "server");
        await tracing.flush().catch(() => {});
        return received - before;
      };
      const renewed = () => lines.filter((l) => l.msg === "span exporter: renewed tls files taken into use").length;
      try {
        // Neither side trusts the other's CA yet: nothing arrives.
        expect(await exportOne()).toBe(0);
        // A certificate written without its key yet: refused, reported, and the old files stay in use.
        writeFileSync(certFile, newClient.cert);
        await Bun.sleep(400);
        expect(lines.some((l) => String(l.msg).includes("cannot be used yet"))).toBe(true);
        expect(renewed()).toBe(0);
        // The whole renewal: the next exports go through, with no restart.
        files(newCa.cert, newClient);
        const deadline = Date.now() + 5_000;
        while (renewed() === 0 && Date.now() < deadline) await Bun.sleep(50);
        expect(renewed()).toBe(1);
        expect(await exportOne()).toBe(1);
        expect(await exportOne()).toBe(1);
      } finally {
        await tracing.shutdown();
        receiver.stop(true);
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );

  test("shutdown exports the spans still buffered", async () => {
    // InMemorySpanExporter forgets its spans when shut down; this one keeps them.
    const exported: ReadableSpan[] = [];
    const exporter: SpanExporter = {
      export: (spans, done) => {
        exported.push(...spans);
        done({ code: ExportResultCode.SUCCESS });
      },
      shutdown: async () => {},
    };
    const tracing = await startTracing(IDENTITY, { env: { OTEL_BSP_SCHEDULE_DELAY: "600000" }, exporter });
    trace.getSpan(startServerSpan(tracing.tracer, "GET", new Headers(), headersGetter, "req-6", {}))!.end();
    expect(exported).toHaveLength(0);
    await tracing.shutdown();
    expect(exported.map((s) => s.attributes["portico.request_id"])).toEqual(["req-6"]);
  });

  test("a collector that is down or silent at shutdown: a warning, resolved within ~2 s (a clean exit stays 0)", async () => {
    for (const exporter of [
      // Refused: the export fails.
      {
        export: (_spans, done) => done({ code: ExportResultCode.FAILED, error: new Error("ECONNREFUSED") }),
        shutdown: async () => {
          throw new Error("ECONNREFUSED");
        },
      },
      // Accepts and never answers.
      { export: () => {}, shutdown: () => new Promise<void>(() => {}) },
    ] satisfies SpanExporter[]) {
      const lines: Record<string, unknown>[] = [];
      const log = createLogger(IDENTITY, {
        destination: { write: (line: string) => void lines.push(JSON.parse(line)) },
      });
      const tracing = await startTracing(IDENTITY, { env: { OTEL_BSP_SCHEDULE_DELAY: "600000" }, exporter, log });
      trace.getSpan(startServerSpan(tracing.tracer, "GET", new Headers(), headersGetter, "req-7", {}))!.end();
      const started = performance.now();
      await tracing.shutdown();
      expect(performance.now() - started).toBeLessThan(3_000);
      expect(lines.some((l) => l.level === "warn" && String(l.msg).includes("at shutdown"))).toBe(true);
    }
  });
});

describe("log lines and the request context", () => {
  function capturedLogger() {
    const lines: Record<string, unknown>[] = [];
    const log = createLogger(IDENTITY, { destination: { write: (line: string) => void lines.push(JSON.parse(line)) } });
    return { log, lines };
  }

  test("inside a request every line carries its trace_id, span_id and request_id; outside, none", async () => {
    const { tracing } = await recordingTracing();
    const { log, lines } = capturedLogger();
    const server = startServerSpan(
      tracing.tracer,
      "GET",
      new Headers({ traceparent: sampledParent }),
      headersGetter,
      "req-7",
      {},
    );
    context.with(server, () => log.info({ detail: 1 }, "inside"));
    log.info("outside");
    const spanId = trace.getSpanContext(server)!.spanId;
    expect(lines[0]).toMatchObject({
      msg: "inside",
      service: "demo",
      trace_id: CALLER_TRACE,
      span_id: spanId,
      request_id: "req-7",
      detail: 1,
    });
    expect(lines[1]).not.toHaveProperty("trace_id");
    expect(lines[1]).not.toHaveProperty("request_id");
    expect(logFieldsOf(server)).toEqual({ trace_id: CALLER_TRACE, span_id: spanId, request_id: "req-7" });
    expect(requestIdOf(server)).toBe("req-7");
  });

  test("the context follows the request across awaits and timers", async () => {
    const { tracing } = await recordingTracing();
    const { log, lines } = capturedLogger();
    const server = startServerSpan(tracing.tracer, "GET", new Headers(), headersGetter, "req-8", {});
    await context.with(server, async () => {
      await Bun.sleep(1);
      await new Promise<void>((resolve) =>
        setTimeout(() => {
          log.info("later");
          resolve();
        }, 1),
      );
    });
    expect(lines[0]).toMatchObject({
      msg: "later",
      request_id: "req-8",
      trace_id: trace.getSpanContext(server)!.traceId,
    });
  });

  test("credentials passed to the logger are still redacted", () => {
    const { log, lines } = capturedLogger();
    log.info({ headers: { authorization: "Bearer s3cr3t", cookie: "c00kie" } }, "x");
    expect(JSON.stringify(lines[0])).not.toMatch(/s3cr3t|c00kie/);
  });
});
