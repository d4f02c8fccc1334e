import type * as grpc from "@grpc/grpc-js";
import type * as protoLoader from "@grpc/proto-loader";
import type protobuf from "protobufjs";
import { PROTO_OPTIONS } from "../../lib/grpc-proto.ts";

/** The service `fullName` ("userverify.UserVerify") from a package definition, or a clear error. */
export function serviceDefinition(definition: protoLoader.PackageDefinition, fullName: string): grpc.ServiceDefinition {
  const entry = definition[fullName];
  // Services are plain method maps; messages and enums carry a `format` tag instead.
  if (entry === undefined || "format" in entry) {
    throw new Error(`${fullName} is not a service in the loaded protos (have: ${Object.keys(definition).join(", ")})`);
  }
  return entry as grpc.ServiceDefinition;
}

/**
 * The service `fullName` as rpcapp serves it: `serviceDefinition`, with each method's requests
 * decoded by the project's protobufjs (`root`, parsed by lib/proto.ts) instead of the protobufjs 7
 * bundled in @grpc/proto-loader. That one's reader clamps a length-delimited field running past
 * the end of the message to the bytes present, and decodes a proto3 `string` that is not UTF-8
 * with replacement characters: a truncated or corrupt request was answered as if it were whole.
 * protobufjs 8 throws on both (its generated decoders verify UTF-8 where proto3 requires it), so
 * grpc-js refuses such a request as it refuses any it cannot decode: INTERNAL "Error
 * deserializing request", logged and counted by the interceptor. A known field sent with the wrong
 * wire type is skipped as an unknown one, as protoc-generated parsers do (protobufjs 7 threw).
 * Decoded objects keep the shape proto-loader gives them (same conversion options); responses are
 * still encoded by proto-loader.
 */
export function servedServiceDefinition(
  definition: protoLoader.PackageDefinition,
  root: protobuf.Root,
  fullName: string,
  /** The options `definition` was loaded with (its decoded objects' shape); rpcapp's by default. */
  options: object = PROTO_OPTIONS,
): grpc.ServiceDefinition {
  const methods = root.lookupService(fullName).methods;
  const conversion = options as protobuf.IConversionOptions;
  return Object.fromEntries(
    Object.entries(serviceDefinition(definition, fullName)).map(([name, method]) => {
      const type = methods[name]?.resolvedRequestType;
      if (!type) throw new Error(`${fullName}/${name}: no resolved request type in the parsed protos`);
      const requestDeserialize = (bytes: Buffer) => type.toObject(type.decode(bytes), conversion);
      return [name, { ...method, requestDeserialize }];
    }),
  );
}
