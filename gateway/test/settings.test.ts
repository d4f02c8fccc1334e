import { describe, expect, test } from "bun:test";
import { EnvError } from "../../lib/env.ts";
import { loadSettings } from "../src/settings.ts";

describe("loadSettings", () => {
  test("GC_WHEN_IDLE is on unless false, and refused when not a boolean (lib/idle-gc.ts)", () => {
    expect(loadSettings({}).gcWhenIdle).toBe(true);
    expect(loadSettings({ GC_WHEN_IDLE: "0" }).gcWhenIdle).toBe(false);
    expect(() => loadSettings({ GC_WHEN_IDLE: "later" })).toThrow(EnvError);
    expect(() => loadSettings({ GC_WHEN_IDLE: "later" })).toThrow(/GC_WHEN_IDLE="later" is not a boolean/);
  });
});
