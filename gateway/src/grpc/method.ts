/**
 * A unary gRPC method resolved from the proto at config load: its wire path and the functions
 * that turn checked JSON into request bytes and reply bytes into JSON.
 */
import type protobuf from "protobufjs";
import { REPLY_TO_JSON } from "./transcode.ts";

export interface GrpcMethod {
  /** "/package.Service/Method", as on the wire. */
  path: string;
  /** "package.Service/Method", as in routes.yaml. */
  name: string;
  requestType: protobuf.Type;
  responseType: protobuf.Type;
  serialize(value: object): Buffer;
  deserialize(bytes: Buffer): Record<string, unknown>;
}

export function resolveMethod(root: protobuf.Root, name: string): GrpcMethod {
  const [serviceName = "", methodName = ""] = name.split("/");
  const service = root.lookupService(serviceName);
  const method = service.methods[methodName];
  if (!method) throw new Error(`${name}: no method ${methodName} in ${serviceName}`);
  method.resolve();
  const requestType = method.resolvedRequestType!;
  const responseType = method.resolvedResponseType!;
  return {
    path: `/${serviceName}/${methodName}`,
    name,
    requestType,
    responseType,
    serialize: (value) => Buffer.from(requestType.encode(requestType.fromObject(value)).finish()),
    deserialize: (bytes) => responseType.toObject(responseType.decode(bytes), REPLY_TO_JSON),
  };
}
