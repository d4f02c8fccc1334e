/**
 * Plain grpc-js clients for rpcapp's services, shared by the in-process, process and compiled
 * binary tests. Each call resolves with the reply (or error) and the response metadata.
 */
import * as grpc from "@grpc/grpc-js";
import { FileDescriptorProto } from "protobufjs/ext/descriptor";
import { loadPackageDefinition } from "../../lib/grpc-proto.ts";
import { reflectionDefinition } from "../src/reflection.ts";
import { serviceDefinition } from "../src/service-definition.ts";

const contracts = loadPackageDefinition(["userverify.proto", "grpc/health/v1/health.proto"]);
const reflection = reflectionDefinition();

function clientFor(definition: typeof contracts, service: string, target: string): grpc.Client {
  const Client = grpc.makeGenericClientConstructor(
    serviceDefinition(definition, service) as grpc.ServiceDefinition<grpc.UntypedServiceImplementation>,
    service,
  );
  return new Client(target, grpc.credentials.createInsecure());
}

export interface UnaryResult<T> {
  reply?: T;
  error?: grpc.ServiceError;
  /** Response initial metadata. */
  headers: grpc.Metadata;
}

/** A unary method of a client from makeGenericClientConstructor, as grpc-js defines it. */
type UnaryMethod<T> = (
  this: grpc.Client,
  request: object,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (error: grpc.ServiceError | null, reply: T) => void,
) => grpc.ClientUnaryCall;

/** The bidi reflection method of the generic clients. */
type ReflectionMethod = (
  this: grpc.Client,
  options: grpc.CallOptions,
) => grpc.ClientDuplexStream<object, ReflectionReply>;

/** The fields of a ServerReflectionResponse (proto-loader decoding) these tests read. */
export interface ReflectionReply {
  listServicesResponse?: { service: { name: string }[] };
  fileDescriptorResponse?: { fileDescriptorProto: ArrayLike<number>[] };
  errorResponse?: { errorCode: number; errorMessage: string };
}

function unary<T>(
  client: grpc.Client,
  method: string,
  request: object,
  metadata = new grpc.Metadata(),
): Promise<UnaryResult<T>> {
  return new Promise((resolve) => {
    let headers = new grpc.Metadata();
    const call = (client as unknown as Record<string, UnaryMethod<T>>)[method]!.call(
      client,
      request,
      metadata,
      { deadline: Date.now() + 5_000 },
      (error, reply) => resolve(error ? { error, headers } : { reply, headers }),
    );
    call.on("metadata", (m) => (headers = m));
  });
}

export type ServingStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";

export class RpcappClients {
  readonly verify: grpc.Client;
  readonly health: grpc.Client;
  readonly #reflection: Record<"v1" | "v1alpha", grpc.Client>;

  constructor(readonly target: string) {
    this.verify = clientFor(contracts, "userverify.UserVerify", target);
    this.health = clientFor(contracts, "grpc.health.v1.Health", target);
    this.#reflection = {
      v1: clientFor(reflection, "grpc.reflection.v1.ServerReflection", target),
      v1alpha: clientFor(reflection, "grpc.reflection.v1alpha.ServerReflection", target),
    };
  }

  verifyUser(request: { id?: number; token?: string }, metadata?: grpc.Metadata) {
    return unary<{ message: string }>(this.verify, "VerifyUser", request, metadata);
  }

  check(service: string) {
    return unary<{ status: ServingStatus }>(this.health, "Check", { service });
  }

  /** Opens a Watch stream; `statuses` fills as updates arrive, `ended` resolves when it ends. */
  watch(service: string) {
    const statuses: ServingStatus[] = [];
    const call = this.health.makeServerStreamRequest(
      "/grpc.health.v1.Health/Watch",
      (req: { service: string }) => serviceDefinition(contracts, "grpc.health.v1.Health").Watch!.requestSerialize(req),
      (buf: Buffer) =>
        serviceDefinition(contracts, "grpc.health.v1.Health").Watch!.responseDeserialize(buf) as {
          status: ServingStatus;
        },
      { service },
    );
    call.on("data", (m: { status: ServingStatus }) => statuses.push(m.status));
    const ended = new Promise<grpc.StatusObject>((resolve) => {
      call.on("status", resolve);
      call.on("error", () => {});
    });
    return { statuses, ended, cancel: () => call.cancel() };
  }

  /** A bidi reflection stream, left to the caller to write to and end. */
  reflectionStream(version: "v1" | "v1alpha" = "v1"): grpc.ClientDuplexStream<object, ReflectionReply> {
    const client = this.#reflection[version];
    const open = (client as unknown as Record<string, ReflectionMethod>).ServerReflectionInfo!;
    return open.call(client, { deadline: Date.now() + 5_000 });
  }

  /** One request on its own reflection stream, e.g. `{ listServices: "*" }`. */
  reflect(request: object, version: "v1" | "v1alpha" = "v1"): Promise<ReflectionReply> {
    return new Promise((resolve, reject) => {
      const stream = this.reflectionStream(version);
      stream.on("data", (reply) => {
        resolve(reply);
        stream.end();
      });
      stream.on("error", reject);
      stream.write(request);
    });
  }

  async listServices(version: "v1" | "v1alpha" = "v1"): Promise<string[]> {
    const reply = await this.reflect({ listServices: "*" }, version);
    if (!reply.listServicesResponse)
      throw new Error(`reflection answered without a service list: ${JSON.stringify(reply)}`);
    return reply.listServicesResponse.service.map((s) => s.name).sort();
  }

  /** The decoded file descriptors reflection returns for a symbol. */
  async describe(
    symbol: string,
  ): Promise<{ name: string; package: string; service: { name: string; method: { name: string }[] }[] }[]> {
    const reply = await this.reflect({ fileContainingSymbol: symbol });
    if (reply.errorResponse) throw new Error(`reflection error: ${reply.errorResponse.errorMessage}`);
    if (!reply.fileDescriptorResponse)
      throw new Error(`reflection answered without descriptors: ${JSON.stringify(reply)}`);
    return reply.fileDescriptorResponse.fileDescriptorProto.map(
      (bytes) => FileDescriptorProto.decode(Uint8Array.from(bytes)) as never,
    );
  }

  close(): void {
    for (const c of [this.verify, this.health, ...Object.values(this.#reflection)]) c.close();
  }
}
