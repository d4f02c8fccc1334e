/**
 * The gRPC contracts as grpc-js wants them (rpcapp's server, test clients): package definitions
 * built from the Root lib/proto.ts parses from the embedded or on-disk .proto text.
 */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type protobuf from "protobufjs";
import { parseProtos } from "./proto.ts";

/** Options shared by every loader, so rpcapp and its clients see the same field names. */
export const PROTO_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** A grpc-js package definition for the given proto files. */
export function loadPackageDefinition(files: readonly string[], baseDir?: string): protoLoader.PackageDefinition {
  return packageDefinitionFromRoot(parseProtos(files, baseDir));
}

/** A grpc-js package definition for an already parsed Root. */
export function packageDefinitionFromRoot(root: protobuf.Root): protoLoader.PackageDefinition {
  return protoLoader.fromJSON(root.toJSON(), PROTO_OPTIONS);
}

/** A grpc-js object tree (`pkg.userverify.UserVerify`, …) for the given proto files. */
export function loadGrpcObject(files: readonly string[], baseDir?: string): grpc.GrpcObject {
  return grpc.loadPackageDefinition(loadPackageDefinition(files, baseDir));
}
