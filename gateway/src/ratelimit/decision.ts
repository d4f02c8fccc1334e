/**
 * One rate-limit decision and what the client sees of it:
 *
 * - every response of a limited route carries `RateLimit-Policy` (the policies, fixed) and
 *   `RateLimit` (this client's live figures), the fields of draft-ietf-httpapi-ratelimit-headers:
 *     RateLimit-Policy: "ip";q=100;w=60, "api-key";q=1000;w=3600
 *     RateLimit: "ip";r=42;t=35, "api-key";r=999;t=4
 *   q/w: quota per window (s); r: requests left now; t: seconds until the full quota is back.
 *   The IETF fields, rather than the older RateLimit-Limit/-Remaining/-Reset trio, because a
 *   request may fall under several policies and the trio can describe only one.
 * - a refused request gets `429` problem+json with `Retry-After` (whole seconds, rounded up: a
 *   request sent after it is admitted) and the policy that refused it.
 * - with the `closed` fallback and Redis unreachable, `503` with `Retry-After: 1`: the client did
 *   nothing wrong, so it is not told it sent too many requests.
 */
import { gatewayProblem } from "../errors.ts";
import type { GcraResult } from "./gcra.ts";
import type { RouteRateLimit } from "./policy.ts";

export type DecisionKind = "allowed" | "denied" | "unavailable";

export class RateLimitDecision {
  constructor(
    readonly route: string,
    readonly limits: RouteRateLimit,
    readonly kind: DecisionKind,
    /** Per policy, in the route's order; null when no figures are known (open/closed fallback). */
    readonly results: readonly GcraResult[] | null,
  ) {}

  get allowed(): boolean {
    return this.kind === "allowed";
  }

  /** The `RateLimit` header value, or null without figures. */
  get rateLimitHeader(): string | null {
    const results = this.results;
    if (!results) return null;
    let value = "";
    for (let i = 0; i < results.length; i++) {
      const r = results[i]!;
      if (i > 0) value += ", ";
      value += `${this.limits.policies[i]!.quotedName};r=${r.remaining};t=${Math.ceil(r.resetMs / 1000)}`;
    }
    return value;
  }

  /** Seconds until the refusing policies admit a request again (0 when admitted). */
  get retryAfterS(): number {
    if (this.kind === "unavailable") return 1;
    let ms = 0;
    for (const r of this.results ?? []) if (r.retryAfterMs > ms) ms = r.retryAfterMs;
    return Math.ceil(ms / 1000);
  }

  /** Adds the RateLimit fields to a response of the route. */
  setHeaders(headers: Headers): void {
    headers.set("ratelimit-policy", this.limits.policyHeader);
    const live = this.rateLimitHeader;
    if (live !== null) headers.set("ratelimit", live);
  }

  /** The response for a request this decision refuses. */
  response(requestId: string): Response {
    const headers: Record<string, string> = {
      "retry-after": String(this.retryAfterS),
      "ratelimit-policy": this.limits.policyHeader,
    };
    const live = this.rateLimitHeader;
    if (live !== null) headers.ratelimit = live;
    if (this.kind === "unavailable") {
      return gatewayProblem({
        status: 503,
        title: "Rate limiter unavailable",
        requestId,
        detail: `route "${this.route}" is rate limited and the shared rate-limit store cannot be reached; the gateway is configured to refuse such requests meanwhile`,
        extensions: { route: this.route },
        headers,
      });
    }
    const refusing = this.#refusingPolicy();
    const policy = this.limits.policies[refusing]!;
    return gatewayProblem({
      status: 429,
      title: "Too Many Requests",
      requestId,
      detail: `rate limit "${policy.name}" of route "${this.route}" exceeded (${policy.rate} requests per ${formatPeriod(policy.periodMs)}); retry in ${this.retryAfterS} s`,
      extensions: { route: this.route, policy: policy.name, retry_after: this.retryAfterS },
      headers,
    });
  }

  /** The index of the policy that refuses for longest. */
  #refusingPolicy(): number {
    let index = 0;
    const results = this.results ?? [];
    for (let i = 1; i < results.length; i++) if (results[i]!.retryAfterMs > results[index]!.retryAfterMs) index = i;
    return index;
  }
}

export function formatPeriod(ms: number): string {
  if (ms % 3_600_000 === 0) return ms === 3_600_000 ? "hour" : `${ms / 3_600_000} hours`;
  if (ms % 60_000 === 0) return ms === 60_000 ? "minute" : `${ms / 60_000} minutes`;
  if (ms % 1000 === 0) return ms === 1000 ? "second" : `${ms / 1000} s`;
  return `${ms} ms`;
}
