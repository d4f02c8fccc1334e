/**
 * The shape of routes.yaml, as a TypeBox schema: one source for validation (unknown keys are
 * errors, so a misspelt `methds` is caught) and for the TypeScript types the gateway uses.
 * Every key is documented in gateway/README.md; keep the two in step.
 */
import { type Static, Type as T } from "@sinclair/typebox";

const Millis = (description: string, defaultValue: number) =>
  T.Integer({ minimum: 1, maximum: 3_600_000, description, default: defaultValue });

export const HTTP_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] as const;

export const UpstreamSchema = T.Object(
  {
    protocol: T.Union([T.Literal("http"), T.Literal("grpc")], { description: "how the gateway talks to the endpoints" }),
    endpoints: T.Union([T.String({ minLength: 1 }), T.Array(T.String({ minLength: 1 }), { minItems: 1 })], {
      description: "host:port entries: a list or one comma-separated string; host names are resolved to all addresses",
    }),
    proto: T.Optional(T.String({ minLength: 1, description: "grpc only: the .proto file that defines the methods routes call" })),
    timeoutMs: T.Optional(Millis("default per-request timeout for routes to this upstream", 10_000)),
  },
  { additionalProperties: false },
);

export const RouteSchema = T.Object(
  {
    name: T.String({ minLength: 1, pattern: "^[A-Za-z0-9_.-]+$", description: "unique name, used in metrics and logs" }),
    path: T.String({ minLength: 1, pattern: "^/", description: "the request path to match" }),
    match: T.Optional(T.Union([T.Literal("prefix"), T.Literal("exact")], { default: "prefix" })),
    methods: T.Optional(T.Array(T.Union(HTTP_METHODS.map((m) => T.Literal(m))), { minItems: 1, uniqueItems: true })),
    upstream: T.String({ minLength: 1, description: "name of an entry in upstreams" }),
    timeoutMs: T.Optional(Millis("overrides the upstream's timeoutMs", 10_000)),
    maxBodyBytes: T.Optional(T.Integer({ minimum: 0, maximum: 64 * 1024 * 1024, description: "overrides limits.maxBodyBytes" })),
    http: T.Optional(
      T.Object(
        {
          rewritePrefix: T.Optional(T.String({ pattern: "^/", description: "replaces the matched prefix in the upstream path" })),
        },
        { additionalProperties: false },
      ),
    ),
    grpc: T.Optional(
      T.Object(
        {
          method: T.String({ pattern: "^[A-Za-z_][\\w.]*/[A-Za-z_]\\w*$", description: "package.Service/Method" }),
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
  },
  { additionalProperties: false },
);

export const GatewayConfigSchema = T.Object(
  {
    upstreams: T.Record(T.String({ pattern: "^[A-Za-z0-9_.-]+$" }), UpstreamSchema, { additionalProperties: false }),
    routes: T.Array(RouteSchema, { minItems: 1 }),
    limits: T.Optional(LimitsSchema),
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
