/**
 * gRPC server reflection (v1 and v1alpha), so `grpcurl -plaintext host:port list` and
 * `describe` work without the .proto at hand.
 *
 * `@grpc/reflection`'s `ReflectionService.addToServer` loads reflection.proto from the build
 * machine's absolute path (`path.join(__dirname, "../../proto/…")`), which a compiled binary in a
 * clean image does not have (docs/design.md, "Known traps"). So we keep its request handling — the
 * symbol index and descriptor encoding in `ReflectionV1Implementation`, which reads nothing from
 * disk — and register the service ourselves from a copy of reflection.proto embedded as text.
 * v1 and v1alpha have identical messages, so one implementation answers both.
 */
import type * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { PROTO_LOADER_OPTS } from "@grpc/reflection/build/src/implementations/common/constants";
import { ReflectionV1Implementation } from "@grpc/reflection/build/src/implementations/reflection-v1";
import protobuf from "protobufjs";
import { servedServiceDefinition } from "./service-definition.ts";
import reflectionV1Proto from "./proto/grpc/reflection/v1/reflection.proto" with { type: "text" };
import reflectionV1AlphaProto from "./proto/grpc/reflection/v1alpha/reflection.proto" with { type: "text" };

const REFLECTION_SERVICES = [
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
] as const;

function rootFromText(texts: readonly string[], keepCase: boolean): protobuf.Root {
  const root = new protobuf.Root();
  for (const text of texts) protobuf.parse(text, root, { keepCase });
  root.resolveAll();
  return root;
}

function definitionFromText(texts: readonly string[], keepCase: boolean): protoLoader.PackageDefinition {
  return protoLoader.fromJSON(rootFromText(texts, keepCase).toJSON(), PROTO_LOADER_OPTS);
}

const REFLECTION_PROTOS = [reflectionV1Proto, reflectionV1AlphaProto];

/**
 * The reflection services' wire codec (clients in tests use it too). Fields are camelCase
 * (`listServices`, `fileDescriptorResponse`): the shape `ReflectionV1Implementation` reads and
 * writes, as the library's own loader produces it.
 */
export function reflectionDefinition(): protoLoader.PackageDefinition {
  return definitionFromText(REFLECTION_PROTOS, false);
}

/**
 * Adds the reflection services to `server`, describing `served` (the package definition of every
 * other service on it) plus reflection itself.
 */
export function addReflection(server: grpc.Server, served: protoLoader.PackageDefinition): void {
  const codec = reflectionDefinition();
  // What reflection *describes* keeps the .proto's own field names, like every other descriptor.
  const described = { ...served, ...definitionFromText(REFLECTION_PROTOS, true) };
  const implementation = new ReflectionV1Implementation(
    described as ConstructorParameters<typeof ReflectionV1Implementation>[0],
  );
  // Its indexes are plain objects looked up by the client's name: `constructor`, `__proto__` or
  // `toString` would be found there (an empty descriptor, an empty extension list) instead of
  // NOT_FOUND. Copied onto objects with no prototype, only the names the .proto files declare are.
  const indexes = implementation as unknown as Record<"symbols" | "files" | "extensions", object>;
  for (const index of ["symbols", "files", "extensions"] as const)
    indexes[index] = Object.assign(Object.create(null), indexes[index]);

  const handler: grpc.handleBidiStreamingCall<unknown, unknown> = (call) => {
    call.on("data", (request) => call.write(implementation.handleServerReflectionRequest(request as never)));
    call.on("end", () => call.end());
  };
  // Requests decoded strictly, as every other service's (service-definition.ts): a truncated or
  // non-UTF-8 request is refused INTERNAL, not answered; decoded into the shape the library reads.
  const root = rootFromText(REFLECTION_PROTOS, false);
  for (const name of REFLECTION_SERVICES) {
    server.addService(servedServiceDefinition(codec, root, name, PROTO_LOADER_OPTS), { ServerReflectionInfo: handler });
  }
}
