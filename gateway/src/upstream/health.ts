/**
 * Active health checks: every `intervalMs`, each endpoint is asked whether it is ready —
 * HTTP `GET <path>` (2xx passes), gRPC `grpc.health.v1.Health/Check` (SERVING passes) on the
 * endpoint's own channel (grpc/h2-client.ts), so the check travels the connection requests use.
 * Checks run whether or not traffic flows, which is what brings a replica back after an outage:
 * passive signals (breaker, ejection) only see endpoints that get requests. Each answer also says
 * which version the replica runs (`x-service-version`), so a canary's endpoints are known before
 * any request reaches them (canary/controller.ts).
 */
import { parseProtos } from "../../../lib/proto.ts";
import type { UpstreamConfig } from "../config/load.ts";
import { callUnary } from "../grpc/call.ts";
import { limitResponseSize } from "../proxy/response-limit.ts";
import { type GrpcMethod, resolveMethod } from "../grpc/method.ts";
import { grpcCodeName } from "../grpc/status.ts";
import type { Endpoint } from "./endpoint.ts";

export type HealthSettings = UpstreamConfig["healthCheck"];

let healthMethod: GrpcMethod | undefined;
/** grpc.health.v1.Health/Check, from the embedded proto (lib/proto.ts), resolved once. */
function grpcHealthCheck(): GrpcMethod {
  healthMethod ??= resolveMethod(parseProtos(["grpc/health/v1/health.proto"]), "grpc.health.v1.Health/Check");
  return healthMethod;
}

/** A check's verdict, and the version the replica reported with it (if it did). */
export interface CheckResult {
  passed: boolean;
  version?: string;
  /**
   * Why a check failed, as an operator needs it to act: a refused certificate, a refused
   * connection, a status. For the log line of the endpoint's move to unhealthy.
   */
  reason?: string;
}

/** What a health check's answer may be: small (a status document). */
const HEALTH_LIMITS = { maxHeaderBytes: 16 * 1024, maxResponseBytes: 64 * 1024 };

/** `GET <path>` on the endpoint's own pool, so the check travels the connections requests use. */
export async function checkHttp(endpoint: Endpoint, path: string, timeoutMs: number): Promise<CheckResult> {
  const outcome = await endpoint.httpPool().send("GET", path, new Headers(), null, timeoutMs, HEALTH_LIMITS);
  if (outcome.kind === "timeout") return { passed: false, reason: `no answer to GET ${path} within ${timeoutMs} ms` };
  if (outcome.kind === "cancelled") return { passed: false, reason: "cancelled" };
  if (outcome.kind !== "response") return { passed: false, reason: outcome.error.message };
  const res = outcome.response;
  // A status document is small: an answer over the cap fails the check, its body not read (a
  // declared length over it) or cut at the cap (chunked), so no endpoint makes every check buffer
  // whatever it sends.
  const limited = limitResponseSize(res, HEALTH_LIMITS.maxResponseBytes);
  const tooLarge = `the answer to GET ${path} is over ${HEALTH_LIMITS.maxResponseBytes} bytes`;
  if (!limited.ok) return { passed: false, reason: tooLarge };
  try {
    await limited.response.arrayBuffer();
  } catch (err) {
    return { passed: false, reason: `the answer to GET ${path} broke off: ${(err as Error).message}` };
  }
  const version = res.headers.get("x-service-version");
  const passed = res.status >= 200 && res.status < 300;
  return {
    passed,
    ...(version ? { version } : {}),
    ...(passed ? {} : { reason: `GET ${path} answered ${res.status}` }),
  };
}

/** Largest HealthCheckResponse accepted: it holds one enum. */
const MAX_HEALTH_REPLY_BYTES = 1024;

export async function checkGrpc(endpoint: Endpoint, service: string, timeoutMs: number): Promise<CheckResult> {
  const method = grpcHealthCheck();
  const outcome = await callUnary(
    endpoint.grpcChannel(),
    method,
    method.encodeFramed({ service }),
    {},
    timeoutMs,
    MAX_HEALTH_REPLY_BYTES,
  );
  const passed = outcome.kind === "reply" && outcome.reply.status === "SERVING";
  const reason =
    outcome.kind === "status"
      ? `${grpcCodeName(outcome.code)}: ${outcome.details}`
      : outcome.kind === "reply"
        ? `the health service answered ${String(outcome.reply.status)} for ${JSON.stringify(service)}`
        : "cancelled";
  return {
    passed,
    ...(outcome.kind !== "cancelled" && outcome.serviceVersion ? { version: outcome.serviceVersion } : {}),
    ...(passed ? {} : { reason }),
  };
}

export class HealthChecker {
  #timer: ReturnType<typeof setInterval> | undefined;
  /** Endpoints with a check out, and the epoch ms by which its verdict is due (its timeout). */
  readonly #checking = new Map<Endpoint, number>();
  /** Epoch ms of the next round (for Retry-After). */
  nextCheckAt = 0;

  constructor(
    private readonly settings: HealthSettings,
    private readonly protocol: "http" | "grpc",
    private readonly endpoints: () => readonly Endpoint[],
    private readonly onResult: (endpoint: Endpoint, result: CheckResult) => void,
  ) {}

  start(): void {
    if (!this.settings.enabled || this.#timer) return;
    this.#timer = setInterval(() => this.checkAll(), this.settings.intervalMs);
    this.#timer.unref?.();
    this.checkAll();
  }

  /** Checks every endpoint not already being checked. */
  checkAll(): void {
    this.nextCheckAt = Date.now() + this.settings.intervalMs;
    for (const endpoint of this.endpoints()) this.check(endpoint);
  }

  /** Checks one endpoint now (a newcomer); a no-op unless started. */
  check(endpoint: Endpoint): void {
    if (!this.#timer || this.#checking.has(endpoint) || endpoint.removed) return;
    const { path, service, timeoutMs } = this.settings;
    this.#checking.set(endpoint, Date.now() + timeoutMs);
    const probe =
      this.protocol === "http" ? checkHttp(endpoint, path, timeoutMs) : checkGrpc(endpoint, service, timeoutMs);
    // A check that throws instead of failing is a failed check, never an unhandled rejection
    // (which ends the process): the endpoint stays out, saying why.
    void probe.then(
      (result) => this.#settle(endpoint, result),
      (err) => this.#settle(endpoint, checkThrew(err)),
    );
  }

  #settle(endpoint: Endpoint, result: CheckResult): void {
    this.#checking.delete(endpoint);
    if (this.#timer && !endpoint.removed) this.onResult(endpoint, result);
  }

  /**
   * Epoch ms by which the next verdict on `endpoint` is due: the end of its check under way, or
   * the next round's (for Retry-After: an unhealthy endpoint comes back only with a passing check).
   */
  verdictDueAt(endpoint: Endpoint): number {
    return this.#checking.get(endpoint) ?? (this.nextCheckAt || Date.now() + this.settings.intervalMs);
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

function checkThrew(err: unknown): CheckResult {
  return { passed: false, reason: `the check itself failed: ${err instanceof Error ? err.message : String(err)}` };
}
