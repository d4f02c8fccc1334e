/**
 * The rpcapp gRPC server: every service it answers is registered in `startRpcServer`, which is
 * the index of the service. main.ts only wires config and signals around it; tests start it
 * in-process on a free port.
 */
import type { Fault } from "../../lib/fault.ts";
import * as grpc from "@grpc/grpc-js";
import type { ServiceIdentity } from "../../lib/env.ts";
import type { Lifecycle } from "../../lib/lifecycle.ts";
import type { Logger } from "../../lib/log.ts";
import { packageDefinitionFromRoot } from "../../lib/grpc-proto.ts";
import { parseProtos } from "../../lib/proto.ts";
import { HealthService } from "./health.ts";
import { accessInterceptor, type RpcTelemetry } from "./interceptor.ts";
import { addReflection } from "./reflection.ts";
import { servedServiceDefinition } from "./service-definition.ts";
import { verifyUserWith } from "./verify.ts";

export const USER_VERIFY_SERVICE = "userverify.UserVerify";
export const HEALTH_SERVICE = "grpc.health.v1.Health";

export interface RpcServerOptions {
  host: string;
  /** 0 picks a free port; the bound one is returned. */
  port: number;
  identity: ServiceIdentity;
  log: Logger;
  /** Health follows its readiness: SERVING while ready, NOT_SERVING before and while draining. */
  lifecycle: Lifecycle;
  /**
   * grpc-js clients re-resolve DNS only when a connection drops, so a long-lived client (the
   * gateway) would never reach pods added by a scale-up (docs/design.md, "Known traps"). Closing each
   * connection after this age (grpc-js adds ±10% jitter) makes clients reconnect and re-resolve.
   * 0 disables it. Default 30 000.
   */
  maxConnectionAgeMs?: number;
  /** How long calls still open at that age may finish before the connection is cut. Default 10 000. */
  maxConnectionAgeGraceMs?: number;
  /** Access lines for health checks and reflection too (LOG_PROBES). Default false. */
  logProbes?: boolean;
  /** Injected errors and delay on VerifyUser (lib/fault.ts: release drills); none when absent. Health is never affected. */
  fault?: Fault;
  /** Tracer, metrics and whether spans are recorded; without it no metrics are kept (tests). */
  telemetry?: RpcTelemetry;
  /** TLS (tls.ts) when TLS_CERT_FILE is set: the port then serves TLS only. Default plain text. */
  credentials?: grpc.ServerCredentials;
}

export interface RpcServer {
  server: grpc.Server;
  port: number;
  health: HealthService;
  /**
   * Turns health NOT_SERVING, ends Watch streams, then lets in-flight calls finish for at most
   * `graceMs` before cutting the remaining connections.
   */
  stop(graceMs?: number): Promise<void>;
}

function serverOptions(opts: RpcServerOptions): grpc.ServerOptions {
  const maxAge = opts.maxConnectionAgeMs ?? 30_000;
  return {
    // grpc-js treats any value as an age, 0 included (it would close every connection at once).
    ...(maxAge > 0 && {
      "grpc.max_connection_age_ms": maxAge,
      "grpc.max_connection_age_grace_ms": opts.maxConnectionAgeGraceMs ?? 10_000,
    }),
    // Ping idle clients so connections silently dropped by a NAT or load balancer are noticed.
    "grpc.keepalive_time_ms": 60_000,
    "grpc.keepalive_timeout_ms": 20_000,
    // channelz (per-call counters and traces kept for a channelz service) is not served here:
    // tracking it cost ~6 % of the server's CPU per call (bench/README.md).
    "grpc.enable_channelz": 0,
    // VerifyRequest is a few bytes; refuse large payloads early (RESOURCE_EXHAUSTED).
    "grpc.max_receive_message_length": 1024 * 1024,
    interceptors: [
      accessInterceptor(opts.identity, opts.log, { telemetry: opts.telemetry, logProbes: opts.logProbes }),
    ],
  };
}

function bindAddress(host: string, port: number): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
}

export async function startRpcServer(opts: RpcServerOptions): Promise<RpcServer> {
  // Parsed once: proto-loader's definition (response encoding, reflection) and the requests'
  // strict decoding (servedServiceDefinition) come from the same Root.
  const root = parseProtos(["userverify.proto", "grpc/health/v1/health.proto"]);
  const definition = packageDefinitionFromRoot(root);
  const health = new HealthService(["", USER_VERIFY_SERVICE], opts.lifecycle.isReady() ? "SERVING" : "NOT_SERVING");
  opts.lifecycle.onReadinessChange((ready) => health.setAll(ready ? "SERVING" : "NOT_SERVING"));

  const server = new grpc.Server(serverOptions(opts));
  server.addService(servedServiceDefinition(definition, root, USER_VERIFY_SERVICE), {
    VerifyUser: verifyUserWith(opts.fault),
  });
  server.addService(servedServiceDefinition(definition, root, HEALTH_SERVICE), health.handlers);
  addReflection(server, definition);

  const credentials = opts.credentials ?? grpc.ServerCredentials.createInsecure();
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(bindAddress(opts.host, opts.port), credentials, (err, bound) =>
      err
        ? reject(new Error(`gRPC cannot listen on ${bindAddress(opts.host, opts.port)}: ${err.message}`))
        : resolve(bound),
    ),
  );

  const stop = (graceMs = 5_000) =>
    new Promise<void>((resolve) => {
      health.shutdown();
      const force = setTimeout(() => {
        opts.log.warn({ grace_ms: graceMs }, "gRPC calls still open after the grace period; closing them");
        server.forceShutdown();
        resolve();
      }, graceMs);
      server.tryShutdown(() => {
        clearTimeout(force);
        resolve();
      });
    });

  return { server, port, health, stop };
}
