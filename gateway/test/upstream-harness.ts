/**
 * In-process fixtures for the upstream unit tests: an Upstream and its routes built from a
 * routes.yaml snippet (health checks off unless asked, so nothing touches the network), and
 * ready-made transport outcomes.
 */
import type { status as GrpcStatus } from "@grpc/grpc-js";
import { type GatewayConfig, parseConfig } from "../src/config/load.ts";
import type { RequestContext } from "../src/context.ts";
import type { GrpcOutcome } from "../src/grpc/call.ts";
import type { HttpOutcome } from "../src/proxy/http.ts";
import { Upstream, type UpstreamOptions } from "../src/upstream/upstream.ts";

/**
 * A config with one http upstream `up` (endpoints 127.0.0.1:1..3) and a route `r` to it; health
 * checks are off unless `healthCheck` (a YAML flow mapping) turns them on.
 * `upstream` and `route` are extra YAML flow-mapping entries, e.g. `circuitBreaker: { consecutiveFailures: 2 }`.
 */
export function testConfig(
  opts: {
    endpoints?: string;
    upstream?: string;
    route?: string;
    protocol?: "http" | "grpc";
    timeoutMs?: number;
    healthCheck?: string;
  } = {},
): GatewayConfig {
  const endpoints = opts.endpoints ?? "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3";
  const grpc = opts.protocol === "grpc";
  const extraUpstream = opts.upstream ? `, ${opts.upstream}` : "";
  const extraRoute = opts.route ? `, ${opts.route}` : "";
  return parseConfig(
    `upstreams:
  up: { protocol: ${grpc ? "grpc, proto: proto/userverify.proto" : "http"}, endpoints: "${endpoints}", healthCheck: ${opts.healthCheck ?? "{ enabled: false }"}${extraUpstream} }
routes:
  - { name: r, path: /r, upstream: up, timeoutMs: ${opts.timeoutMs ?? 1000}${grpc ? ", grpc: { method: userverify.UserVerify/VerifyUser }" : ""}${extraRoute} }
`,
    "test.yaml",
  );
}

export function testUpstream(config: GatewayConfig, options: UpstreamOptions = {}): Upstream {
  return new Upstream(config.upstreams.get("up")!, options);
}

export function context(): RequestContext {
  return {
    id: "t",
    start: performance.now(),
    method: "POST",
    path: "/r",
    search: "",
    clientIp: "127.0.0.1",
    peer: "127.0.0.1",
    peerIsTrusted: false,
    secure: false,
    stamp: [["x-request-id", "t"]],
    stamped: false,
  };
}

export const outcomes = {
  ok: (): HttpOutcome => ({ kind: "response", response: new Response("ok", { status: 200 }) }),
  status: (status: number): HttpOutcome => ({ kind: "response", response: new Response("x", { status }) }),
  refused: (): HttpOutcome => ({
    kind: "connect-error",
    error: Object.assign(new Error("ECONNREFUSED"), { code: "ECONNREFUSED" }),
  }),
  reset: (): HttpOutcome => ({ kind: "error", error: Object.assign(new Error("ECONNRESET"), { code: "ECONNRESET" }) }),
  timeout: (): HttpOutcome => ({ kind: "timeout" }),
  /** The client went away and the transport abandoned the try. */
  cancelled: (): HttpOutcome => ({ kind: "cancelled" }),
  grpc: (code: GrpcStatus, details = "x"): GrpcOutcome => ({ kind: "status", code, details }),
  /** A call the gRPC client says never reached the endpoint (grpc/h2-client.ts `unsent`). */
  grpcUnsent: (code: GrpcStatus, details = "x"): GrpcOutcome => ({ kind: "status", code, details, unsent: true }),
  reply: (): GrpcOutcome => ({ kind: "reply", reply: { message: "ok" } }),
};

/**
 * Lets the promise chains that a fake timer (jest.useFakeTimers) woke run on to their next wait:
 * Bun's advanceTimersByTime runs the callbacks but not the microtasks they queue.
 */
export async function settle(): Promise<void> {
  for (let i = 0; i < 50; i++) await Promise.resolve();
}

/** A promise resolved from outside (a request held in flight). */
export function deferred<T>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
