/**
 * A release drill's faults (lib/fault.ts, FAULT_ERROR_PERCENT / FAULT_DELAY_MS): the API fails its
 * exact share and answers late; the probes and /metrics never do, so a drilled replica stays in
 * rotation as a real bad release would.
 */
import { describe, expect, test } from "bun:test";
import { EnvError } from "../../lib/env.ts";
import { Fault, faultFromEnv } from "../../lib/fault.ts";
import { webappFixture } from "./fixture.ts";

describe("fault injection", () => {
  test("FAULT_ERROR_PERCENT=5 fails exactly one POST /projects in twenty with 500 problem+json", async () => {
    const w = webappFixture({ fault: new Fault(5, 0) });
    const statuses: number[] = [];
    for (let i = 0; i < 100; i++) statuses.push((await w.postJson("/projects", { title: `t${i}` })).status);
    expect(statuses.filter((s) => s === 500)).toHaveLength(5);
    expect(statuses.filter((s) => s === 201)).toHaveLength(95);
    const failing = await (async () => {
      for (;;) {
        const res = await w.postJson("/projects", { title: "x" });
        if (res.status === 500) return res;
      }
    })();
    expect(failing.headers.get("content-type")).toBe("application/problem+json");
    expect(((await failing.json()) as { detail: string }).detail).toContain("injected fault");
  });

  test("an injected 500 is a 500 in the access log and the metrics too (what the error-ratio alert reads)", async () => {
    const w = webappFixture({ fault: new Fault(100, 0) });
    const res = await w.postJson("/projects", { title: "x" }, { "x-request-id": "drill-1" });
    expect(res.status).toBe(500);
    expect((await w.accessLogFor("drill-1")).status).toBe(500);
    const metrics = await (await w.request("GET", "/metrics")).text();
    expect(metrics).toMatch(/^http_server_requests_total\{[^}]*route="\/projects"[^}]*status_code="500"[^}]*\} 1$/m);
    expect(metrics).not.toMatch(/^http_server_requests_total\{[^}]*route="\/projects"[^}]*status_code="200"/m);
  });

  test("probes and /metrics are never failed or delayed", async () => {
    const w = webappFixture({ fault: new Fault(100, 2_000) });
    for (const path of ["/healthz", "/readyz", "/metrics"]) {
      const started = performance.now();
      expect((await w.request("GET", path)).status).toBe(200);
      // Far below the injected 2 s: the probe did not wait for it.
      expect(performance.now() - started).toBeLessThan(1_000);
    }
    expect((await w.postJson("/projects", { title: "x" })).status).toBe(500);
  });

  test("FAULT_DELAY_MS delays every API answer by at least that much", async () => {
    const w = webappFixture({ fault: new Fault(0, 60) });
    const started = performance.now();
    expect((await w.postJson("/projects", { title: "late" })).status).toBe(201);
    expect(performance.now() - started).toBeGreaterThanOrEqual(59);
  });

  test("the settings are read and checked from the environment; off by default", () => {
    expect(faultFromEnv({}).enabled).toBe(false);
    const f = faultFromEnv({ FAULT_ERROR_PERCENT: "5", FAULT_DELAY_MS: "50" });
    expect([f.errorPercent, f.delayMs]).toEqual([5, 50]);
    expect(() => faultFromEnv({ FAULT_ERROR_PERCENT: "101" })).toThrow(EnvError);
    expect(() => faultFromEnv({ FAULT_DELAY_MS: "soon" })).toThrow(/FAULT_DELAY_MS/);
  });
});
