/**
 * A grpc-js server with the UserVerify service (proto/userverify.proto), for tests whose gRPC
 * upstream must answer as the test says: the handler given, on free loopback ports.
 */
import * as grpc from "@grpc/grpc-js";
import { loadPackageDefinition } from "../../lib/grpc-proto.ts";
import { freePort } from "../../scripts/stack/testing/ports.ts";

export type VerifyUserHandler = grpc.handleUnaryCall<{ id: number; token: string }, { message: string }>;

/** Starts the server on `portCount` ports (a retry goes to another endpoint: two ports, two endpoints). */
export async function startUserVerifyServer(
  verifyUser: VerifyUserHandler,
  portCount = 1,
): Promise<{ server: grpc.Server; ports: number[] }> {
  const service = (
    grpc.loadPackageDefinition(loadPackageDefinition(["userverify.proto"])).userverify as grpc.GrpcObject
  ).UserVerify as grpc.ServiceClientConstructor;
  const server = new grpc.Server();
  server.addService(service.service, { VerifyUser: verifyUser });
  const ports: number[] = [];
  for (let i = 0; i < portCount; i++) {
    const port = await freePort();
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) =>
        err ? reject(err) : resolve(),
      ),
    );
    ports.push(port);
  }
  return { server, ports };
}
