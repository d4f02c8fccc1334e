/**
 * What an OTLP/HTTP trace receiver in a test makes of an export: the body as the JSON encoding
 * has it (ExportTraceServiceRequest, ids as hex), whichever encoding the exporter chose —
 * application/json parsed, application/x-protobuf decoded with otlp-trace.proto through
 * @grpc/proto-loader, not with the SDK's own serializer.
 */
import { join } from "node:path";
import * as protoLoader from "@grpc/proto-loader";

export interface OtlpAttribute {
  key: string;
  value: Record<string, unknown>;
}

export interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes?: OtlpAttribute[];
}

export interface OtlpTraces {
  resourceSpans: { resource: { attributes: OtlpAttribute[] }; scopeSpans: { spans: OtlpSpan[] }[] }[];
}

interface DecodedSpan extends Omit<OtlpSpan, "traceId" | "spanId" | "parentSpanId"> {
  traceId: Buffer;
  spanId: Buffer;
  parentSpanId?: Buffer;
}

type ExportRequestDecoder = (bytes: Buffer) => { resourceSpans?: OtlpTraces["resourceSpans"] };
let exportRequest: ExportRequestDecoder | undefined;

/** An ExportTraceServiceRequest in protobuf, decoded as above. */
export function decodeProtobuf(bytes: Uint8Array): OtlpTraces {
  if (!exportRequest) {
    const definition = protoLoader.loadSync(join(import.meta.dir, "otlp-trace.proto"), { longs: Number });
    const service = definition["opentelemetry.proto.collector.trace.v1.TraceService"] as protoLoader.ServiceDefinition;
    exportRequest = service.Export!.requestDeserialize as unknown as ExportRequestDecoder;
  }
  const decoded = exportRequest!(Buffer.from(bytes));
  const hex = (id: Buffer | undefined) => (id && id.length > 0 ? id.toString("hex") : undefined);
  return {
    resourceSpans: (decoded.resourceSpans ?? []).map((rs) => ({
      resource: { attributes: rs.resource?.attributes ?? [] },
      scopeSpans: (rs.scopeSpans ?? []).map((ss) => ({
        spans: (ss.spans as unknown as DecodedSpan[]).map((s) => ({
          ...s,
          traceId: hex(s.traceId) ?? "",
          spanId: hex(s.spanId) ?? "",
          parentSpanId: hex(s.parentSpanId),
        })),
      })),
    })),
  };
}

/** The spans of one export request to /v1/traces, by its Content-Type (gzip-compressed or not). */
export async function otlpTraces(req: Request): Promise<{ traces: OtlpTraces; raw: Uint8Array; contentType: string }> {
  const contentType = req.headers.get("content-type") ?? "";
  const body = new Uint8Array(await req.arrayBuffer());
  const encoding = req.headers.get("content-encoding");
  if (encoding !== null && encoding !== "gzip") throw new Error(`an OTLP export with content-encoding ${encoding}`);
  const raw = encoding === "gzip" ? Bun.gunzipSync(body) : body;
  if (contentType === "application/x-protobuf") return { traces: decodeProtobuf(raw), raw, contentType };
  if (contentType === "application/json")
    return { traces: JSON.parse(new TextDecoder().decode(raw)) as OtlpTraces, raw, contentType };
  throw new Error(`an OTLP export with content-type ${JSON.stringify(contentType)}`);
}

/**
 * A collector's answer to an export: an empty ExportTraceServiceResponse in the request's encoding
 * (zero bytes in protobuf, `{}` in JSON).
 */
export function otlpAccepted(contentType: string | null): Response {
  return contentType === "application/x-protobuf"
    ? new Response(new Uint8Array(0), { headers: { "content-type": contentType } })
    : Response.json({});
}

/** OTLP attributes as a plain record (the value's one field: stringValue, intValue…). */
export function plainAttributes(attributes: OtlpAttribute[] = []): Record<string, unknown> {
  return Object.fromEntries(attributes.map((a) => [a.key, Object.values(a.value)[0]]));
}
