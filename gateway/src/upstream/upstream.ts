/**
 * An upstream: a named set of endpoints speaking one protocol, and the choice of which endpoint
 * serves the next request. One abstraction for HTTP and gRPC; the transports only ask `pick()`.
 */
import type { UpstreamConfig } from "../config/load.ts";
import { Endpoint } from "./endpoint.ts";

export class Upstream {
  readonly name: string;
  readonly protocol: "http" | "grpc";
  endpoints: Endpoint[];
  #next = 0;

  constructor(config: UpstreamConfig) {
    this.name = config.name;
    this.protocol = config.protocol;
    this.endpoints = config.endpoints.map((address) => new Endpoint(address, config.protocol));
  }

  /** The endpoint for the next request (round robin), skipping any in `exclude`. */
  pick(exclude?: ReadonlySet<Endpoint>): Endpoint | undefined {
    const n = this.endpoints.length;
    for (let i = 0; i < n; i++) {
      const endpoint = this.endpoints[this.#next++ % n]!;
      if (!exclude?.has(endpoint)) return endpoint;
    }
    return undefined;
  }

  close(): void {
    for (const endpoint of this.endpoints) endpoint.close();
  }
}

export function createUpstreams(configs: Iterable<UpstreamConfig>): Map<string, Upstream> {
  const upstreams = new Map<string, Upstream>();
  for (const config of configs) upstreams.set(config.name, new Upstream(config));
  return upstreams;
}
