/**
 * A reload meeting the other moving parts, in process (a Gateway on a real listener, stub
 * upstreams on loopback, a resolver the test controls):
 * - DNS failing while a reload rebuilds an upstream: the new one starts from the addresses the old
 *   one knew (it used to start empty, and every request got 503 until DNS answered);
 * - a request whose body was still arriving when its upstream was retired: it goes to the one in
 *   service (it used to reach the closed one: 503 "all endpoints are out");
 * - the canary admin routes while a reload waits for DNS: they answer for the canaries in service
 *   (GET /canary answered 500, and a running canary could not be aborted).
 * - an endpoint the health checks found down, when a reload rebuilds its upstream: it stays out
 *   until the new upstream's checks pass (it came back as "unknown" and took traffic until they
 *   failed again) — unless the reload changed the check itself, and the 503 meanwhile says to
 *   retry when the check under way is due, not at the next round.
 * And the rate limiter's peer count: an address listed and also found by DNS counts once.
 */
import { afterAll, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import pino from "pino";
import { Lifecycle } from "../../lib/lifecycle.ts";
import { canaryRoutes } from "../src/admin/canary.ts";
import { parseConfig } from "../src/config/load.ts";
import { PeerDirectory } from "../src/peers.ts";
import { Gateway } from "../src/server.ts";
import type { HostResolver } from "../src/upstream/discovery.ts";

const log = pino({ level: "silent" });
const servers: Server<undefined>[] = [];
const gateways: Gateway[] = [];
afterAll(() => {
  for (const g of gateways) g.close();
  for (const s of servers) s.stop(true);
});

function stub(version: string): Server<undefined> {
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      await req.arrayBuffer();
      return new Response(`ok ${version}`, { headers: { "x-service-version": version } });
    },
  });
  servers.push(server);
  return server;
}

function gatewayOf(yaml: string, resolver?: HostResolver): Gateway {
  const gateway = new Gateway(parseConfig(yaml, "routes.yaml"), {
    identity: { service: "gateway", version: "t", instance: "gw" },
    log,
    lifecycle: new Lifecycle({ drainDelayMs: 0, shutdownTimeoutMs: 1000, log }),
    ...(resolver ? { resolver } : {}),
  });
  gateways.push(gateway);
  return gateway;
}

/** The gateway on a listener of its own. */
function listen(gateway: Gateway): Server<undefined> {
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: gateway.fetch });
  servers.push(server as Server<undefined>);
  return server as Server<undefined>;
}

/** A resolver for `web.test` whose answer the test switches; "fail" times out like a DNS outage. */
function switchableResolver(address: string) {
  const state = { mode: "answer" as "answer" | "fail" };
  const resolver: HostResolver = {
    async resolve(host) {
      if (state.mode === "fail") throw Object.assign(new Error(`query for ${host} timed out`), { code: "ETIMEOUT" });
      return [address];
    },
  };
  return { state, resolver };
}

describe("a reload while DNS fails", () => {
  test("the rebuilt upstream keeps the addresses the one it replaces knew", async () => {
    const up = stub("v1");
    const { state, resolver } = switchableResolver("127.0.0.1");
    const routes = (timeoutMs: number) => `
upstreams:
  web: { protocol: http, endpoints: "web.test:${up.port}", timeoutMs: ${timeoutMs}, healthCheck: { enabled: false }, discovery: { refreshMs: 200 } }
routes:
  - { name: r, path: /r, upstream: web }
`;
    const gateway = gatewayOf(routes(5000), resolver);
    await gateway.upstreams.get("web")!.ready;
    const server = listen(gateway);
    expect((await fetch(`http://127.0.0.1:${server.port}/r`)).status).toBe(200);

    state.mode = "fail";
    await Bun.sleep(400); // a refresh or two fail: the kept addresses serve
    expect((await fetch(`http://127.0.0.1:${server.port}/r`)).status).toBe(200);
    // A setting of the upstream changes: it is rebuilt, and its first lookup fails too.
    const before = gateway.upstreams.get("web")!;
    await gateway.reload(parseConfig(routes(6000), "routes.yaml"));
    expect(gateway.upstreams.get("web")).not.toBe(before);
    expect(gateway.upstreams.get("web")!.endpoints.map((e) => e.address)).toEqual([`127.0.0.1:${up.port}`]);
    const statuses = await Promise.all(
      Array.from({ length: 10 }, () => fetch(`http://127.0.0.1:${server.port}/r`).then((r) => r.status)),
    );
    expect(statuses).toEqual(Array(10).fill(200));
  });
});

describe("a request whose body arrives across a reload", () => {
  test("is sent through the upstream in service when the one it started with was retired", async () => {
    const up = stub("v1");
    // The retired upstream is closed after the longest route timeout: 300 ms here.
    const routes = (timeoutMs: number) => `
upstreams:
  up: { protocol: http, endpoints: "127.0.0.1:${up.port}", timeoutMs: ${timeoutMs}, healthCheck: { enabled: false } }
routes:
  - { name: r, path: /r, methods: [POST], upstream: up, timeoutMs: 300 }
`;
    const gateway = gatewayOf(routes(5000));
    const server = listen(gateway);
    const answer = new Promise<string>((resolve, reject) => {
      let text = "";
      void Bun.connect({
        hostname: "127.0.0.1",
        port: server.port!,
        socket: {
          async open(socket) {
            socket.write("POST /r HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 10\r\n\r\n01234");
            await Bun.sleep(100);
            await gateway.reload(parseConfig(routes(6000), "routes.yaml")); // `up` rebuilt
            await Bun.sleep(600); // past the grace: the upstream the request started with is closed
            socket.write("56789");
          },
          data(socket, chunk) {
            text += Buffer.from(chunk).toString();
            if (text.includes("\r\n\r\n")) {
              resolve(text);
              socket.end();
            }
          },
          error: (_socket, err) => reject(err),
        },
      });
    });
    expect((await answer).split("\r\n")[0]).toBe("HTTP/1.1 200 OK");
  });
});

describe("the canary admin routes while a reload waits for DNS", () => {
  test("answer for the canaries in service: a running one can be aborted", async () => {
    const resolver: HostResolver = {
      async resolve() {
        await Bun.sleep(1500);
        return ["127.0.0.1"];
      },
    };
    const gateway = gatewayOf(
      `
upstreams:
  up: { protocol: http, endpoints: "127.0.0.1:1", healthCheck: { enabled: false } }
routes:
  - { name: r, path: /r, upstream: up }
`,
      resolver,
    );
    const admin = canaryRoutes(gateway);
    const call = (method: string, path: string, body: object = {}) =>
      admin.handle(
        new Request(`http://admin${path}`, {
          method,
          headers: { "content-type": "application/json" },
          ...(method === "POST" ? { body: JSON.stringify(body) } : {}),
        }),
      );
    expect((await call("POST", "/canary/up/start", { version: "v2" })).status).toBe(200);
    // The route moves to an upstream whose name takes 1.5 s to resolve; `up` leaves the config.
    const reloading = gateway.reload(
      parseConfig(
        `
upstreams:
  slow: { protocol: http, endpoints: "slow.test:80", healthCheck: { enabled: false } }
routes:
  - { name: r, path: /r, upstream: slow }
`,
        "routes.yaml",
      ),
    );
    await Bun.sleep(100);
    const list = await call("GET", "/canary");
    expect(list.status).toBe(200);
    expect(((await list.json()) as { upstream: string; state: string }[]).map((c) => [c.upstream, c.state])).toEqual([
      ["up", "running"],
    ]);
    const abort = await call("POST", "/canary/up/abort");
    expect(abort.status).toBe(200);
    expect(((await abort.json()) as { state: string }).state).toBe("aborted");
    await reloading;
    expect(((await (await call("GET", "/canary")).json()) as { upstream: string }[]).map((c) => c.upstream)).toEqual([
      "slow",
    ]);
  });
});

describe("the rate limiter's peer count", () => {
  test("an address both listed and found by DNS counts once", async () => {
    const peer = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("ready") });
    servers.push(peer);
    const directory = new PeerDirectory({
      urls: [`http://127.0.0.1:${peer.port}`],
      dnsName: "gateway-headless",
      adminPort: peer.port,
      resolve: async () => ["127.0.0.1"],
    });
    expect(await directory.countLive(1000)).toEqual({ live: 1, error: null });
  });
});

describe("a reload that rebuilds an upstream with an endpoint down", () => {
  test("keeps the endpoint out until the new upstream's own checks say otherwise", async () => {
    const up = stub("v1");
    // A port nothing listens on: every check and every request to it is refused.
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const deadPort = probe.port;
    probe.stop(true);
    const dead = `127.0.0.1:${deadPort}`;
    // Two failed checks take an endpoint out (the default); the reload lengthens the interval.
    const routes = (intervalMs: number) => `
upstreams:
  web:
    protocol: http
    endpoints: "127.0.0.1:${up.port},${dead}"
    healthCheck: { intervalMs: ${intervalMs}, timeoutMs: 150, unhealthyThreshold: 2, path: /ok }
routes:
  - { name: r, path: /r, upstream: web }
`;
    const gateway = gatewayOf(routes(200));
    const server = listen(gateway);
    const before = gateway.upstreams.get("web")!;
    await before.ready;
    const deadOf = (u: typeof before) => u.endpoints.find((e) => e.address === dead)!;
    const deadline = Date.now() + 5_000;
    while (deadOf(before).health !== "unhealthy" && Date.now() < deadline) await Bun.sleep(20);
    expect(deadOf(before).health).toBe("unhealthy");

    // A setting changes: the upstream is rebuilt. Its first check of the dead endpoint fails at
    // once, one of the two that would take it out; the second is 10 s off. The old verdict holds.
    await gateway.reload(parseConfig(routes(10_000), "routes.yaml"));
    const after = gateway.upstreams.get("web")!;
    expect(after).not.toBe(before);
    expect(deadOf(after).health).toBe("unhealthy");
    for (let i = 0; i < 20; i++) expect((await fetch(`http://127.0.0.1:${server.port}/r`)).status).toBe(200);
    // Every request went to the live endpoint at once: none was sent to the dead one and retried.
    expect({ retries: after.retries.attempted - before.retries.attempted, sentToDead: deadOf(after).requests }).toEqual(
      { retries: 0, sentToDead: 0 },
    );
  });
});

/** An upstream whose health path answers as the test says: "fail" 503, "slow" 200 after 300 ms, else 200; /bad is 404. */
function switchableStub() {
  const state = { health: "ok" as "ok" | "fail" | "slow" };
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      await req.arrayBuffer();
      const path = new URL(req.url).pathname;
      if (path === "/bad") return new Response("no such page", { status: 404 });
      if (path === "/ok" && state.health === "fail") return new Response("down", { status: 503 });
      if (path === "/ok" && state.health === "slow") await Bun.sleep(300);
      return new Response("ok");
    },
  });
  servers.push(server);
  return { port: server.port!, state };
}

describe("a reload that rebuilds an upstream whose endpoints are all down", () => {
  const routes = (port: number, check: string) => `
upstreams:
  web: { protocol: http, endpoints: "127.0.0.1:${port}", healthCheck: { ${check} } }
routes:
  - { name: r, path: /r, upstream: web }
`;
  async function downBeforeReload(gateway: Gateway) {
    const before = gateway.upstreams.get("web")!;
    await before.ready;
    const deadline = Date.now() + 5_000;
    while (before.endpoints[0]!.health !== "unhealthy" && Date.now() < deadline) await Bun.sleep(10);
    expect(before.endpoints[0]!.health).toBe("unhealthy");
  }

  test("that fixes the health check: the endpoint serves at once, the old check's verdict is not kept", async () => {
    const { port } = switchableStub();
    const check = (path: string) => `path: ${path}, intervalMs: 1000, unhealthyThreshold: 1, healthyThreshold: 2`;
    const gateway = gatewayOf(routes(port, check("/bad")));
    const server = listen(gateway);
    await downBeforeReload(gateway);
    await gateway.reload(parseConfig(routes(port, check("/ok")), "routes.yaml"));
    expect(gateway.upstreams.get("web")!.endpoints[0]!.health).not.toBe("unhealthy");
    expect((await fetch(`http://127.0.0.1:${server.port}/r`)).status).toBe(200);
  });

  test("with the same check: 503 meanwhile, with Retry-After when the check under way is due", async () => {
    const { port, state } = switchableStub();
    state.health = "fail";
    const check = (intervalMs: number) =>
      `path: /ok, intervalMs: ${intervalMs}, timeoutMs: 1000, unhealthyThreshold: 1`;
    const gateway = gatewayOf(routes(port, check(1000)));
    const server = listen(gateway);
    await downBeforeReload(gateway);
    // Back, answering its checks in 300 ms; the reload's new upstream checks it at once, then every 10 s.
    state.health = "slow";
    await gateway.reload(parseConfig(routes(port, check(10_000)), "routes.yaml"));
    const first = await fetch(`http://127.0.0.1:${server.port}/r`);
    expect({ status: first.status, retryAfter: first.headers.get("retry-after") }).toEqual({
      status: 503,
      retryAfter: "1",
    });
    await Bun.sleep(500);
    expect((await fetch(`http://127.0.0.1:${server.port}/r`)).status).toBe(200);
  });
});
