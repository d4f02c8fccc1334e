/** Endpoint discovery: static IP literals, host names resolved (and re-resolved) to all their addresses. */
import { afterAll, afterEach, describe, expect, jest, test } from "bun:test";
import {
  Discovery,
  dnsServerResolver,
  formatAddress,
  type HostResolver,
  parseEntry,
} from "../src/upstream/discovery.ts";
import type { UpstreamEvent } from "../src/upstream/upstream.ts";
import { waitFor } from "../../scripts/stack/testing/processes.ts";
import { TestDnsServer } from "./resilience-harness.ts";
import { settle, testConfig, testUpstream } from "./upstream-harness.ts";

// Tests that take jest.useFakeTimers() (timers and clocks the test moves) get the real ones back.
afterEach(() => {
  jest.useRealTimers();
});

/** A resolver the test drives: answers from `records`, or throws the error set for a name. */
function fakeResolver() {
  const records = new Map<string, string[] | Error>();
  const calls: string[] = [];
  const resolver: HostResolver = {
    async resolve(host) {
      calls.push(host);
      const answer = records.get(host);
      if (answer instanceof Error) throw answer;
      if (!answer) throw Object.assign(new Error(`queryA ENOTFOUND ${host}`), { code: "ENOTFOUND" });
      return answer;
    },
  };
  return { records, calls, resolver };
}

const dnsError = (code: string) => Object.assign(new Error(code), { code });
const discoveries: Discovery[] = [];
afterAll(() =>
  discoveries.forEach((d) => {
    d.stop();
  }),
);

function discover(entries: string[], resolver: HostResolver, refreshMs = 20) {
  const sets: string[][] = [];
  const discovery = new Discovery(entries, { refreshMs, resolver, onChange: (a) => sets.push(a) });
  discoveries.push(discovery);
  return { discovery, sets, last: () => sets.at(-1) ?? [] };
}

describe("endpoint entries", () => {
  test("IP literals are static, anything else is a name to resolve", () => {
    expect(parseEntry("10.0.0.7:8080")).toEqual({ host: "10.0.0.7", port: "8080", isStatic: true });
    expect(parseEntry("[fd00::1]:50051")).toEqual({ host: "fd00::1", port: "50051", isStatic: true });
    expect(parseEntry("webapp-headless:8080")).toEqual({ host: "webapp-headless", port: "8080", isStatic: false });
    expect(parseEntry("localhost:3001").isStatic).toBe(false);
    expect(formatAddress("fd00::1", "80")).toBe("[fd00::1]:80");
    expect(formatAddress("10.0.0.1", "80")).toBe("10.0.0.1:80");
  });
});

describe("discovery", () => {
  test("a static list is used as written, at once, and never looked up", () => {
    const { resolver, calls } = fakeResolver();
    const { sets, discovery } = discover(["127.0.0.1:3001", "127.0.0.1:3002"], resolver);
    expect(sets).toEqual([["127.0.0.1:3001", "127.0.0.1:3002"]]);
    expect(discovery.isDynamic).toBe(false);
    expect(calls).toEqual([]);
  });

  test("a name resolves to all of its addresses, and re-resolution follows the records as they change", async () => {
    const { resolver, records } = fakeResolver();
    records.set("webapp", ["10.0.0.2", "10.0.0.1"]);
    const { last, discovery } = discover(["webapp:8080", "10.9.9.9:80"], resolver);
    await discovery.ready;
    expect(last()).toEqual(["10.0.0.1:8080", "10.0.0.2:8080", "10.9.9.9:80"]);
    records.set("webapp", ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    await waitFor("the scale-up", () => last().length === 4, { timeoutMs: 1_000, intervalMs: 5 });
    records.set("webapp", ["10.0.0.3"]);
    await waitFor("the scale-down", () => last().length === 2, { timeoutMs: 1_000, intervalMs: 5 });
    expect(last()).toEqual(["10.0.0.3:8080", "10.9.9.9:80"]);
  });

  test("NXDOMAIN empties a name's addresses; a failing DNS server keeps the last known ones", async () => {
    const { resolver, records, calls } = fakeResolver();
    records.set("svc", ["10.0.0.1"]);
    const { last, discovery } = discover(["svc:80"], resolver);
    await discovery.ready;
    records.set("svc", dnsError("ECONNREFUSED"));
    const seen = calls.length;
    await waitFor("two more resolutions", () => calls.length >= seen + 2, { timeoutMs: 1_000, intervalMs: 5 });
    expect(last()).toEqual(["10.0.0.1:80"]);
    records.set("svc", dnsError("ENOTFOUND"));
    await waitFor("the set to empty", () => last().length === 0, { timeoutMs: 1_000, intervalMs: 5 });
  });

  test("a resolver that never answers is given up on, and discovery goes on", async () => {
    let hang = true;
    let cancelled = 0;
    const resolver: HostResolver = {
      resolve: (_host, signal) => {
        if (!hang) return Promise.resolve(["10.0.0.5"]);
        // Only this query is abandoned (its own signal), never another upstream's.
        signal?.addEventListener("abort", () => cancelled++);
        return new Promise(() => {});
      },
    };
    jest.useFakeTimers();
    const { last, discovery } = discover(["svc:80"], resolver, 20);
    let ready = false;
    void discovery.ready.then(() => (ready = true));
    // The query timeout is refreshMs, but at least 500 ms: given up on at 500, not before.
    jest.advanceTimersByTime(499);
    await settle();
    expect([ready, cancelled]).toEqual([false, 0]);
    jest.advanceTimersByTime(1);
    await settle();
    expect([ready, cancelled]).toEqual([true, 1]);
    hang = false;
    jest.advanceTimersByTime(20); // the next refresh
    await settle();
    expect(last()).toEqual(["10.0.0.5:80"]);
  });

  test("stop() ends re-resolution", async () => {
    const { resolver, records, calls } = fakeResolver();
    records.set("svc", ["10.0.0.1"]);
    jest.useFakeTimers();
    const { discovery } = discover(["svc:80"], resolver);
    await discovery.ready;
    jest.advanceTimersByTime(20);
    await settle();
    expect(calls).toHaveLength(2); // re-resolving every refreshMs (20) until stopped
    discovery.stop();
    jest.advanceTimersByTime(1_000);
    await settle();
    expect(calls).toHaveLength(2);
  });

  test("failures ask for a re-resolution soon, at most once a second", async () => {
    const { resolver, records, calls } = fakeResolver();
    records.set("svc", ["10.0.0.1"]);
    jest.useFakeTimers();
    const { discovery } = discover(["svc:80"], resolver, 60_000);
    await discovery.ready;
    expect(calls.length).toBe(1);
    for (let round = 2; round <= 3; round++) {
      for (let i = 0; i < 50; i++) discovery.refreshSoon();
      jest.advanceTimersByTime(999);
      await settle();
      expect(calls.length).toBe(round - 1); // a second has not passed since the last resolution
      jest.advanceTimersByTime(1);
      await settle();
      expect(calls.length).toBe(round); // fifty asks, one resolution
    }
  });
});

describe("an upstream whose endpoints change", () => {
  test("keeps the Endpoint (and its figures) of addresses that stay, closes the removed ones, and says so", async () => {
    const { resolver, records } = fakeResolver();
    records.set("svc", ["10.0.0.1", "10.0.0.2"]);
    const events: UpstreamEvent[] = [];
    const upstream = testUpstream(testConfig({ endpoints: "svc:80", upstream: "discovery: { refreshMs: 20 }" }), {
      resolver,
      onEvent: (e) => events.push(e),
    });
    await upstream.ready;
    const kept = upstream.endpoints.find((e) => e.address === "10.0.0.2:80")!;
    const removed = upstream.endpoints.find((e) => e.address === "10.0.0.1:80")!;
    kept.requests = 42;
    records.set("svc", ["10.0.0.2", "10.0.0.3"]);
    await waitFor("the new set", () => upstream.endpoints.some((e) => e.address === "10.0.0.3:80"), {
      timeoutMs: 1_000,
      intervalMs: 5,
    });
    expect(upstream.endpoints.map((e) => e.address)).toEqual(["10.0.0.2:80", "10.0.0.3:80"]);
    expect(upstream.endpoints[0]).toBe(kept);
    expect(kept.requests).toBe(42);
    expect(removed.removed).toBe(true);
    expect(removed.available).toBe(false);
    const changes = events.flatMap((e) => (e.type === "endpoints" ? [{ added: e.added, removed: e.removed }] : []));
    expect(changes).toEqual([
      { added: ["10.0.0.1:80", "10.0.0.2:80"], removed: [] },
      { added: ["10.0.0.3:80"], removed: ["10.0.0.1:80"] },
    ]);
    upstream.close();
  });
});

describe("the node:dns resolver (DNS_SERVER)", () => {
  test("reads A records from the configured server, changes included (TTL 0)", async () => {
    const dns = await TestDnsServer.start();
    try {
      dns.records.set("svc.test", ["127.0.0.2", "127.0.0.3"]);
      const resolver = dnsServerResolver(dns.address);
      expect((await resolver.resolve("svc.test")).sort()).toEqual(["127.0.0.2", "127.0.0.3"]);
      dns.records.set("svc.test", ["127.0.0.4"]);
      expect(await resolver.resolve("svc.test")).toEqual(["127.0.0.4"]);
      const missing = await resolver.resolve("nope.test").catch((err) => err);
      expect((missing as { code?: string }).code).toBe("ENOTFOUND");
    } finally {
      dns.close();
    }
  });
});

describe("the DNS_SERVER resolver against a real DNS server on loopback", () => {
  test("a name that had no records (NODATA) is asked again, and found once it has some; AAAA when there is no A", async () => {
    const dns = await TestDnsServer.start();
    try {
      const resolver = dnsServerResolver(dns.address);
      dns.records.set("svc.test", []);
      await expect(resolver.resolve("svc.test")).rejects.toMatchObject({
        code: expect.stringMatching(/ENODATA|ENOTFOUND/),
      });
      dns.records.set("svc.test", ["10.0.0.7"]);
      expect(await resolver.resolve("svc.test")).toEqual(["10.0.0.7"]);
      dns.records6.set("v6only.test", ["fd00::7"]);
      expect(await resolver.resolve("v6only.test")).toEqual(["fd00::7"]);
    } finally {
      dns.close();
    }
  });

  test("abandoning one query leaves the others (another upstream's) to finish", async () => {
    const dns = await TestDnsServer.start();
    try {
      const resolver = dnsServerResolver(dns.address);
      dns.silent.add("hangs.test");
      dns.records.set("answers.test", ["10.0.0.8"]);
      const abandoned = new AbortController();
      const hanging = resolver.resolve("hangs.test", abandoned.signal).catch((err: { code?: string }) => err.code);
      const other = resolver.resolve("answers.test");
      abandoned.abort();
      expect(await other).toEqual(["10.0.0.8"]);
      expect(await hanging).toBe("ECANCELLED");
    } finally {
      dns.close();
    }
  });
});
