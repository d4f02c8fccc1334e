import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { ConfigError, loadConfig, parseConfig } from "../src/config/load.ts";

const ROOT = resolve(import.meta.dir, "../..");
const shipped = readFileSync(resolve(ROOT, "gateway/routes.yaml"), "utf8");

function problemsOf(text: string, env: Record<string, string> = {}) {
  try {
    parseConfig(text, "routes.yaml", env, ROOT);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("expected the config to be rejected");
}

describe("routes.yaml loading", () => {
  test("the shipped routes.yaml loads with the local defaults", () => {
    const config = loadConfig(resolve(ROOT, "gateway/routes.yaml"), {});
    expect(config.upstreams.get("webapp")?.endpoints).toEqual(["127.0.0.1:3001", "127.0.0.1:3002", "127.0.0.1:3003"]);
    expect(config.upstreams.get("rpcapp")?.protocol).toBe("grpc");
    const verify = config.routes.find((r) => r.name === "verify");
    expect(verify?.grpcMethod?.path).toBe("/userverify.UserVerify/VerifyUser");
    expect(verify?.methods).toEqual(["POST"]);
  });

  test("${VAR:-default} takes the environment value when set", () => {
    const config = parseConfig(shipped, "routes.yaml", { WEBAPP_ENDPOINTS: "webapp-headless:8080" }, ROOT);
    expect(config.upstreams.get("webapp")?.endpoints).toEqual(["webapp-headless:8080"]);
  });

  test("a whole-value reference keeps its YAML type (a number stays a number)", () => {
    const text = shipped.replace("match: exact", "match: exact\n    timeoutMs: ${VERIFY_TIMEOUT_MS:-250}");
    expect(parseConfig(text, "routes.yaml", {}, ROOT).routes.find((r) => r.name === "verify")?.timeoutMs).toBe(250);
    expect(
      parseConfig(text, "routes.yaml", { VERIFY_TIMEOUT_MS: "1500" }, ROOT).routes.find((r) => r.name === "verify")
        ?.timeoutMs,
    ).toBe(1500);
  });

  test("a misspelt key is rejected with its line, its field and a suggestion", () => {
    const text = shipped.replace("    methods: [GET, POST]", "    methds: [GET, POST]");
    const line = text.split("\n").findIndex((l) => l.includes("methds")) + 1;
    const [problem] = problemsOf(text);
    expect(problem).toMatchObject({ line, field: "routes[0].methds" });
    expect(problem!.message).toContain('did you mean "methods"');
  });

  test("a wrong type is rejected with its line and field", () => {
    const text = shipped.replace("match: exact", "match: exact\n    timeoutMs: soon");
    const line = text.split("\n").findIndex((l) => l.includes("timeoutMs: soon")) + 1;
    expect(problemsOf(text)).toEqual([
      expect.objectContaining({
        line,
        field: "routes[1].timeoutMs",
        message: expect.stringContaining("expected integer"),
      }),
    ]);
  });

  test("an enum typo lists the allowed values", () => {
    const [problem] = problemsOf(shipped.replace("protocol: grpc", "protocol: grcp"));
    expect(problem!.field).toBe("upstreams.rpcapp.protocol");
    expect(problem!.message).toContain('must be one of "http", "grpc"');
  });

  test("every cross-reference problem is reported at once, each at its line", () => {
    const text = shipped
      .replace("upstream: webapp", "upstream: webap")
      .replace("VerifyUser", "VerifyUsr")
      .replace("127.0.0.1:3003}", "127.0.0.1:99999}");
    const problems = problemsOf(text);
    expect(problems.map((p) => p.field).sort()).toEqual([
      "routes[0].upstream",
      "routes[1].grpc.method",
      "upstreams.webapp.endpoints",
    ]);
    for (const p of problems) expect(p.line).toBeGreaterThan(0);
    expect(problems.find((p) => p.field === "routes[0].upstream")!.message).toContain('no upstream named "webap"');
  });

  test("a reference to an unset variable without default names the variable", () => {
    const problems = problemsOf(
      shipped.replace("${RPCAPP_ENDPOINTS:-127.0.0.1:5001,127.0.0.1:5002,127.0.0.1:5003}", "${RPCAPP_ENDPOINTS}"),
    );
    expect(problems[0]).toMatchObject({
      field: "upstreams.rpcapp.endpoints",
      message: expect.stringContaining("RPCAPP_ENDPOINTS is not set"),
    });
  });

  test("YAML syntax errors carry the line", () => {
    const problems = problemsOf("upstreams:\n  webapp: [\n");
    expect(problems[0]!.line).toBeGreaterThan(0);
  });

  test("the error message names file:line:column and field", () => {
    try {
      parseConfig(shipped.replace("upstream: rpcapp", "upstream: nowhere"), "gateway/routes.yaml", {}, ROOT);
      throw new Error("not rejected");
    } catch (err) {
      expect((err as Error).message).toMatch(
        /gateway\/routes\.yaml:\d+:\d+ routes\[1\]\.upstream: no upstream named "nowhere"/,
      );
    }
  });

  test("a missing file is a ConfigError, not a crash", () => {
    expect(() => loadConfig("/nonexistent/routes.yaml")).toThrow(ConfigError);
  });

  test("invalid trusted proxy CIDRs are rejected", () => {
    expect(problemsOf(`${shipped}\ntrustedProxies: ["10.0.0.0/8", "not-an-ip"]\n`)[0]).toMatchObject({
      field: "trustedProxies[1]",
    });
  });
});
