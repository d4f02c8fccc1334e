/**
 * Clients behind the cluster's NodePort. With `externalTrafficPolicy: Local` (k8s/gateway.yaml,
 * enforced by k8s/test/checks/hardening.ts) kube-proxy does not rewrite the source, so the gateway
 * sees each client's own address as the TCP peer. Here that is reproduced on loopback: the gateway
 * runs the cluster's own routes.yaml (the gateway-routes ConfigMap, its `projects` limit lowered
 * through the variables the ConfigMap reads) against a real Redis, and two clients connect from
 * different source addresses (127.0.0.2, 127.0.0.3). Each gets its own budget, X-Forwarded-For
 * carries the address the gateway saw, and a client cannot borrow another's budget by sending an
 * X-Forwarded-For of its own (the cluster config trusts no proxy, so the gateway replaces it). With `Cluster` instead, every
 * request would arrive from a node address: one budget for everyone (the last test shows what that
 * looks like).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import http from "node:http";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { requireBinary, stopAll } from "../../scripts/stack/testing/processes.ts";
import { loadManifests } from "../../k8s/test/checks/manifests.ts";
import { startGateway, type TestGateway, TestRedis, writeRoutes } from "./ratelimit-harness.ts";

const hasRedis = requireBinary("redis-server");
let redis: TestRedis;
let gateway: TestGateway;
let upstream: ReturnType<typeof Bun.serve>;
/** X-Forwarded-For of each /projects request the upstream received, in order. */
const forwardedFor: string[] = [];

/** The routes.yaml the cluster's gateways run, with the Service names replaced by local addresses. */
function clusterRoutes(webapp: string, rpcapp: string): string {
  const configMap = loadManifests().find(
    (m) => m.object.kind === "ConfigMap" && m.object.metadata?.name === "gateway-routes",
  );
  const text = (configMap?.object.data as Record<string, string> | undefined)?.["routes.yaml"];
  if (!text) throw new Error("k8s/gateway.yaml has no gateway-routes ConfigMap with a routes.yaml");
  const replaced = text.replace("webapp-headless:8080", webapp).replace("rpcapp-headless:50051", rpcapp);
  expect(replaced).not.toContain("-headless");
  return replaced;
}

/** GET `path` through the gateway over a new connection from source address `from`. */
function getFrom(from: string, path: string, headers: Record<string, string> = {}): Promise<number> {
  const { hostname, port } = new URL(gateway.url);
  return new Promise((resolve, reject) => {
    const req = http.get({ host: hostname, port, path, headers, localAddress: from, agent: false }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", reject);
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${path} from ${from} timed out`)));
  });
}

const statusesFrom = async (from: string, n: number, headers: Record<string, string> = {}) => {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await getFrom(from, "/projects", headers));
  return out;
};

beforeAll(async () => {
  if (!hasRedis) return;
  redis = await TestRedis.start();
  upstream = Bun.serve({
    hostname: "127.0.0.1",
    port: await freePort(),
    fetch(req) {
      // Only the clients' requests: the gateway's own health checks come here too.
      if (new URL(req.url).pathname === "/projects") forwardedFor.push(req.headers.get("x-forwarded-for") ?? "");
      return Response.json([]);
    },
  });
  const routes = writeRoutes(clusterRoutes(`127.0.0.1:${upstream.port}`, `127.0.0.1:${await freePort()}`));
  // 3 requests per client per minute: the ConfigMap's own variables, lowered for the test.
  gateway = await startGateway("gateway-nodeport", routes, {
    REDIS_URL: redis.url,
    PROJECTS_RATE_LIMIT: "3",
    PROJECTS_RATE_BURST: "3",
  });
}, 30_000);

afterAll(async () => {
  upstream?.stop(true);
  await stopAll();
});

describe.skipIf(!hasRedis)("two clients behind the NodePort (externalTrafficPolicy: Local)", () => {
  test("each client address has its own budget on the cluster's /projects limit", async () => {
    expect(await statusesFrom("127.0.0.2", 4)).toEqual([200, 200, 200, 429]);
    // The first client is out of budget; the second has all of its own.
    expect(await statusesFrom("127.0.0.3", 4)).toEqual([200, 200, 200, 429]);
  });

  test("the upstream is told the address the gateway saw, appended to X-Forwarded-For", async () => {
    expect(forwardedFor.slice(0, 3)).toEqual(["127.0.0.2", "127.0.0.2", "127.0.0.2"]);
    expect(forwardedFor.slice(3, 6)).toEqual(["127.0.0.3", "127.0.0.3", "127.0.0.3"]);
  });

  test("a client's own X-Forwarded-For neither borrows another budget nor reaches the upstream", async () => {
    // 127.0.0.2 is out of budget; claiming to be someone else changes nothing (no proxy is trusted),
    // and the claim is replaced by the address the gateway saw (docs/security.md).
    expect(await statusesFrom("127.0.0.2", 2, { "x-forwarded-for": "198.51.100.7" })).toEqual([429, 429]);
    const before = forwardedFor.length;
    expect(await statusesFrom("127.0.0.4", 1, { "x-forwarded-for": "198.51.100.7" })).toEqual([200]);
    expect(forwardedFor.slice(before)).toEqual(["127.0.0.4"]);
  });

  test("what SNAT (externalTrafficPolicy: Cluster) would do: clients arriving from one node address share one budget", async () => {
    // Three different people, one source address (as kube-proxy would rewrite them to).
    const node = "127.0.0.5";
    const people = [
      await getFrom(node, "/projects"),
      await getFrom(node, "/projects"),
      await getFrom(node, "/projects"),
    ];
    expect(people).toEqual([200, 200, 200]);
    expect(await getFrom(node, "/projects")).toBe(429);
  });
});
