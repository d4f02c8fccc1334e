/** The resilience keys of routes.yaml: defaults filled in, mistakes named with their line. */
import { describe, expect, test } from "bun:test";
import { ConfigError, loadConfig, parseConfig } from "../src/config/load.ts";

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
    const config = parseConfig(base(""), "routes.yaml");
    expect(config.upstreams.get("web")).toMatchObject({
      discovery: { refreshMs: 5000 },
      balancer: { algorithm: "p2c" },
      healthCheck: {
        enabled: true,
        intervalMs: 2000,
        timeoutMs: 1000,
        path: "/readyz",
        unhealthyThreshold: 2,
        healthyThreshold: 1,
      },
      outlierDetection: { consecutiveFailures: 3, baseEjectionMs: 2000, maxEjectionMs: 30000, maxEjectedPercent: 50 },
      circuitBreaker: { consecutiveFailures: 5, halfOpenAfterMs: 1000, maxHalfOpenAfterMs: 10000 },
    });
    expect(config.routes[0]!.retry).toEqual({ attempts: 3, budgetPercent: 20, minRetriesPerSecond: 5 });
  });

  test("a value given overrides only that key", () => {
    const config = parseConfig(
      base("    circuitBreaker: { halfOpenAfterMs: 250 }", "    retry: { attempts: 1 }"),
      "routes.yaml",
    );
    expect(config.upstreams.get("web")!.circuitBreaker).toEqual({
      consecutiveFailures: 5,
      halfOpenAfterMs: 250,
      maxHalfOpenAfterMs: 10000,
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
