/**
 * The `rateLimit` keys of routes.yaml (TypeBox, like config/schema.ts, which includes them):
 * per route one policy or a list of them, and one top-level section for how the limiter runs.
 * Defaults are applied in config/load.ts (route policies) and policy.ts (the top-level section).
 */
import { Type as T } from "@sinclair/typebox";
import { HTTP_TOKEN_PATTERN } from "../../../lib/http-token.ts";
import { FALLBACK_MODES, MAX_PERIOD_MS, PERIOD_PATTERN } from "./policy.ts";

export const RateLimitPolicySchema = T.Object(
  {
    name: T.Optional(
      T.String({
        minLength: 1,
        maxLength: 64,
        pattern: "^[A-Za-z0-9_.-]+$",
        description: "names the policy in the RateLimit headers and Redis keys; default: the key type",
      }),
    ),
    rate: T.Integer({ minimum: 1, maximum: 1_000_000_000, description: "requests admitted per period, sustained" }),
    period: T.Optional(
      T.String({ pattern: PERIOD_PATTERN, description: "the period, e.g. 500ms, 10s, 1m, 1h (or periodMs)" }),
    ),
    periodMs: T.Optional(
      T.Integer({ minimum: 1, maximum: MAX_PERIOD_MS, description: "the period in milliseconds (or period)" }),
    ),
    burst: T.Optional(
      T.Integer({
        minimum: 1,
        maximum: 1_000_000_000,
        description: "requests admitted at once from an idle client; default: rate",
      }),
    ),
    key: T.Optional(
      T.Object(
        {
          type: T.Union([T.Literal("ip"), T.Literal("header"), T.Literal("global")], {
            description: "what one budget belongs to",
            default: "ip",
          }),
          header: T.Optional(
            T.String({
              minLength: 1,
              pattern: HTTP_TOKEN_PATTERN,
              description: 'type "header" only: the request header naming the client, e.g. X-API-Key',
            }),
          ),
        },
        { additionalProperties: false, description: "whose budget a request uses; default: the client address" },
      ),
    ),
  },
  { additionalProperties: false },
);

export const RouteRateLimitSchema = T.Union([RateLimitPolicySchema, T.Array(RateLimitPolicySchema, { minItems: 1 })], {
  description: "one rate-limit policy or a list; a request must be admitted by every one",
});

export const RateLimitSettingsSchema = T.Object(
  {
    fallback: T.Optional(
      T.Union(
        FALLBACK_MODES.map((m) => T.Literal(m)),
        {
          description:
            "while Redis is unreachable: local (limit ÷ live gateways, in memory), open (admit all) or closed (refuse with 503)",
          default: "local",
        },
      ),
    ),
    redisTimeoutMs: T.Optional(
      T.Integer({
        minimum: 1,
        maximum: 10_000,
        description: "bound on one Redis call; past it the fallback decides",
        default: 100,
      }),
    ),
    keyPrefix: T.Optional(
      T.String({ maxLength: 128, description: "prefix of every Redis key the limiter writes", default: "portico:rl:" }),
    ),
    replicas: T.Optional(
      T.Union([T.Literal("auto"), T.Integer({ minimum: 1, maximum: 10_000 })], {
        description:
          "gateways sharing a limit in the local fallback: auto (counted from GATEWAY_PEERS / GATEWAY_PEERS_DNS) or a fixed number",
        default: "auto",
      }),
    ),
  },
  { additionalProperties: false, description: "how the shared rate limiter runs (every route's policies use it)" },
);
