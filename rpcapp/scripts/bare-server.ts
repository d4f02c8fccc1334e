/**
 * The baseline for rpcapp/scripts/cost.ts: a grpc-js server with rpcapp's VerifyUser handler and
 * server options, but no interceptor — no access log, metrics, tracing or request id. What a call
 * costs here is what grpc-js on Bun costs; the rest of rpcapp's figure is ours.
 *
 * Usage: `PORT=… bun rpcapp/scripts/bare-server.ts`; prints `listening <port>` once bound.
 */
import * as grpc from "@grpc/grpc-js";
import { envPort } from "../../lib/env.ts";
import { loadPackageDefinition } from "../../lib/grpc-proto.ts";
import { USER_VERIFY_SERVICE } from "../src/server.ts";
import { serviceDefinition } from "../src/service-definition.ts";
import { verifyUser } from "../src/verify.ts";

const server = new grpc.Server({
  "grpc.max_connection_age_ms": 30_000,
  "grpc.max_connection_age_grace_ms": 10_000,
  "grpc.keepalive_time_ms": 60_000,
  "grpc.keepalive_timeout_ms": 20_000,
  "grpc.max_receive_message_length": 1024 * 1024,
  "grpc.enable_channelz": 0,
});
const definition = loadPackageDefinition(["userverify.proto"]);
server.addService(serviceDefinition(definition, USER_VERIFY_SERVICE), { VerifyUser: verifyUser });
server.bindAsync(`127.0.0.1:${envPort("PORT", 0)}`, grpc.ServerCredentials.createInsecure(), (err, port) => {
  if (err) {
    console.error(`bare gRPC server cannot listen: ${err.message}`);
    process.exit(1);
  }
  console.log(`listening ${port}`);
});
// A clean exit, so `bun --cpu-prof` writes its profile.
process.on("SIGTERM", () => process.exit(0));
