/** The resilience keys of routes.yaml: defaults filled in, mistakes named with their line. */
import { describe, expect, test } from "bun:test";
import type { Static, TObject } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import { ConfigError, loadConfig, parseConfig } from "../src/config/load.ts";
import {
  BalancerSchema,
  CircuitBreakerSchema,
  DiscoverySchema,
  HealthCheckSchema,
  OutlierDetectionSchema,
  RetrySchema,
} from "../src/config/schema.ts";

/** The defaults a section gets, from its schema: their one source. */
const defaultsOf = <S extends TObject>(schema: S) => Value.Default(schema, {}) as Required<Static<S>>;

const base = (upstreamExtra: string, routeExtra = "") => `upstreams:
  web:
    protocol: http
    endpoints: 127.0.0.1:1
${upstreamExtra}
routes:
  - name: r
    path: /r
    upstream: web
${routeExtra}
`;

function problems(text: string): string[] {
  try {
    parseConfig(text, "routes.yaml");
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.line} ${p.field}: ${p.message}`);
    throw err;
  }
  return [];
}

describe("resilience config", () => {
  test("every key has a default, so an upstream and a route need none of them", () => {
    const sections = {
      discovery: DiscoverySchema,
      balancer: BalancerSchema,
      healthCheck: HealthCheckSchema,
      outlierDetection: OutlierDetectionSchema,
      circuitBreaker: CircuitBreakerSchema,
    };
    // A key added to a schema without a default would be missing here (retry.perTryTimeoutMs has
    // none on purpose: without it only the route's timeout bounds the tries).
    for (const schema of [...Object.values(sections), RetrySchema]) {
      const keys = Object.keys(schema.properties).filter((k) => k !== "perTryTimeoutMs");
      expect(Object.keys(defaultsOf(schema)).sort()).toEqual(keys.sort());
    }
    const config = parseConfig(base(""), "routes.yaml");
    const upstream = config.upstreams.get("web")!;
    for (const [name, schema] of Object.entries(sections))
      expect({ [name]: upstream[name as keyof typeof sections] as object }).toEqual({ [name]: defaultsOf(schema) });
    expect(config.routes[0]!.retry).toEqual(defaultsOf(RetrySchema));
    // The ones docs/gateway.md states and its tuning advice builds on.
    expect(upstream.circuitBreaker.consecutiveFailures).toBe(5);
    expect(upstream.outlierDetection.consecutiveFailures).toBe(3);
    expect(config.routes[0]!.retry.attempts).toBe(3);
  });

  test("a value given overrides only that key", () => {
    const config = parseConfig(
      base("    circuitBreaker: { halfOpenAfterMs: 250 }", "    retry: { attempts: 1 }"),
      "routes.yaml",
    );
    expect(config.upstreams.get("web")!.circuitBreaker).toEqual({
      ...defaultsOf(CircuitBreakerSchema),
      halfOpenAfterMs: 250,
    });
    expect(config.routes[0]!.retry.attempts).toBe(1);
  });

  test("a misspelt key is named with its line and a suggestion", () => {
    expect(problems(base("    circuitBreaker:\n      halfOpenAfterMS: 250"))).toEqual([
      '6 upstreams.web.circuitBreaker.halfOpenAfterMS: unknown field (did you mean "halfOpenAfterMs"?); allowed: consecutiveFailures, halfOpenAfterMs, maxHalfOpenAfterMs',
    ]);
  });

  test("values that contradict each other are rejected", () => {
    const found = problems(
      base(
        "    healthCheck: { intervalMs: 100, timeoutMs: 500 }\n    outlierDetection: { baseEjectionMs: 5000, maxEjectionMs: 1000 }\n    circuitBreaker: { halfOpenAfterMs: 5000, maxHalfOpenAfterMs: 1000 }",
        "    timeoutMs: 1000\n    retry: { perTryTimeoutMs: 1000 }",
      ),
    );
    expect(found.map((p) => p.split(":")[0])).toEqual([
      "5 upstreams.web.healthCheck.timeoutMs",
      "6 upstreams.web.outlierDetection.baseEjectionMs",
      "7 upstreams.web.circuitBreaker.halfOpenAfterMs",
      "13 routes[0].retry.perTryTimeoutMs",
    ]);
  });

  test("the shipped routes.yaml marks VerifyUser idempotent (read-only: safe to retry)", () => {
    const config = loadConfig("gateway/routes.yaml", {});
    expect(config.routes.find((r) => r.name === "verify")!.grpc).toEqual({
      method: "userverify.UserVerify/VerifyUser",
      idempotent: true,
    });
  });
});
