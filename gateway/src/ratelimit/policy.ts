/**
 * Rate-limit policies as the limiter uses them: compiled once from routes.yaml (rate per period,
 * burst, what identifies a client) with the GCRA figures and the `RateLimit-Policy` header text
 * precomputed, so the request path only looks things up.
 */

export type PolicyKey = { type: "ip" } | { type: "global" } | { type: "header"; header: string };

export interface RateLimitPolicy {
  /** Unique within its route; the policy identifier in the RateLimit headers and the Redis key. */
  name: string;
  /** Requests admitted per period, sustained. */
  rate: number;
  periodMs: number;
  /** Requests admitted at once from an idle client. */
  burst: number;
  key: PolicyKey;
  /** GCRA emission interval: one request is earned back every this many microseconds. */
  intervalUs: number;
  /** This policy's item of the `RateLimit-Policy` header, e.g. `"ip";q=100;w=60`. */
  headerItem: string;
  /** The name as a Structured Field String, e.g. `"ip"`: quoted once, not per response's `RateLimit` header. */
  quotedName: string;
}

/** The policies of one route, ready for the request path. */
export interface RouteRateLimit {
  policies: RateLimitPolicy[];
  /** The whole `RateLimit-Policy` header value for the route. */
  policyHeader: string;
}

/** Top-level `rateLimit` settings of routes.yaml, defaults applied. */
export interface RateLimitSettings {
  /** What the gateway does while Redis is unreachable. */
  fallback: FallbackMode;
  /** Bound on one Redis call; past it the request is decided by the fallback. */
  redisTimeoutMs: number;
  /** Prefix of every Redis key the limiter writes. */
  keyPrefix: string;
  /** How many gateways share the limit in `local` fallback: counted (`auto`) or fixed. */
  replicas: "auto" | number;
}

export type FallbackMode = "local" | "open" | "closed";
export const FALLBACK_MODES = ["local", "open", "closed"] as const;

export const DEFAULT_RATE_LIMIT_SETTINGS: RateLimitSettings = {
  fallback: "local",
  redisTimeoutMs: 100,
  keyPrefix: "portico:rl:",
  replicas: "auto",
};

/** The route-level policy as written in routes.yaml (after schema validation). */
export interface RawPolicy {
  name?: string;
  rate: number;
  period?: string;
  periodMs?: number;
  burst?: number;
  key?: { type: "ip" | "header" | "global"; header?: string };
}

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 } as const;
export const MAX_PERIOD_MS = 7 * 24 * 3_600_000;
export const PERIOD_PATTERN = "^[1-9][0-9]*(ms|s|m|h)$";

/** "1m" → 60000; the schema has already checked the shape. */
export function parsePeriod(period: string): number {
  const m = /^(\d+)(ms|s|m|h)$/.exec(period);
  if (!m) throw new Error(`"${period}" is not a period like 500ms, 10s, 1m or 1h`);
  return Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS];
}

/** A client needs at least one microsecond between requests: the Lua script counts in µs. */
const MIN_INTERVAL_US = 1;

/**
 * Compiles a route's policies. Problems are reported with the path of the field below the
 * route's `rateLimit`, so the config loader can name the line; the result is only used when
 * there were none.
 */
export function compilePolicies(
  raw: RawPolicy | RawPolicy[],
  report: (path: (string | number)[], message: string) => void,
): RouteRateLimit {
  const list = Array.isArray(raw) ? raw : [raw];
  const at = (i: number, ...field: string[]) => (Array.isArray(raw) ? [i, ...field] : field);
  const names = new Set<string>();
  const policies = list.map((p, i): RateLimitPolicy => {
    const keyType = p.key?.type ?? "ip";
    const name = p.name ?? keyType;
    if (names.has(name)) {
      report(
        at(i, p.name ? "name" : "key"),
        `another policy of this route is already named "${name}"; give each policy a distinct name`,
      );
    }
    names.add(name);

    let periodMs = 1000;
    if (p.period !== undefined && p.periodMs !== undefined)
      report(at(i, "periodMs"), 'give either "period" or "periodMs", not both');
    else if (p.period !== undefined) periodMs = parsePeriod(p.period);
    else if (p.periodMs !== undefined) periodMs = p.periodMs;
    else report(at(i, "rate"), 'a policy needs "period" (e.g. 1m) or "periodMs"');
    if (periodMs > MAX_PERIOD_MS)
      report(at(i, "period"), `${p.period} is longer than the longest supported period, 7 days (168h)`);

    const intervalUs = (periodMs * 1000) / p.rate;
    if (intervalUs < MIN_INTERVAL_US)
      report(at(i, "rate"), `${p.rate} per ${periodMs} ms is above the supported 1,000,000 requests per second`);

    let key: PolicyKey;
    if (keyType === "header") {
      if (!p.key?.header)
        report(
          at(i, "key"),
          'key type "header" needs "header": the request header that names the client, e.g. X-API-Key',
        );
      key = { type: "header", header: (p.key?.header ?? "").toLowerCase() };
    } else {
      if (p.key?.header) report(at(i, "key", "header"), `"header" only applies to key type "header", not "${keyType}"`);
      key = { type: keyType };
    }
    const burst = p.burst ?? p.rate;
    return {
      name,
      rate: p.rate,
      periodMs,
      burst,
      key,
      intervalUs,
      headerItem: policyHeaderItem(name, p.rate, periodMs),
      quotedName: sfString(name),
    };
  });
  return { policies, policyHeader: policies.map((p) => p.headerItem).join(", ") };
}

/**
 * `"name";q=<quota>;w=<window s>` (draft-ietf-httpapi-ratelimit-headers). The window is whole
 * seconds, so a sub-second or fractional period is stated as the quota over the whole seconds
 * that hold it, rounded down — never more than is admitted: 10 per 500 ms is `q=20;w=1`, 1 per
 * 400 ms `q=2;w=1` (2.5 admitted), 7 per 1500 ms `q=9;w=2` (9.33).
 */
function policyHeaderItem(name: string, rate: number, periodMs: number): string {
  const windowS = Math.max(1, Math.ceil(periodMs / 1000));
  const quota = Math.floor((rate * windowS * 1000) / periodMs);
  return `${sfString(name)};q=${quota};w=${windowS}`;
}

/** A Structured Field String (RFC 8941 §3.3.3): quoted, with `\` and `"` escaped. */
export function sfString(value: string): string {
  return `"${value.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}
