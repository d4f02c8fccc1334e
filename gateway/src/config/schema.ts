/**
 * The shape of routes.yaml, as a TypeBox schema: one source for validation (unknown keys are
 * errors, so a misspelt `methds` is caught) and for the TypeScript types the gateway uses.
 * docs/config-reference.md is generated from it (`make docs`): the descriptions here are that reference.
 */
import { type Static, Type as T } from "@sinclair/typebox";
import { RouteAuthSchema } from "../auth/schema.ts";
import { RateLimitSettingsSchema, RouteRateLimitSchema } from "../ratelimit/schema.ts";

/** A duration in ms; without `defaultValue`, an unset one is worked out by the loader (config/load.ts). */
const Millis = (description: string, defaultValue?: number) =>
  T.Integer({
    minimum: 1,
    maximum: 3_600_000,
    description,
    ...(defaultValue === undefined ? {} : { default: defaultValue }),
  });

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
  { additionalProperties: false, description: "how the gateway follows the addresses behind endpoint host names" },
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
  { additionalProperties: false, description: "how each request picks one endpoint" },
);
export const HealthCheckSchema = T.Object(
  {
    enabled: T.Optional(T.Boolean({ default: true, description: "active checks on every endpoint, traffic or not" })),
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
  {
    additionalProperties: false,
    description: "active health checks: HTTP GET of path, or gRPC Health/Check; a passing check readmits fully",
  },
);
export const OutlierDetectionSchema = T.Object(
  {
    consecutiveFailures: T.Optional(
      Count(
        "consecutive failed requests (connection error, 5xx other than 501, timeout, gRPC UNAVAILABLE) that eject an endpoint",
        3,
        1000,
      ),
    ),
    baseEjectionMs: T.Optional(Millis("first ejection time; doubles with each ejection in a row", 2_000)),
    maxEjectionMs: T.Optional(Millis("cap on one ejection's time", 30_000)),
    maxEjectedPercent: T.Optional(
      Percent("at most this share of the endpoints is ejected at once (at least one; 0 turns ejection off)", 50),
    ),
  },
  {
    additionalProperties: false,
    description: "passive ejection of an endpoint after failures in a row, for a capped time",
  },
);
export const CircuitBreakerSchema = T.Object(
  {
    consecutiveFailures: T.Optional(Count("consecutive failed requests that open an endpoint's breaker", 5, 1000)),
    halfOpenAfterMs: T.Optional(Millis("time an open breaker waits before letting one probe request through", 1_000)),
    maxHalfOpenAfterMs: T.Optional(Millis("cap on that wait, which doubles after each failed probe", 10_000)),
  },
  { additionalProperties: false, description: "one breaker per endpoint (closed, open, half-open)" },
);
export const RetrySchema = T.Object(
  {
    attempts: T.Optional(Count("tries per request, the first included (1 = no retries)", 3, 10)),
    budgetPercent: T.Optional(Percent("retries may add at most this share of the route's requests (over 10 s)", 20)),
    minRetriesPerSecond: T.Optional(
      T.Integer({ minimum: 0, maximum: 10_000, description: "retries always allowed at low traffic", default: 5 }),
    ),
    perTryTimeoutMs: T.Optional(
      Millis("timeout of one try (default: none); the route's timeoutMs still bounds the whole request"),
    ),
  },
  {
    additionalProperties: false,
    description:
      "retries on an endpoint not tried yet: connection failures always, 502/503/504 and timeouts only when idempotent",
  },
);

/** Progressive delivery: how a canary version of this upstream is stepped up and judged (canary/controller.ts). */
export const CanarySchema = T.Object(
  {
    steps: T.Optional(
      T.Array(T.Integer({ minimum: 1, maximum: 100 }), {
        minItems: 1,
        maxItems: 20,
        default: [5, 25, 50, 100],
        description:
          "the canary's share of requests (percent) at each step, rising; a last step of 100 promotes it, else it stays at the last",
      }),
    ),
    minRequests: T.Optional(
      Count("requests the canary must answer at a step (on this gateway) before the step is judged", 100, 1_000_000),
    ),
    minStepMs: T.Optional(Millis("the shortest time a step lasts before it is judged", 10_000)),
    maxErrorRateIncrease: T.Optional(
      T.Number({
        minimum: 0,
        maximum: 100,
        default: 1,
        description:
          "the canary fails when its error rate (5xx, resets, timeouts, gRPC UNAVAILABLE/INTERNAL…) is more than this many points above the stable version's in the same window",
      }),
    ),
    maxP99Ratio: T.Optional(
      T.Number({
        minimum: 1,
        maximum: 100,
        default: 1.2,
        description: "the canary fails when its p99 latency is above this × the stable version's p99…",
      }),
    ),
    p99SlackMs: T.Optional(
      T.Number({
        minimum: 0,
        maximum: 60_000,
        default: 20,
        description:
          "…and above the stable p99 + this many ms: a step's p99 rests on few answers, so a single slow one (a GC pause, a busy machine) must not fail a good canary",
      }),
    ),
    stickyHeader: T.Optional(
      T.String({
        minLength: 1,
        pattern: "^[A-Za-z0-9-]+$",
        description:
          "a request header whose value keeps a client on one version while the weight stays (hashed against the weight); without it, requests are split one by one",
      }),
    ),
  },
  {
    additionalProperties: false,
    description:
      "the policy a canary of this upstream follows once started through the admin API (POST /canary/<upstream>/start)",
  },
);

/** TLS towards one upstream (gateway as the client): HTTPS to http upstreams, gRPC over TLS to grpc ones. */
export const UpstreamTlsSchema = T.Object(
  {
    enabled: T.Optional(
      T.Boolean({ default: true, description: "false: plain text, the other keys ignored (e.g. `${TLS:-false}`)" }),
    ),
    ca: T.String({
      minLength: 1,
      description: "PEM CA bundle the upstream's certificates must chain to (the cluster CA)",
    }),
    cert: T.Optional(
      T.String({ minLength: 1, description: "PEM client certificate the gateway presents (mutual TLS); with key" }),
    ),
    key: T.Optional(T.String({ minLength: 1, description: "PEM private key of cert" })),
    serverName: T.Optional(
      T.String({
        minLength: 1,
        description:
          "the name the upstream's certificate must carry (SNI and verification); default: the host name of its endpoints (e.g. webapp-headless)",
      }),
    ),
    reloadIntervalMs: T.Optional(
      Millis("how often the files are checked for a renewal; new connections use the new files", 5_000),
    ),
  },
  { additionalProperties: false, description: "TLS to this upstream; the files are re-read when they change" },
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
      T.String({
        minLength: 1,
        description:
          "grpc only: the .proto that defines the methods routes call; a relative path is looked up in the working directory, then beside routes.yaml, then among the protos embedded in the binary (those in proto/)",
      }),
    ),
    timeoutMs: T.Optional(Millis("default per-request timeout for routes to this upstream", 10_000)),
    discovery: T.Optional(DiscoverySchema),
    balancer: T.Optional(BalancerSchema),
    healthCheck: T.Optional(HealthCheckSchema),
    outlierDetection: T.Optional(OutlierDetectionSchema),
    circuitBreaker: T.Optional(CircuitBreakerSchema),
    tls: T.Optional(UpstreamTlsSchema),
    canary: T.Optional(CanarySchema),
  },
  { additionalProperties: false, description: "one upstream service: its replicas and how the gateway treats them" },
);

export const RouteSchema = T.Object(
  {
    name: T.String({
      minLength: 1,
      pattern: "^[A-Za-z0-9_.-]+$",
      description: "unique name, used in metrics and logs",
    }),
    path: T.String({ minLength: 1, pattern: "^/", description: "the request path to match" }),
    match: T.Optional(
      T.Union([T.Literal("prefix"), T.Literal("exact")], {
        default: "prefix",
        description:
          "prefix matches whole segments (/projects matches /projects/1, not /projectsX); a trailing slash is ignored",
      }),
    ),
    methods: T.Optional(
      T.Array(T.Union(HTTP_METHODS.map((m) => T.Literal(m))), {
        minItems: 1,
        uniqueItems: true,
        description:
          "methods routed (default: all; gRPC routes: POST); others get 405 with Allow; HEAD goes wherever GET does",
      }),
    ),
    upstream: T.String({ minLength: 1, description: "name of an entry in upstreams" }),
    timeoutMs: T.Optional(
      Millis(
        "total time for the upstream to answer, retries included, past it 504 (default: the upstream's timeoutMs)",
      ),
    ),
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
            T.String({
              pattern: "^/",
              description:
                "replaces the route's path in the upstream path (the matched prefix; on an exact route, the whole path), joined with one slash",
            }),
          ),
        },
        { additionalProperties: false, description: "HTTP forwarding options" },
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
        {
          additionalProperties: false,
          description: "makes the route a JSON ⇄ gRPC transcoded call (unary methods only)",
        },
      ),
    ),
  },
  { additionalProperties: false, description: "one route: what it matches and where it sends the request" },
);

export const LimitsSchema = T.Object(
  {
    maxBodyBytes: T.Optional(
      T.Integer({
        minimum: 0,
        maximum: 64 * 1024 * 1024,
        default: 1024 * 1024,
        description: "largest request body of a route without its own maxBodyBytes; larger → 413",
      }),
    ),
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
  { additionalProperties: false, description: "size and time limits on what clients and upstreams send" },
);

/** The public HTTPS listener (HTTPS_PORT). */
export const ListenerTlsSchema = T.Object(
  {
    enabled: T.Optional(
      T.Boolean({
        default: true,
        description: "false: no HTTPS listener, the other keys ignored (e.g. `${TLS:-false}`)",
      }),
    ),
    certificates: T.Array(
      T.Object(
        {
          cert: T.String({ minLength: 1, description: "PEM certificate chain, leaf first" }),
          key: T.String({ minLength: 1, description: "PEM private key of cert" }),
          serverNames: T.Optional(
            T.Array(T.String({ minLength: 1 }), {
              minItems: 1,
              description:
                "SNI names this certificate answers (exact, or `*.example.com`); the first certificate also answers every other name",
            }),
          ),
        },
        { additionalProperties: false },
      ),
      { minItems: 1, description: "one or more certificates; the first is the default" },
    ),
    redirectHttp: T.Optional(
      T.Boolean({
        default: false,
        description:
          "the plain listener answers 308 to the same URL over https (HTTPS_PORT); off: it serves routes too",
      }),
    ),
    redirectPort: T.Optional(
      T.Integer({
        minimum: 1,
        maximum: 65_535,
        description:
          "the port in the redirect's Location: where clients reach HTTPS (e.g. 443 behind a load balancer); default HTTPS_PORT",
      }),
    ),
    hsts: T.Optional(
      T.Object(
        {
          maxAgeSec: T.Integer({ minimum: 0, maximum: 63_072_000, description: "Strict-Transport-Security max-age" }),
          includeSubDomains: T.Optional(
            T.Boolean({ default: false, description: "the policy covers every subdomain of the host too" }),
          ),
          preload: T.Optional(
            T.Boolean({
              default: false,
              description:
                "asks browsers to ship the policy built in (hstspreload.org; hard to undo); needs includeSubDomains and maxAgeSec ≥ 31536000",
            }),
          ),
        },
        { additionalProperties: false, description: "sent on every HTTPS response when set" },
      ),
    ),
    reloadIntervalMs: T.Optional(
      Millis("how often the files are checked for a renewal; new handshakes get the new certificate", 5_000),
    ),
  },
  {
    additionalProperties: false,
    description: "HTTPS for clients: TLS 1.2 and 1.3, certificates reloaded when their files change",
  },
);

export const GatewayConfigSchema = T.Object(
  {
    upstreams: T.Record(T.String({ pattern: "^[A-Za-z0-9_.-]+$" }), UpstreamSchema, {
      additionalProperties: false,
      description: "the services routes send requests to, by name",
    }),
    routes: T.Array(RouteSchema, {
      minItems: 1,
      description: "matched in order of specificity: exact, then longest prefix",
    }),
    limits: T.Optional(LimitsSchema),
    rateLimit: T.Optional(RateLimitSettingsSchema),
    tls: T.Optional(ListenerTlsSchema),
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
