/** lib/env.ts: values are checked where they are read, and the message names the variable. */
import { describe, expect, test } from "bun:test";
import { EnvError, envInt, MAX_TIMER_MS, serviceIdentity } from "./env.ts";

describe("envInt", () => {
  test("a duration in milliseconds (…_MS) is capped at what a timer takes: past it, it would fire at once", () => {
    expect(envInt("SHUTDOWN_TIMEOUT_MS", 15_000, { min: 1 }, { SHUTDOWN_TIMEOUT_MS: String(MAX_TIMER_MS) })).toBe(
      MAX_TIMER_MS,
    );
    expect(() => envInt("SHUTDOWN_TIMEOUT_MS", 15_000, { min: 1 }, { SHUTDOWN_TIMEOUT_MS: "3000000000" })).toThrow(
      `SHUTDOWN_TIMEOUT_MS="3000000000" is not an integer in [1, ${MAX_TIMER_MS}]`,
    );
    // A bound the caller gives wins; other names keep the safe-integer range.
    expect(() => envInt("LOG_FLUSH_MS", 100, { max: 10_000 }, { LOG_FLUSH_MS: "10001" })).toThrow(EnvError);
    expect(envInt("MAX_PROJECTS", 1, { min: 1 }, { MAX_PROJECTS: "3000000000" })).toBe(3_000_000_000);
  });

  test("what is not a plain integer is refused, naming the variable and the value", () => {
    for (const raw of ["1e3", "0x10", "1.5", "ten", " ", "12ms"])
      expect(() => envInt("DRAIN_DELAY_MS", 0, { min: 0 }, { DRAIN_DELAY_MS: raw })).toThrow(
        `DRAIN_DELAY_MS=${JSON.stringify(raw)}`,
      );
    expect(envInt("DRAIN_DELAY_MS", 7, { min: 0 }, { DRAIN_DELAY_MS: "" })).toBe(7);
  });
});

describe("serviceIdentity", () => {
  test("the instance and version go into headers as they are: printable ASCII without spaces, or a start-up error", () => {
    expect(serviceIdentity("gateway", { HOSTNAME: "gateway-7d9f-x2x", SERVICE_VERSION: "1.4.0" })).toEqual({
      service: "gateway",
      version: "1.4.0",
      instance: "gateway-7d9f-x2x",
    });
    // INSTANCE_ID wins over HOSTNAME, and the message names the variable the value came from.
    expect(() => serviceIdentity("gateway", { INSTANCE_ID: "gw 1", HOSTNAME: "fine" })).toThrow('INSTANCE_ID="gw 1"');
    expect(() => serviceIdentity("gateway", { HOSTNAME: "a\r\nx-injected: 1" })).toThrow(/^HOSTNAME=/);
    expect(() => serviceIdentity("webapp", { SERVICE_VERSION: "1.0\u00e9" })).toThrow(EnvError);
  });
});
