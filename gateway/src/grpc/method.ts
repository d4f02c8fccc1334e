/**
 * A unary gRPC method resolved from the proto at config load: its wire path and the functions
 * that turn checked JSON into request bytes and reply bytes into JSON. protobufjs generates each
 * type's encoder, decoder and converters on first use; resolving here builds them before the
 * first request (measured: the whole JSON → bytes → JSON round costs ~1.5 µs per call).
 */
import protobuf from "protobufjs";
import { REPLY_TO_JSON } from "./transcode.ts";
import { FRAME_HEADER_BYTES } from "./wire.ts";

export interface GrpcMethod {
  /** "/package.Service/Method", as on the wire. */
  path: string;
  /** "package.Service/Method", as in routes.yaml. */
  name: string;
  requestType: protobuf.Type;
  responseType: protobuf.Type;
  /** Checked JSON (transcode.ts checkMessage) → request message bytes. */
  encode(value: object): Uint8Array;
  /**
   * The same, framed as it goes on the wire (wire.ts frameMessage): the length prefix and the
   * message, written once into one buffer.
   */
  encodeFramed(value: object): Buffer;
  /** Reply message bytes → JSON-ready object (REPLY_TO_JSON); throws on malformed bytes. */
  decode(bytes: Uint8Array): Record<string, unknown>;
}

export function resolveMethod(root: protobuf.Root, name: string): GrpcMethod {
  const [serviceName = "", methodName = ""] = name.split("/");
  const service = root.lookupService(serviceName);
  const method = service.methods[methodName];
  if (!method) throw new Error(`${name}: no method ${methodName} in ${serviceName}`);
  method.resolve();
  const requestType = method.resolvedRequestType!;
  const responseType = method.resolvedResponseType!;
  const encode = (value: object): Uint8Array => requestType.encode(requestType.fromObject(value)).finish();
  const encodeFramed = (value: object): Buffer => encodeFramedAs(requestType, value);
  const decode = (bytes: Uint8Array): Record<string, unknown> =>
    responseType.toObject(responseType.decode(bytes), REPLY_TO_JSON);
  // Generate the codecs now rather than on the first request.
  decode(encodeEmpty(responseType));
  encode({});
  return {
    path: `/${serviceName}/${methodName}`,
    name,
    requestType,
    responseType,
    encode,
    encodeFramed,
    decode,
  };
}

function encodeEmpty(type: protobuf.Type): Uint8Array {
  return type.encode(type.create()).finish();
}

/**
 * The writer every request message is encoded with, its buffer kept from one to the next: encoding
 * is synchronous, so one serves every call, and a request costs no writer and no scratch buffer
 * (bench/census.ts). One grown past KEEP_WRITER_BYTES by a large message is let go after it.
 */
let writer = protobuf.Writer.create();
const KEEP_WRITER_BYTES = 64 * 1024;

function encodeFramedAs(type: protobuf.Type, value: object): Buffer {
  const w = writer;
  w.pos = 0;
  try {
    type.encode(type.fromObject(value), w);
  } catch (err) {
    // Whatever it was left holding (an open fork) is not carried into the next message.
    writer = protobuf.Writer.create();
    throw err;
  }
  const length = w.pos;
  const framed = Buffer.allocUnsafe(FRAME_HEADER_BYTES + length);
  framed[0] = 0;
  framed.writeUInt32BE(length, 1);
  // Buffer#copy (Bun's takes any Uint8Array): no view of the writer's buffer made, as set(subarray) would.
  Buffer.prototype.copy.call(w.buf, framed, FRAME_HEADER_BYTES, 0, length);
  if (w.buf.byteLength > KEEP_WRITER_BYTES) writer = protobuf.Writer.create();
  return framed;
}
