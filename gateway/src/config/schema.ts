/**
 * The shape of routes.yaml, as a TypeBox schema: one source for validation (unknown keys are
 * errors, so a misspelt `methds` is caught) and for the TypeScript types the gateway uses.
 * Every key is documented in gateway/README.md; keep the two in step.
 */
import { type Static, Type as T } from "@sinclair/typebox";
import { RouteAuthSchema } from "../auth/schema.ts";
import { RateLimitSettingsSchema, RouteRateLimitSchema } from "../ratelimit/schema.ts";

const Millis = (description: string, defaultValue: number) =>
  T.Integer({ minimum: 1, maximum: 3_600_000, description, default: defaultValue });

export const HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] as const;

const Count = (description: string, defaultValue: number, maximum = 100) =>
  T.Integer({ minimum: 1, maximum, description, default: defaultValue });
const Percent = (description: string, defaultValue: number) =>
  T.Number({ minimum: 0, maximum: 100, description, default: defaultValue });

/** Resilience settings of an upstream (discovery, balancing, health, ejection, breaker); defaults in load.ts. */
export const DiscoverySchema = T.Object(
  {
    refreshMs: T.Optional(
      Millis("how often host names in endpoints are re-resolved (also soon after a connection failure)", 5_000),
    ),
  },
  { additionalProperties: false },
);
export const BalancerSchema = T.Object(
  {
    algorithm: T.Optional(
      T.Union([T.Literal("p2c"), T.Literal("round-robin")], {
        description: "p2c: power of two choices on in-flight requests × latency EWMA",
        default: "p2c",
      }),
    ),
  },
  { additionalProperties: false },
);
export const HealthCheckSchema = T.Object(
  {
    enabled: T.Optional(T.Boolean({ default: true })),
    intervalMs: T.Optional(Millis("time between two checks of one endpoint", 2_000)),
    timeoutMs: T.Optional(Millis("a check not answered within this fails", 1_000)),
    path: T.Optional(
      T.String({ pattern: "^/", description: "http only: the path probed with GET", default: "/readyz" }),
    ),
    service: T.Optional(
      T.String({
        description: 'grpc only: the service name sent in grpc.health.v1.Health/Check ("" = the whole server)',
        default: "",
      }),
    ),
    unhealthyThreshold: T.Optional(Count("consecutive failed checks that take an endpoint out", 2)),
    healthyThreshold: T.Optional(Count("consecutive passed checks that bring it back", 1)),
  },
  { additionalProperties: false },
);
export const OutlierDetectionSchema = T.Object(
  {
    consecutiveFailures: T.Optional(
      Count(
        "consecutive failed requests (connection error, 5xx, timeout, gRPC UNAVAILABLE) that eject an endpoint",
        3,
        1000,
      ),
    ),
    baseEjectionMs: T.Optional(Millis("first ejection time; doubles with each ejection in a row", 2_000)),
    maxEjectionMs: T.Optional(Millis("cap on one ejection's time", 30_000)),
    maxEjectedPercent: T.Optional(Percent("at most this share of the endpoints is ejected at once (at least one)", 50)),
  },
  { additionalProperties: false },
);
export const CircuitBreakerSchema = T.Object(
  {
    consecutiveFailures: T.Optional(Count("consecutive failed requests that open an endpoint's breaker", 5, 1000)),
    halfOpenAfterMs: T.Optional(Millis("time an open breaker waits before letting one probe request through", 1_000)),
    maxHalfOpenAfterMs: T.Optional(Millis("cap on that wait, which doubles after each failed probe", 10_000)),
  },
  { additionalProperties: false },
);
export const RetrySchema = T.Object(
  {
    attempts: T.Optional(Count("tries per request, the first included (1 = no retries)", 3, 10)),
    budgetPercent: T.Optional(Percent("retries may add at most this share of the route's requests (over 10 s)", 20)),
    minRetriesPerSecond: T.Optional(
      T.Integer({ minimum: 0, maximum: 10_000, description: "retries always allowed at low traffic", default: 5 }),
    ),
    perTryTimeoutMs: T.Optional(
      T.Integer({
        minimum: 1,
        maximum: 3_600_000,
        description: "timeout of one try (default: none); the route's timeoutMs still bounds the whole request",
      }),
    ),
  },
  { additionalProperties: false },
);

export const UpstreamSchema = T.Object(
  {
    protocol: T.Union([T.Literal("http"), T.Literal("grpc")], {
      description: "how the gateway talks to the endpoints",
    }),
    endpoints: T.Union([T.String({ minLength: 1 }), T.Array(T.String({ minLength: 1 }), { minItems: 1 })], {
      description: "host:port entries: a list or one comma-separated string; host names are resolved to all addresses",
    }),
    proto: T.Optional(
      T.String({ minLength: 1, description: "grpc only: the .proto file that defines the methods routes call" }),
    ),
    timeoutMs: T.Optional(Millis("default per-request timeout for routes to this upstream", 10_000)),
    discovery: T.Optional(DiscoverySchema),
    balancer: T.Optional(BalancerSchema),
    healthCheck: T.Optional(HealthCheckSchema),
    outlierDetection: T.Optional(OutlierDetectionSchema),
    circuitBreaker: T.Optional(CircuitBreakerSchema),
  },
  { additionalProperties: false },
);

export const RouteSchema = T.Object(
  {
    name: T.String({
      minLength: 1,
      pattern: "^[A-Za-z0-9_.-]+$",
      description: "unique name, used in metrics and logs",
    }),
    path: T.String({ minLength: 1, pattern: "^/", description: "the request path to match" }),
    match: T.Optional(T.Union([T.Literal("prefix"), T.Literal("exact")], { default: "prefix" })),
    methods: T.Optional(T.Array(T.Union(HTTP_METHODS.map((m) => T.Literal(m))), { minItems: 1, uniqueItems: true })),
    upstream: T.String({ minLength: 1, description: "name of an entry in upstreams" }),
    timeoutMs: T.Optional(Millis("overrides the upstream's timeoutMs", 10_000)),
    maxBodyBytes: T.Optional(
      T.Integer({ minimum: 0, maximum: 64 * 1024 * 1024, description: "overrides limits.maxBodyBytes" }),
    ),
    rateLimit: T.Optional(RouteRateLimitSchema),
    auth: T.Optional(RouteAuthSchema),
    retry: T.Optional(RetrySchema),
    http: T.Optional(
      T.Object(
        {
          rewritePrefix: T.Optional(
            T.String({ pattern: "^/", description: "replaces the matched prefix in the upstream path" }),
          ),
        },
        { additionalProperties: false },
      ),
    ),
    grpc: T.Optional(
      T.Object(
        {
          method: T.String({ pattern: "^[A-Za-z_][\\w.]*/[A-Za-z_]\\w*$", description: "package.Service/Method" }),
          idempotent: T.Optional(
            T.Boolean({ description: "the method is safe to retry after UNAVAILABLE or a timeout", default: false }),
          ),
        },
        { additionalProperties: false },
      ),
    ),
  },
  { additionalProperties: false },
);

export const LimitsSchema = T.Object(
  {
    maxBodyBytes: T.Optional(T.Integer({ minimum: 0, maximum: 64 * 1024 * 1024, default: 1024 * 1024 })),
    // The rest: see gateway/src/limits.ts for how Bun applies them (measured).
    maxHeaderBytes: T.Optional(
      T.Integer({
        minimum: 1024,
        maximum: 1024 * 1024,
        default: 16 * 1024,
        description: "request line + headers; larger → 431",
      }),
    ),
    idleTimeoutSec: T.Optional(
      T.Integer({
        minimum: 1,
        maximum: 255,
        default: 10,
        description: "a connection with nothing moving, or a request body not complete, within this is closed",
      }),
    ),
    maxResponseBytes: T.Optional(
      T.Integer({
        minimum: 1,
        maximum: 2 ** 40,
        default: 16 * 1024 * 1024,
        description: "larger upstream responses: 502, or cut once streaming",
      }),
    ),
    maxJsonDepth: T.Optional(
      T.Integer({
        minimum: 1,
        maximum: 1000,
        default: 32,
        description: "deepest nesting of a JSON request body (gRPC routes; HTTP routes when the body is declared JSON)",
      }),
    ),
    maxJsonStringLength: T.Optional(
      T.Integer({
        minimum: 1,
        maximum: 64 * 1024 * 1024,
        default: 64 * 1024,
        description: "gRPC routes: longest string value, in UTF-16 units",
      }),
    ),
  },
  { additionalProperties: false },
);

export const GatewayConfigSchema = T.Object(
  {
    upstreams: T.Record(T.String({ pattern: "^[A-Za-z0-9_.-]+$" }), UpstreamSchema, { additionalProperties: false }),
    routes: T.Array(RouteSchema, { minItems: 1 }),
    limits: T.Optional(LimitsSchema),
    rateLimit: T.Optional(RateLimitSettingsSchema),
    trustedProxies: T.Optional(
      T.Array(T.String({ minLength: 1 }), {
        description: "CIDRs of proxies in front of the gateway whose X-Forwarded-For is believed; empty: trust none",
      }),
    ),
  },
  { additionalProperties: false },
);

export type RawGatewayConfig = Static<typeof GatewayConfigSchema>;
export type RawUpstream = Static<typeof UpstreamSchema>;
export type RawRoute = Static<typeof RouteSchema>;
export type HttpMethod = (typeof HTTP_METHODS)[number];
