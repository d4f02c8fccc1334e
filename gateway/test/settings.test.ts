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

  test("GATEWAY_PEERS_DNS is a DNS name, refused at start when it is a URL, an address with a port or an IP", () => {
    expect(loadSettings({}).peers.dnsName).toBeUndefined();
    for (const name of [
      "gateway-headless",
      "gateway-headless.portico.svc.cluster.local",
      "gateway-headless.portico.svc.",
    ])
      expect(loadSettings({ GATEWAY_PEERS_DNS: name }).peers.dnsName).toBe(name);
    for (const bad of ["http://gateway-headless", "gateway-headless:9901", "10.0.0.1", "gate way", "-gateway"])
      expect(() => loadSettings({ GATEWAY_PEERS_DNS: bad })).toThrow(
        `GATEWAY_PEERS_DNS=${JSON.stringify(bad)} is not a DNS name`,
      );
  });
});
