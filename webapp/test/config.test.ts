import { describe, expect, test } from "bun:test";
import { EnvError } from "../../lib/env.ts";
import { loadConfig } from "../src/config.ts";

describe("loadConfig", () => {
  test("GC_WHEN_IDLE is on unless false, and refused when not a boolean (lib/idle-gc.ts)", () => {
    expect(loadConfig({}).gcWhenIdle).toBe(true);
    expect(loadConfig({ GC_WHEN_IDLE: "off" }).gcWhenIdle).toBe(false);
    expect(() => loadConfig({ GC_WHEN_IDLE: "later" })).toThrow(EnvError);
    expect(() => loadConfig({ GC_WHEN_IDLE: "later" })).toThrow(/GC_WHEN_IDLE="later" is not a boolean/);
  });
});
