/**
 * The dashboard's parts, in process: per-second route figures (dashboard/traffic.ts), percentiles
 * from the fixed latency buckets, the merge of several replicas' snapshots (dashboard/tier.ts, with
 * fake replicas on real ports), and the admin routes that serve them.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { createAdminApp } from "../src/admin/app.ts";
import { LATENCY_BUCKETS, latencyBucket, quantileMs } from "../src/dashboard/latency-buckets.ts";
import { recent } from "../src/dashboard/events.ts";
import { type EndpointView, endpointView, type GatewaySnapshot, SNAPSHOT_SCHEMA } from "../src/dashboard/snapshot.ts";
import { TierView } from "../src/dashboard/tier.ts";
import { TrafficRecorder, WINDOW_SECONDS } from "../src/dashboard/traffic.ts";
import { PeerDirectory } from "../src/peers.ts";
import { Endpoint } from "../src/upstream/endpoint.ts";
import { inProcessGateway } from "./admin-fixture.ts";

const servers: ReturnType<typeof Bun.serve>[] = [];
afterAll(() =>
  servers.forEach((s) => {
    s.stop(true);
  }),
);

describe("latency buckets", () => {
  test("p50 and p99 of a known distribution come out within a bucket's width (19%)", () => {
    const counts = new Float64Array(LATENCY_BUCKETS);
    // 1..1000 ms, one request each: p50 ≈ 500 ms, p99 ≈ 990 ms.
    for (let ms = 1; ms <= 1000; ms++) counts[latencyBucket(ms)]!++;
    expect(quantileMs(counts, 0.5)!).toBeWithin(500 / 1.19, 500 * 1.19);
    expect(quantileMs(counts, 0.99)!).toBeWithin(990 / 1.19, 990 * 1.19);
    expect(quantileMs(new Float64Array(LATENCY_BUCKETS), 0.5)).toBeNull();
  });

  test("latencies up to the longest route timeout (1 h) keep their size: none is cut to a last bucket", () => {
    for (const ms of [60_000, 600_000, 3_600_000]) {
      const counts = new Float64Array(LATENCY_BUCKETS);
      counts[latencyBucket(ms)] = 100;
      expect(latencyBucket(ms)).toBeLessThan(LATENCY_BUCKETS - 1);
      expect(quantileMs(counts, 0.5)!).toBeWithin(ms / 1.19, ms * 1.19);
      expect(quantileMs(counts, 0.99)!).toBeWithin(ms / 1.19, ms * 1.19);
    }
  });

  test("nonsense latencies land in the end buckets instead of throwing", () => {
    expect([latencyBucket(-1), latencyBucket(Number.NaN), latencyBucket(0)]).toEqual([0, 0, 0]);
    expect(latencyBucket(Number.POSITIVE_INFINITY)).toBe(LATENCY_BUCKETS - 1);
    expect(latencyBucket(1e12)).toBe(LATENCY_BUCKETS - 1);
  });
});

describe("an endpoint's view", () => {
  test("outSince: when it left the set, on lastRequestAt's clock; null again once it is back", async () => {
    const e = new Endpoint(
      "127.0.0.1:1",
      "http",
      { consecutiveFailures: 5, halfOpenAfterMs: 1_000, maxHalfOpenAfterMs: 10_000 },
      1,
    );
    expect(endpointView(e).outSince).toBeNull();
    e.lastRequestAt = performance.now();
    await Bun.sleep(5);
    e.ejected = true;
    e.refreshAvailability();
    const out = endpointView(e);
    expect(out.available).toBe(false);
    // 5 ms apart on one clock: in order whatever the wall clock does.
    expect(out.outSince! - out.lastRequestAt!).toBeGreaterThanOrEqual(4);
    // Staying out keeps the time it left.
    e.health = "unhealthy";
    e.refreshAvailability();
    expect(endpointView(e).outSince).toBe(out.outSince);
    e.ejected = false;
    e.health = "healthy";
    e.refreshAvailability();
    expect(endpointView(e).outSince).toBeNull();
    e.close();
    expect(endpointView(e).outSince).not.toBeNull();
  });
});

describe("per-second route figures", () => {
  test("requests, 5xx, denials and latency are counted per second, the current second left out", () => {
    let wall = 1_000_000_500; // half-way through epoch second 1_000_000
    let now = 10_000;
    const traffic = new TrafficRecorder(() => wall);
    traffic.record("r", 200, 2, now);
    traffic.record("r", 503, 4, now);
    traffic.deny("r", now); // on the test's clocks, as every call here: a real one could land in any second
    expect(traffic.series("r", 3).requests).toEqual([0, 0, 0]); // second 1_000_000 is still running
    wall += 1000;
    now += 1000;
    traffic.record("r", 429, 0.1, now);
    const s = traffic.series("r", 2);
    expect(s.from).toBe(999_999);
    expect(s.requests).toEqual([0, 2]);
    expect(s.errors).toEqual([0, 1]);
    expect(s.latency[1]).toEqual([latencyBucket(2), 1, latencyBucket(4), 1]);
    expect(traffic.series("unknown", 2).requests).toEqual([0, 0]);
  });

  test("a slot is reused after the window: figures older than the window are gone", () => {
    let wall = 2_000_000_000;
    const traffic = new TrafficRecorder(() => wall);
    traffic.record("r", 200, 1, 0);
    wall += WINDOW_SECONDS * 1000;
    traffic.record("r", 200, 1, WINDOW_SECONDS * 1000);
    wall += 1000;
    const s = traffic.series("r", WINDOW_SECONDS);
    expect(s.requests.reduce((a, b) => a + b, 0)).toBe(1);
    expect(s.requests.at(-1)).toBe(1);
  });
});

describe("the tier: snapshots of every replica, merged", () => {
  const endpoint = (address: string, over: Partial<EndpointView> = {}): EndpointView => ({
    address,
    available: true,
    outSince: null,
    health: "healthy",
    breaker: "closed",
    breakerProbeAt: null,
    ejected: false,
    ejectedUntil: null,
    ejections: 0,
    lastEjectedAt: null,
    lastReadmittedAt: null,
    inflight: 0,
    requests: 0,
    failures: 0,
    ewmaMs: 1,
    lastRequestAt: null,
    version: null,
    ...over,
  });
  const snapshot = (
    instance: string,
    from: number,
    requests: number[],
    latencyMs: number,
    endpoints: EndpointView[],
  ): GatewaySnapshot => ({
    schema: SNAPSHOT_SCHEMA,
    at: Date.now(),
    gateway: {
      service: "gateway",
      version: "v1",
      instance,
      startedAt: Date.now() - 5000,
      uptimeS: 5,
      ready: true,
      pid: 1,
    },
    limiter: { mode: "redis", fallback: "local", redis: "redis://r:6379", replicas: 2, writingBack: false },
    config: null,
    upstreams: [{ name: "web", protocol: "http", endpoints, canary: null }],
    routes: [
      {
        name: "r",
        path: "/r",
        match: "prefix",
        methods: ["GET"],
        upstream: "web",
        rateLimit: null,
        series: {
          from,
          requests,
          errors: requests.map((n) => (n > 0 ? 1 : 0)),
          denied: requests.map(() => 2),
          latency: requests.map((n) => (n > 0 ? [latencyBucket(latencyMs), n] : [])),
        },
      },
    ],
  });
  const serve = (body: unknown) => {
    const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => Response.json(body) });
    servers.push(server);
    return `http://127.0.0.1:${server.port}`;
  };

  test("sums requests per second, takes percentiles from the merged histograms, and marks replicas that do not answer", async () => {
    const second = Math.floor(Date.now() / 1000) - 3;
    const a = serve(
      snapshot("gw-a", second, [10, 0], 1, [endpoint("10.0.0.1:80"), endpoint("10.0.0.2:80", { breaker: "open" })]),
    );
    const b = serve(
      snapshot("gw-b", second, [30, 4], 100, [
        endpoint("10.0.0.1:80"),
        endpoint("10.0.0.2:80", { health: "unhealthy", ejected: true }),
      ]),
    );
    const wrong = serve({ hello: "world" });
    const closed = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("") });
    const down = `http://127.0.0.1:${closed.port}`;
    closed.stop(true);

    const tier = new TierView({
      // Each replica with a spare address, idle as on a steady `make dev` tier.
      directory: new PeerDirectory({ urls: [`${a}|${wrong}`, `${b}|${down}`], adminPort: 0 }),
      local: () => snapshot("self", second, [], 1, []),
      selfInstance: "gw-a",
      timeoutMs: 500,
    });
    const state = await tier.refresh();

    const byUrl = new Map(state.gateways.map((g) => [g.url, g]));
    expect(byUrl.get(a)).toMatchObject({
      reachable: true,
      self: true,
      info: { instance: "gw-a" },
      limiter: { mode: "redis" },
    });
    expect(byUrl.get(b)).toMatchObject({ reachable: true, self: false });
    // Never answered: named, with the reason, but not rows of the gateway table.
    expect(state.gateways).toHaveLength(2);
    const silent = new Map(state.silentPeers.map((p) => [p.url, p.error]));
    expect(silent.get(wrong)).toContain("not with a dashboard snapshot");
    expect(silent.get(down)).toBeTruthy();

    const route = state.routes.find((r) => r.name === "r")!;
    const at = second - route.from;
    expect(route.requests.length).toBe(state.windowSeconds);
    expect(state.windowSeconds).toBe(WINDOW_SECONDS - 1);
    expect([route.requests[at], route.requests[at + 1]]).toEqual([40, 4]);
    expect([route.errors[at], route.denied[at]]).toEqual([2, 4]);
    // 10 requests at ~1 ms and 30 at ~100 ms: the median is among the slow ones, on any replica.
    expect(route.p50[at]!).toBeWithin(100 / 1.19, 100 * 1.19);
    expect(route.p50[at + 1]!).toBeWithin(100 / 1.19, 100 * 1.19);
    expect(route.p50[at + 2]).toBeNull();

    const web = state.upstreams.find((u) => u.name === "web")!;
    expect(web.endpoints.map((e) => [e.address, e.summary, e.views.map((v) => v.gateway).sort()])).toEqual([
      ["10.0.0.1:80", "healthy", ["gw-a", "gw-b"]],
      ["10.0.0.2:80", "unhealthy", ["gw-a", "gw-b"]],
    ]);

    // A replica that answered and then stops stays a row, marked unreachable; its seconds still count.
    servers[1]!.stop(true);
    const later = await tier.refresh();
    expect(later.gateways.find((g) => g.url === b)).toMatchObject({ reachable: false, info: { instance: "gw-b" } });
    expect(later.gateways.find((g) => g.url === b)!.error).toBeTruthy();
    const again = later.routes.find((r) => r.name === "r")!;
    expect(again.requests[second - again.from]).toBe(40);
    expect(later.upstreams[0]!.endpoints[1]!.views.map((v) => v.gateway)).toEqual(["gw-a"]);
  });

  test("a replica that missed rounds sends the seconds it missed: merged, and resent to an open page", async () => {
    const now = Math.floor(Date.now() / 1000);
    const a = serve(snapshot("gw-a", now - 3, [5], 1, []));
    let answer: GatewaySnapshot | null = snapshot("gw-b", now - 3, [1], 1, []);
    const bServer = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      fetch: () => (answer ? Response.json(answer) : new Response("frozen", { status: 503 })),
    });
    servers.push(bServer);
    const b = `http://127.0.0.1:${bServer.port}`;
    const tier = new TierView({
      directory: new PeerDirectory({ urls: [a, b], adminPort: 0 }),
      local: () => snapshot("self", now, [], 1, []),
      selfInstance: "gw-a",
      timeoutMs: 500,
    });
    const figuresAt = (state: Awaited<ReturnType<TierView["refresh"]>>, t: number) => {
      const route = state.routes.find((r) => r.name === "r")!;
      return route.requests[t - route.from];
    };
    const first = await tier.refresh();
    expect(figuresAt(first, now - 3)).toBe(6);
    expect(figuresAt(first, now - 12)).toBe(0);
    // b misses a round; nothing new came in, so nothing older than the last seconds changed.
    answer = null;
    const missed = await tier.refresh();
    expect(missed.gateways.find((g) => g.url === b)!.reachable).toBe(false);
    // b answers again, with a second long past that it had not reported (and the one it had).
    answer = snapshot("gw-b", now - 12, [7, 0, 0, 0, 0, 0, 0, 0, 0, 1], 1, []);
    const back = await tier.refresh();
    expect(figuresAt(back, now - 12)).toBe(7);
    expect(figuresAt(back, now - 3)).toBe(6);
    expect(back.changedFrom).toBeLessThanOrEqual(now - 12);
    // What an open page is sent after its first event reaches back to that second.
    const sent = recent(back).routes.find((r) => r.name === "r")!;
    expect(sent.from).toBeLessThanOrEqual(now - 12);
    expect(sent.requests[now - 12 - sent.from]).toBe(7);
    // The next round, with b answering only its last seconds again, resends only the last few.
    answer = snapshot("gw-b", now - 3, [1], 1, []);
    const quiet = recent(await tier.refresh()).routes.find((r) => r.name === "r")!;
    expect(quiet.requests.length).toBeLessThan(9);
    expect(figuresAt(await tier.refresh(), now - 12)).toBe(7);
  });

  test("each gateway's canary and each endpoint's version reach the tier, by gateway", async () => {
    const second = Math.floor(Date.now() / 1000) - 3;
    const withCanary = (instance: string, state: "running" | "aborted", weight: number): GatewaySnapshot => {
      const s = snapshot(instance, second, [1], 1, [
        endpoint("10.0.0.1:80", { version: "v1" }),
        endpoint("10.0.0.9:80", { version: "v2" }),
      ]);
      s.upstreams[0]!.canary = { state, version: "v2", weight, step: 1, steps: [5, 25, 50, 100], last: null };
      return s;
    };
    const a = serve(withCanary("gw-a", "running", 5));
    const b = serve(withCanary("gw-b", "aborted", 0));
    const tier = new TierView({
      directory: new PeerDirectory({ urls: [a, b], adminPort: 0 }),
      local: () => snapshot("self", second, [], 1, []),
      selfInstance: "gw-a",
      timeoutMs: 500,
    });
    const state = await tier.refresh();
    const web = state.upstreams.find((u) => u.name === "web")!;
    expect(web.canaries.map((c) => [c.gateway, c.state, c.weight])).toEqual([
      ["gw-a", "running", 5],
      ["gw-b", "aborted", 0],
    ]);
    expect(web.endpoints.map((e) => [e.address, e.views.map((v) => v.version)])).toEqual([
      ["10.0.0.1:80", ["v1", "v1"]],
      ["10.0.0.9:80", ["v2", "v2"]],
    ]);
  });

  test("a listed replica that never answered at any of its addresses is a row, unreachable; spares stay idle", async () => {
    const second = Math.floor(Date.now() / 1000) - 3;
    const up = serve(snapshot("gw-up", second, [1], 1, []));
    const closed = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("") });
    const at = (i: number) => `http://127.0.0.1:${closed.port}/${i}`;
    const [dead, spareOfUp, spareOfDead] = [at(0), at(1), at(2)];
    closed.stop(true);
    const tier = new TierView({
      directory: new PeerDirectory({ urls: [`${up}|${spareOfUp}`, `${dead}|${spareOfDead}`], adminPort: 0 }),
      local: () => snapshot("self", second, [], 1, []),
      selfInstance: "gw-up",
      timeoutMs: 500,
    });
    const state = await tier.refresh();
    expect(Object.fromEntries(state.gateways.map((g) => [g.url, g.reachable]))).toEqual({ [dead]: false, [up]: true });
    expect(state.gateways.find((g) => g.url === dead)!.error).toBeTruthy();
    expect(state.silentPeers.map((p) => p.url).sort()).toEqual([spareOfDead, spareOfUp].sort());
  });

  test("without peers configured the tier is this gateway alone", async () => {
    const tier = new TierView({
      directory: new PeerDirectory({ urls: [], adminPort: 0 }),
      local: () => snapshot("self", Math.floor(Date.now() / 1000) - 2, [7], 5, []),
      selfInstance: "self",
    });
    const state = await tier.refresh();
    expect(state.gateways).toHaveLength(1);
    expect(state.gateways[0]).toMatchObject({ url: null, self: true, reachable: true });
    expect(state.routes[0]!.requests.reduce((a, b) => a + b, 0)).toBe(7);
  });

  test("replicas found by DNS are reached on the admin port, IPv6 in brackets", async () => {
    const directory = new PeerDirectory({
      urls: [],
      dnsName: "gateway-headless",
      adminPort: 9901,
      resolve: async () => ["10.1.0.7", "fd00::2"],
    });
    expect(await directory.list()).toEqual({ urls: ["http://10.1.0.7:9901", "http://[fd00::2]:9901"], error: null });
    const failing = new PeerDirectory({
      urls: [],
      dnsName: "nowhere",
      adminPort: 9901,
      resolve: () => Promise.reject(new Error("ENOTFOUND")),
    });
    expect(await failing.list()).toEqual({ urls: [], error: "cannot resolve nowhere: ENOTFOUND" });
  });
});

describe("admin routes of the dashboard", () => {
  const { gateway, dashboard, identity, lifecycle } = inProcessGateway();
  const app = createAdminApp(gateway, identity, lifecycle, undefined, { dashboard });
  afterAll(() => gateway.close());
  const get = (path: string) => app.handle(new Request(`http://admin${path}`));

  test("the page and its files are served with their types and a same-origin-only CSP", async () => {
    const page = await get("/dashboard");
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(page.headers.get("content-security-policy")).toContain("default-src 'none'");
    const html = await page.text();
    const assets = [...html.matchAll(/(?:src|href)="(\/dashboard\/assets\/[^"]+)"/g)].map((m) => m[1]!);
    // Not vacuous: the page links uPlot's script and style and its own.
    expect(assets).toHaveLength(4);
    for (const asset of assets) {
      const res = await get(asset);
      expect([asset, res.status]).toEqual([asset, 200]);
      expect((await res.text()).length).toBeGreaterThan(100);
    }
    expect((await get("/dashboard/assets/..%2F..%2Fpackage.json")).status).toBe(404);
    expect((await get("/dashboard/assets/toString")).status).toBe(404);
  });

  test("snapshot.json takes 1 to 300 seconds of history and answers 400 otherwise", async () => {
    const ok = await get("/dashboard/snapshot.json?seconds=5");
    expect(ok.status).toBe(200);
    const body = (await ok.json()) as GatewaySnapshot;
    expect(body.gateway.instance).toBe("gw-test");
    expect(body.routes.map((r) => [r.name, r.series.requests.length])).toEqual([["r", 5]]);
    expect(body.upstreams[0]!.endpoints.map((e) => e.address)).toEqual(["127.0.0.1:9"]);
    // The window keeps 299 completed seconds: 300, the most one may ask, answers them all.
    const all = (await (await get("/dashboard/snapshot.json?seconds=300")).json()) as GatewaySnapshot;
    expect(all.routes[0]!.series.requests).toHaveLength(WINDOW_SECONDS - 1);
    for (const bad of ["0", "301", "abc", "1.5", "1e2", "0x10", " 5", "-1"]) {
      const res = await get(`/dashboard/snapshot.json?seconds=${bad}`);
      expect([bad, res.status, res.headers.get("content-type")]).toEqual([bad, 400, "application/problem+json"]);
    }
  });

  test("events stream the tier as Server-Sent Events", async () => {
    const abort = new AbortController();
    const res = await app.handle(new Request("http://admin/dashboard/events", { signal: abort.signal }));
    expect(res.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    const reader = res.body!.getReader();
    let text = "";
    while (!text.includes("\n\nevent: state")) text += new TextDecoder().decode((await reader.read()).value);
    while (!text.endsWith("\n\n")) text += new TextDecoder().decode((await reader.read()).value);
    const data = JSON.parse(text.split("data: ")[1]!) as { servedBy: string; gateways: unknown[] };
    expect(data.servedBy).toBe("gw-test");
    expect(data.gateways).toHaveLength(1);
    abort.abort();
    await reader.cancel();
  });
});
