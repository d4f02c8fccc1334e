/**
 * One replica of an upstream service, as the gateway sees it. Each endpoint owns what is
 * particular to it: its address, its connection (HTTP keep-alive is pooled by Bun's fetch per
 * origin; gRPC gets one grpc-js client per endpoint, so calls are balanced per request instead of
 * pinned to one connection), and its load figures.
 */
import * as grpc from "@grpc/grpc-js";

export class Endpoint {
  /** Requests sent and not yet answered. */
  inflight = 0;
  /** Total requests sent (for metrics and tests). */
  requests = 0;
  readonly origin: string;
  #grpcClient: grpc.Client | undefined;

  constructor(
    /** host:port */
    readonly address: string,
    readonly protocol: "http" | "grpc",
  ) {
    this.origin = `http://${address}`;
  }

  /** The grpc-js client for this endpoint, created on first use. */
  grpcClient(): grpc.Client {
    this.#grpcClient ??= new grpc.Client(this.address, grpc.credentials.createInsecure(), {
      // One connection per endpoint; the gateway balances across endpoints itself.
      "grpc.keepalive_time_ms": 30_000,
      "grpc.keepalive_timeout_ms": 10_000,
      "grpc.initial_reconnect_backoff_ms": 200,
      "grpc.max_reconnect_backoff_ms": 2_000,
    });
    return this.#grpcClient;
  }

  close(): void {
    this.#grpcClient?.close();
    this.#grpcClient = undefined;
  }
}
