import { describe, expect, test } from "bun:test";
import { EnvError } from "../../lib/env.ts";
import { loadConfig } from "../src/config.ts";

describe("loadConfig", () => {
  test("LOG_PROBES is off unless set to a true value", () => {
    expect(loadConfig({}).logProbes).toBe(false);
    expect(loadConfig({ LOG_PROBES: "true" }).logProbes).toBe(true);
    expect(loadConfig({ LOG_PROBES: "0" }).logProbes).toBe(false);
  });

  test("refuses a LOG_PROBES that is not a boolean, naming it", () => {
    expect(() => loadConfig({ LOG_PROBES: "sometimes" })).toThrow(EnvError);
    expect(() => loadConfig({ LOG_PROBES: "sometimes" })).toThrow(/LOG_PROBES="sometimes" is not a boolean/);
  });

  test("GC_WHEN_IDLE is on unless false, and refused when not a boolean (lib/idle-gc.ts)", () => {
    expect(loadConfig({}).gcWhenIdle).toBe(true);
    expect(loadConfig({ GC_WHEN_IDLE: "false" }).gcWhenIdle).toBe(false);
    expect(() => loadConfig({ GC_WHEN_IDLE: "later" })).toThrow(/GC_WHEN_IDLE="later" is not a boolean/);
  });
});
