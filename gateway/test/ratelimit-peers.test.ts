/**
 * The replica count the `local` fallback divides by, when the peer lookup fails: it keeps the
 * last count rather than falling to 1 (every gateway admitting the whole limit). The lookup is
 * node's real resolver (getaddrinfo) on a name that resolves, then on one that cannot.
 */
import { describe, expect, test } from "bun:test";
import { lookup } from "node:dns/promises";
import pino from "pino";
import { PeerDirectory } from "../src/peers.ts";
import { PeerCounter } from "../src/ratelimit/peers.ts";

describe("GATEWAY_PEERS_DNS lookups that fail", () => {
  test("keep the last count (logged once), and a lookup that works again counts afresh", async () => {
    const lines: Record<string, unknown>[] = [];
    const log = pino({ level: "debug" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    // What the Service name resolves to: three pods, then a DNS outage, then two pods.
    let name = "three";
    const records: Record<string, string[]> = {
      three: ["127.0.0.1", "127.0.0.2", "127.0.0.3"],
      two: ["127.0.0.1", "127.0.0.2"],
    };
    const directory = new PeerDirectory({
      dnsName: "gateway-headless",
      resolve: async () => {
        if (name === "broken") {
          // The real resolver's failure for a name that does not exist (RFC 6761: .invalid never resolves).
          await lookup("gateway-headless.invalid", { all: true });
        }
        return records[name]!;
      },
    });
    const peers = new PeerCounter({ directory, log, intervalMs: 60_000 });
    expect(await peers.refresh()).toBe(3);
    name = "broken";
    expect(await peers.refresh()).toBe(3);
    expect(await peers.refresh()).toBe(3);
    expect(peers.count).toBe(3);
    const warnings = lines.filter(
      (l) => l.msg === "rate limiter: cannot count the gateway peers; keeping the last count",
    );
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ peers: 3, err: expect.stringContaining("cannot resolve gateway-headless") });
    name = "two";
    expect(await peers.refresh()).toBe(2);
    peers.close();
  });

  test("before any count succeeded, the count is this gateway alone (1)", async () => {
    const directory = new PeerDirectory({ dnsName: "gateway-headless.invalid" });
    const peers = new PeerCounter({ directory, log: pino({ level: "silent" }), intervalMs: 60_000 });
    expect(await peers.refresh()).toBe(1);
    peers.close();
  });
});
