/**
 * One request's way through an upstream: pick an endpoint (balancer, skipping ejected, unhealthy
 * and open ones) → send through its breaker with what is left of the route timeout → classify
 * the try once (outcome.ts) and record that verdict (breaker, latency, outlier detection, the
 * `onTry` hook) → retry on another endpoint when that is safe and the route's retry budget allows.
 *
 * Safe to retry: nothing reached the endpoint (connection refused; any method), or an idempotent
 * request got 502/503/504, a reset, gRPC UNAVAILABLE, or a per-try timeout. The route's
 * `timeoutMs` bounds the whole request, retries included.
 *
 * The transports are plain send functions; what the gateway observes of each try (a client
 * span, per-endpoint metrics) comes in through `TryHooks` (telemetry/), never from them.
 *
 * A client that goes away mid-request is found by the transports from CLIENT_WATCH_MS into a try
 * on (client-watch.ts); they then abandon it (the HTTP connection is closed, the gRPC stream reset
 * with CANCEL), no retry is sent for it, and the try comes back `cancelled`: returned at once, never retried, and no evidence about the endpoint — not counted
 * for health, latency, ejection or the canary, and not by a closed breaker. A half-open
 * breaker's probe that is cancelled counts as failed: only an answer closes a breaker.
 */
import type { RouteConfig } from "../config/load.ts";
import type { RequestContext } from "../context.ts";
import { gatewayProblem } from "../errors.ts";
import { isBreakerRejection } from "./breaker.ts";
import type { Endpoint } from "./endpoint.ts";
import { CANCELLED, type ClientWatch, clientGone } from "./client-watch.ts";
import { classify, isRetryable, type Outcome, type Verdict, versionOf } from "./outcome.ts";
import { RetryBudget } from "./retry-budget.ts";
import type { Upstream } from "./upstream.ts";

/** No endpoint could take the request: answer 503 with Retry-After. */
export interface NoEndpoint {
  kind: "no-endpoint";
  retryAfterSeconds: number;
  /** How many endpoints the upstream has (0: discovery found none). */
  endpoints: number;
}

/** Sends the request to one endpoint within `timeoutMs`; never rejects (failures are outcomes). */
export type Send<O extends Outcome> = (endpoint: Endpoint, timeoutMs: number) => Promise<O>;

/**
 * What the request path observes of each try. `beforeTry` runs just before the send, once the
 * breaker let the try through — where a client span starts and writes its `traceparent` into the
 * headers or metadata about to go out; what it returns is handed back to `onTry` with the try's
 * outcome, its verdict and its latency.
 */
export interface TryHooks<O extends Outcome, T = unknown> {
  beforeTry(endpoint: Endpoint): T;
  onTry(token: T, endpoint: Endpoint, outcome: O, verdict: Verdict, latencyMs: number): void;
}

/** Both transports' outcome for a client gone (HttpOutcome and GrpcOutcome share it). */

/** Thrown inside the breaker's call for a cancelled try: cockatiel then records neither success nor failure. */
const NOT_COUNTED = new Error("the try was cancelled: not counted by the breaker");

/** Budgets live per route object: a reloaded config starts with fresh budgets. */
const budgets = new WeakMap<RouteConfig, RetryBudget>();

function budgetOf(route: RouteConfig): RetryBudget {
  let budget = budgets.get(route);
  if (!budget)
    budgets.set(route, (budget = new RetryBudget(route.retry.budgetPercent, route.retry.minRetriesPerSecond)));
  return budget;
}

export async function dispatch<O extends Outcome>(
  upstream: Upstream,
  route: RouteConfig,
  ctx: RequestContext,
  idempotent: boolean,
  send: Send<O>,
  hooks?: TryHooks<O>,
  /**
   * The canary's sticky header value, when its policy names one (Upstream.stickyKey). Optional
   * rather than defaulted: a default makes the parameter list cost a scope object per call.
   */
  stickyKey?: string | null,
  /**
   * Whoever asked (the client's request): a retry is not sent once it is gone. The transports
   * look at it themselves only CLIENT_WATCH_MS into a try (client-watch.ts), so a try that failed
   * sooner leaves it to the retry.
   */
  client?: ClientWatch,
): Promise<O | NoEndpoint> {
  const start = performance.now();
  const deadline = start + route.timeoutMs;
  const { attempts, perTryTimeoutMs } = route.retry;
  const budget = budgetOf(route);
  budget.recordRequest(start);
  let previous: Endpoint | undefined;
  // With a canary running, the request goes to one version's endpoints (retries too).
  const canary = upstream.canary;
  const toCanary = canary?.active ? canary.chooseCanary(stickyKey ?? null) : undefined;
  let endpoint = upstream.pick(undefined, undefined, toCanary);
  let attempt = 0;
  let refusals = 0;
  /** Every endpoint tried, from the third try on (the first two are pick()'s own skips). */
  let tried: Set<Endpoint> | undefined;
  for (;;) {
    if (!endpoint) return noEndpoint(upstream);
    ctx.endpoint = endpoint.address;
    const sentAt = performance.now();
    const remaining = deadline - sentAt;
    const timeoutMs = Math.max(
      1,
      Math.ceil(perTryTimeoutMs !== undefined && perTryTimeoutMs < remaining ? perTryTimeoutMs : remaining),
    );
    // Inline rather than a helper: one async frame less per request on the hot path.
    const target = endpoint;
    target.inflight++;
    target.requests++;
    target.lastRequestAt = sentAt;
    // Read inside the breaker's call from this block's scope (the function's `attempt` would cost
    // the call an object more per request: bench/census.ts).
    const isRetry = attempt > 0;
    // Set inside the breaker's call (declared so that control flow does not narrow them away).
    let outcome = undefined as O | undefined;
    let verdict = "ok" as Verdict;
    let token: unknown;
    try {
      // The breaker records the verdict given here; it does not look at the outcome itself.
      await target.breaker.execute(async () => {
        token = hooks?.beforeTry(target);
        // A try not sent counts as the transports count a cancelled one; a retry counts once sent.
        if (isRetry && clientGone(client)) outcome = CANCELLED as O;
        else {
          if (isRetry) upstream.retries.attempted++;
          outcome = await send(target, timeoutMs);
        }
        verdict = classify(outcome);
        // A closed breaker skips it; a half-open one takes "cancelled" as the failed probe it is.
        if (verdict === "cancelled" && target.breaker.state !== "half-open") throw NOT_COUNTED;
        return verdict;
      });
    } catch (err) {
      if (err !== NOT_COUNTED) {
        if (!isBreakerRejection(err)) throw err;
        target.requests--;
      }
    } finally {
      target.inflight--;
    }
    if (outcome === undefined) {
      // The breaker reopened between pick and send (a probe raced us): not a try, pick again.
      if (++refusals > upstream.endpoints.length) return noEndpoint(upstream);
      endpoint = upstream.pick(target, previous, toCanary);
      continue;
    }
    attempt++;
    const now = performance.now();
    if (verdict === "cancelled") {
      hooks?.onTry(token, target, outcome, verdict, now - sentAt);
      return outcome;
    }
    upstream.record(endpoint, verdict, now - sentAt, now, versionOf(outcome));
    hooks?.onTry(token, target, outcome, verdict, now - sentAt);
    if (verdict === "ok" || attempt >= attempts || !isRetryable(verdict, idempotent) || deadline - now < 1)
      return outcome;
    // pick() skips the last two endpoints tried; from the third try on, every one tried is kept.
    if (attempt >= 2) {
      tried ??= new Set(previous ? [previous] : []);
      tried.add(endpoint);
    }
    const next = upstream.pick(endpoint, previous, toCanary, tried);
    if (!next) return outcome;
    // For a client already gone the retry is not sent (the next turn ends it as cancelled), so it
    // takes nothing from the budget that the route's other requests retry on.
    if (!clientGone(client) && !budget.tryRetry(now)) {
      upstream.retries.budgetExhausted++;
      return outcome;
    }
    discard(outcome);
    previous = endpoint;
    endpoint = next;
  }
}

function noEndpoint(upstream: Upstream): NoEndpoint {
  return { kind: "no-endpoint", retryAfterSeconds: upstream.retryAfterSeconds(), endpoints: upstream.endpoints.length };
}

/** Frees the connection of a response that a retry replaces. */
function discard(outcome: Outcome): void {
  if (outcome.kind === "response") outcome.response.body?.cancel().catch(() => {});
}

/**
 * What a request whose client went away ends with: nobody reads it (Bun.serve drops it), but the
 * access log, the metrics and the server span say 499, nginx's "client closed request".
 */
export function clientGoneProblem(upstreamName: string, endpoint: string | undefined, requestId: string): Response {
  return gatewayProblem({
    status: 499,
    title: "Client closed request",
    requestId,
    detail: `the client went away before ${upstreamName}${endpoint ? ` (${endpoint})` : ""} answered; the upstream call was cancelled`,
    extensions: { upstream: upstreamName },
  });
}

/** The 503 for "no endpoint can take this now": problem+json with Retry-After, at once. */
export function noEndpointProblem(upstreamName: string, result: NoEndpoint, requestId: string): Response {
  const detail =
    result.endpoints === 0
      ? `upstream "${upstreamName}" has no endpoints (discovery found none)`
      : `all ${result.endpoints} endpoints of upstream "${upstreamName}" are out (breaker open, ejected or failing health checks)`;
  return gatewayProblem({
    status: 503,
    title: "No upstream available",
    requestId,
    detail,
    extensions: { upstream: upstreamName, retry_after_s: result.retryAfterSeconds },
    headers: { "retry-after": String(result.retryAfterSeconds) },
  });
}
