/**
 * The standard gRPC health service, `grpc.health.v1.Health`
 * (https://github.com/grpc/grpc/blob/master/doc/health-checking.md): what Kubernetes' native gRPC
 * probes and the gateway's active health checks call.
 *
 * Written here on the embedded proto rather than taken from `grpc-health-check`, which loads its
 * own .proto from the build machine's absolute path and so fails inside a compiled binary
 * (docs/design.md, "Known traps").
 */
import * as grpc from "@grpc/grpc-js";

export type ServingStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";

interface HealthCheckRequest {
  service: string;
}

interface HealthCheckResponse {
  status: ServingStatus;
}

type WatchCall = grpc.ServerWritableStream<HealthCheckRequest, HealthCheckResponse>;

export class HealthService {
  readonly #statuses = new Map<string, ServingStatus>();
  readonly #watchers = new Map<string, Set<WatchCall>>();
  #isShutDown = false;

  /** `services` are the names Check answers for; "" stands for the whole server. */
  constructor(services: readonly string[], initial: ServingStatus) {
    for (const service of services) this.#statuses.set(service, initial);
  }

  /** How many service names have a Watch stream open (each is a map entry until its last stream goes). */
  get watchedServices(): number {
    return this.#watchers.size;
  }

  getStatus(service: string): ServingStatus | undefined {
    return this.#statuses.get(service);
  }

  setStatus(service: string, status: ServingStatus): void {
    // After shutdown nothing may turn a draining server back to SERVING.
    if (this.#isShutDown || this.#statuses.get(service) === status) return;
    this.#statuses.set(service, status);
    for (const call of this.#watchers.get(service) ?? []) call.write({ status });
  }

  /** Sets every known service at once (readiness is one switch for the whole process). */
  setAll(status: ServingStatus): void {
    for (const service of this.#statuses.keys()) this.setStatus(service, status);
  }

  /**
   * Reports NOT_SERVING for good and ends every Watch stream. Without this, open Watch streams
   * would hold `server.tryShutdown` until its bound, since they never finish on their own.
   */
  shutdown(): void {
    this.setAll("NOT_SERVING");
    this.#isShutDown = true;
    for (const calls of this.#watchers.values()) for (const call of calls) call.end();
    this.#watchers.clear();
  }

  readonly handlers: grpc.UntypedServiceImplementation = {
    Check: ((call, callback) => {
      const service = call.request.service;
      const status = this.#statuses.get(service);
      if (status === undefined) {
        callback({ code: grpc.status.NOT_FOUND, details: `unknown service ${JSON.stringify(service)}` });
        return;
      }
      callback(null, { status });
    }) satisfies grpc.handleUnaryCall<HealthCheckRequest, HealthCheckResponse>,

    // Sends the current status at once, then every change, until the client cancels or we shut
    // down. An unknown service gets SERVICE_UNKNOWN and stays watched, as the protocol asks.
    Watch: ((call: WatchCall) => {
      const service = call.request.service;
      if (this.#isShutDown) {
        call.write({ status: "NOT_SERVING" });
        call.end();
        return;
      }
      let watchers = this.#watchers.get(service);
      if (!watchers) this.#watchers.set(service, (watchers = new Set()));
      watchers.add(call);
      // The name goes with its last stream: any client may watch any name, and names it no longer
      // watches must not pile up (one of 500 KB each grew the heap by 150 MB per 300 streams).
      const forget = () => {
        if (watchers.delete(call) && watchers.size === 0 && this.#watchers.get(service) === watchers)
          this.#watchers.delete(service);
      };
      call.on("cancelled", forget);
      call.on("error", forget);
      call.write({ status: this.#statuses.get(service) ?? "SERVICE_UNKNOWN" });
    }) satisfies grpc.handleServerStreamingCall<HealthCheckRequest, HealthCheckResponse>,
  };
}
