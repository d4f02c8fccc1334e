/**
 * The gRPC-over-HTTP/2 wire rules the lean client (./h2-client.ts) needs, as pure functions:
 * message framing (a 5-byte prefix: compressed flag, big-endian length), the `grpc-timeout`
 * header, `grpc-message` percent-decoding, metadata as HTTP/2 headers, and what a call that
 * ended without a gRPC status means (the HTTP status and RST_STREAM code tables of the spec).
 * https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md
 * https://github.com/grpc/grpc/blob/master/doc/http-grpc-status-mapping.md
 */
import { constants as h2 } from "node:http2";
import { GrpcCode } from "./status.ts";

/** Bytes in a message's length prefix: 1 flag byte, 4 length bytes. */
export const FRAME_HEADER_BYTES = 5;

/** `message` with its length prefix (never compressed: the client offers no grpc-encoding). */
export function frameMessage(message: Uint8Array): Buffer {
  const framed = Buffer.allocUnsafe(FRAME_HEADER_BYTES + message.byteLength);
  framed[0] = 0;
  framed.writeUInt32BE(message.byteLength, 1);
  framed.set(message, FRAME_HEADER_BYTES);
  return framed;
}

/**
 * `grpc-timeout` for a budget in ms: at most 8 digits per the spec, so budgets past ~27 hours go
 * in seconds. Rounded up: a deadline the server sees is never shorter than the gateway's.
 */
export function grpcTimeout(ms: number): string {
  const whole = Math.max(1, Math.ceil(ms));
  return whole < 100_000_000 ? `${whole}m` : `${Math.min(Math.ceil(whole / 1000), 99_999_999)}S`;
}

/** grpc-message is percent-encoded UTF-8; a malformed escape leaves the text as it came. */
export function decodeGrpcMessage(raw: string | undefined): string {
  if (!raw) return "";
  if (!raw.includes("%")) return raw;
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/** Outgoing metadata: lower-case names, string values, as they go into HTTP/2 headers. */
export type MetadataHeaders = Record<string, string>;

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;
/** Header names the client sets itself, or that HTTP/2 forbids: metadata never overrides them. */
const RESERVED = new Set(["content-type", "te", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", "connection"]);

/**
 * Adds one metadata entry. A `-bin` key's value goes base64-encoded, as the spec requires. Any
 * other value must be printable ASCII: one that is not (a user agent or claim with raw UTF-8)
 * is left out rather than sent mangled or made to fail the whole call — so a claim the upstream
 * might authorise on is missing, never altered. Returns whether it was added.
 */
export function setMetadata(headers: MetadataHeaders, key: string, value: string): boolean {
  const name = key.toLowerCase();
  if (name.startsWith(":") || name.startsWith("grpc-") || RESERVED.has(name)) return false;
  if (name.endsWith("-bin")) {
    headers[name] = Buffer.from(value, "utf8").toString("base64");
    return true;
  }
  if (!PRINTABLE_ASCII.test(value)) return false;
  headers[name] = value;
  return true;
}

/** A carrier with `set`, for code written against grpc-js Metadata or Headers (auth/guard.ts). */
export function metadataWriter(headers: MetadataHeaders): { set(key: string, value: string): void } {
  return { set: (key, value) => void setMetadata(headers, key, value) };
}

export interface WireStatus {
  code: GrpcCode;
  details: string;
}

/** The status for an HTTP response that is not 200 and carries no grpc-status (spec's table). */
export function statusFromHttp(httpStatus: number): WireStatus {
  const details = `upstream answered HTTP ${httpStatus} without a gRPC status`;
  switch (httpStatus) {
    case 400:
      return { code: GrpcCode.INTERNAL, details };
    case 401:
      return { code: GrpcCode.UNAUTHENTICATED, details };
    case 403:
      return { code: GrpcCode.PERMISSION_DENIED, details };
    case 404:
      return { code: GrpcCode.UNIMPLEMENTED, details };
    case 429:
    case 502:
    case 503:
    case 504:
      return { code: GrpcCode.UNAVAILABLE, details };
    default:
      return { code: GrpcCode.UNKNOWN, details };
  }
}

/** The status for a stream the server reset before sending a gRPC status. */
export function statusFromReset(rstCode: number): WireStatus {
  switch (rstCode) {
    case h2.NGHTTP2_REFUSED_STREAM:
      return { code: GrpcCode.UNAVAILABLE, details: "stream refused by the upstream (not processed)" };
    case h2.NGHTTP2_CANCEL:
      return { code: GrpcCode.CANCELLED, details: "call cancelled by the upstream (RST_STREAM CANCEL)" };
    case h2.NGHTTP2_ENHANCE_YOUR_CALM:
      return {
        code: GrpcCode.RESOURCE_EXHAUSTED,
        details: "upstream asked to slow down (RST_STREAM ENHANCE_YOUR_CALM)",
      };
    case h2.NGHTTP2_INADEQUATE_SECURITY:
      return { code: GrpcCode.PERMISSION_DENIED, details: "upstream refused the connection's security" };
    default:
      return {
        code: GrpcCode.INTERNAL,
        details: `upstream reset the stream (RST_STREAM code ${rstCode}) without a gRPC status`,
      };
  }
}

/**
 * Parses grpc-status; anything but a decimal code in range is the server's bug: UNKNOWN. Digits
 * only: `Number` alone would take `0x0`, ` 0`, `1e1` or `5.0` as codes.
 */
export function parseGrpcStatus(raw: string | string[] | undefined): GrpcCode | undefined {
  if (raw === undefined) return undefined;
  const text = (Array.isArray(raw) ? raw[0] : raw) ?? "";
  if (!/^\d{1,2}$/.test(text)) return GrpcCode.UNKNOWN;
  const code = Number(text);
  return code <= 16 ? (code as GrpcCode) : GrpcCode.UNKNOWN;
}
