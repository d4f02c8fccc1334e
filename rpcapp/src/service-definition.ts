import type * as grpc from "@grpc/grpc-js";
import type * as protoLoader from "@grpc/proto-loader";

/** The service `fullName` ("userverify.UserVerify") from a package definition, or a clear error. */
export function serviceDefinition(definition: protoLoader.PackageDefinition, fullName: string): grpc.ServiceDefinition {
  const entry = definition[fullName];
  // Services are plain method maps; messages and enums carry a `format` tag instead.
  if (entry === undefined || "format" in entry) {
    throw new Error(`${fullName} is not a service in the loaded protos (have: ${Object.keys(definition).join(", ")})`);
  }
  return entry as grpc.ServiceDefinition;
}
