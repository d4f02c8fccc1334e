/**
 * The local stack against what it does not own (real processes): ports another process holds,
 * a readiness answer from someone else, a canary in the way of a rollout, a replica that crashed
 * before its turn, a redis-server that does not start, and settings that cannot work.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { useControlledStack } from "../stack/testing/controlled-stack.ts";
import type { Server } from "bun";
import { controlStream } from "../stack/dev-control.ts";
import { describeRateLimits, startLocalRedis } from "../stack/redis.ts";
import { type RolloutEvent, RollingStack } from "../stack/rolling.ts";
import { type Stack, stackOptionsFromEnv, waitReady } from "../stack/stack.ts";
import { requireBinary, spawnProcess, stopAll, stopProcess } from "../stack/testing/processes.ts";
import { freeBlock, freePort, oneReplicaDevEnv, startTestStack } from "../stack/testing/stack.ts";

const servers: Server<undefined>[] = [];
afterAll(async () => {
  for (const s of servers) s.stop(true);
  await stopAll();
});

/** Another process's listener, as a second `make dev` or anything else would hold the port. */
function squat(port: number, instance = "someone-else", reusePort = false): Server<undefined> {
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port,
    reusePort,
    fetch: (req) =>
      new URL(req.url).pathname === "/version"
        ? Response.json({ instance })
        : new Response("ready", { headers: instance.startsWith("gateway") ? {} : { "x-served-by": instance } }),
  });
  servers.push(server);
  return server;
}

test("make dev's banner names a REDIS_URL without its password, as the gateways' own lines do", () => {
  const line = describeRateLimits("redis://default:Hunter2Secret@127.0.0.1:6399/0", false);
  expect(line).toBe("redis://default:***@127.0.0.1:6399/0: one budget shared by the gateways");
  expect(describeRateLimits("redis://127.0.0.1:6399", true)).toBe(
    "redis://127.0.0.1:6399 (a local redis-server started for this stack): one budget shared by the gateways",
  );
});

test("GATEWAY_PORT=0 and *_REPLICAS=0 are refused, saying what is expected", () => {
  expect(() => stackOptionsFromEnv({ GATEWAY_PORT: "0" })).toThrow(
    "GATEWAY_PORT=0 is not valid: a port from 1 to 65535 is expected",
  );
  expect(() => stackOptionsFromEnv({ WEBAPP_REPLICAS: "0" })).toThrow(
    "WEBAPP_REPLICAS=0 is not valid: a whole number of replicas, at least 1, is expected",
  );
  expect(() => stackOptionsFromEnv({ GATEWAY_REPLICAS: "1.5" })).toThrow("GATEWAY_REPLICAS=1.5 is not valid");
  expect(stackOptionsFromEnv({ GATEWAY_REPLICAS: "1" }).gatewayReplicas).toBe(1);
  // TLS as every boolean variable: a misspelling stops make dev instead of starting it without TLS.
  expect(() => stackOptionsFromEnv({ TLS: "ture" })).toThrow('TLS="ture" is not a boolean');
  for (const on of ["1", "true", "YES", "on"]) expect(stackOptionsFromEnv({ TLS: on }).tls).toBeDefined();
  for (const off of ["0", "false", "no", ""]) expect(stackOptionsFromEnv({ TLS: off }).tls).toBeUndefined();
});

describe("a port the stack needs is taken", () => {
  test("the gateway port held through SO_REUSEPORT (as another stack's gateways hold it): nothing starts", async () => {
    const gatewayPort = await freePort();
    squat(gatewayPort, "gateway-of-another-stack", true);
    let created: Stack | undefined;
    const started = startTestStack({ gatewayPort, gatewayReplicas: 1, webappReplicas: 1, rpcappReplicas: 1 }, (o) => {
      created = new RollingStack(o);
      return created;
    });
    await expect(started).rejects.toThrow(`port already in use: ${gatewayPort} (GATEWAY_PORT)`);
    expect(created!.processes).toEqual([]);
  }, 60_000);

  test("make dev exits with the hint docs/operations.md quotes, without claiming to be up", async () => {
    const webappBasePort = await freeBlock(2);
    squat(webappBasePort, "webapp-1");
    const dev = spawnProcess(
      "dev",
      [process.execPath, "scripts/dev.ts"],
      await oneReplicaDevEnv({ WEBAPP_BASE_PORT: String(webappBasePort), REDIS_URL: "redis://127.0.0.1:1" }),
    );
    try {
      const code = await Promise.race([dev.exited, Bun.sleep(30_000).then(() => "still running")]);
      const output = dev.lines.join("\n");
      expect(output).not.toContain("Portico is up");
      expect(code).toBe(1);
      expect(output).toContain(`make dev: port already in use: ${webappBasePort} (webapp-1)`);
      expect(output).toContain("Is another stack (or anything else) using these ports?");
    } finally {
      await stopProcess(dev, "SIGINT", 20_000);
    }
  }, 60_000);
});

describe("readiness is the spawned process's own", () => {
  test("a 200 from another instance on the port does not count (x-served-by; a gateway's /version)", async () => {
    const sleeper = spawnProcess("sleeper", ["sleep", "30"]);
    try {
      for (const [instance, name] of [
        ["webapp-9", "webapp-1"],
        ["gateway-9", "gateway-1"],
      ] as const) {
        const port = await freePort();
        squat(port, instance);
        const p = { name, readyUrl: `http://127.0.0.1:${port}/readyz`, proc: sleeper.proc };
        await expect(waitReady(p, 1_500, { instance: name })).rejects.toThrow(
          `${name} was not ready within 1500 ms: http://127.0.0.1:${port}/readyz is answered by ${instance}`,
        );
        await waitReady(p, 1_500, { instance });
      }
    } finally {
      await stopProcess(sleeper, "SIGKILL");
    }
  });
});

describe("rollouts, canaries and crashed replicas on a real stack", () => {
  const s = useControlledStack();

  const post = (path: string, body: object) =>
    fetch(`${s.url}${path}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });

  test("while a canary runs: no rollout or rollback of its service (409); no promotion during another rollout (409)", async () => {
    await s.stack.startCanaries("webapp", "v2");
    for (const path of ["/rollout", "/rollback"]) {
      const res = await post(path, { service: "webapp", version: "v3" });
      expect(res.status).toBe(409);
      expect((await res.json()).detail).toContain("a canary of webapp runs in this stack");
    }
    await expect(s.stack.rollingReplace("webapp", "v3")).rejects.toThrow("promote it or remove it first");

    const rpcappRollout = post("/rollout", { service: "rpcapp", version: "v2" });
    const response = await rpcappRollout;
    expect(response.status).toBe(200);
    const promote = await post("/canary/promote", { service: "webapp" });
    expect(promote.status).toBe(409);
    expect((await promote.json()).detail).toContain("a rollout is running in this stack");
    expect(await response.text()).toContain('"type":"done"');

    const events: string[] = [];
    for await (const e of controlStream(s.url, "/canary/remove", { service: "webapp" })) events.push(e.type);
    expect(events.at(-1)).toBe("done");
    expect(s.stack.describe().find((p) => p.kind === "webapp")).toMatchObject({ name: "webapp-1", version: "v1" });
  }, 60_000);

  test("a web page cannot drive the control port: a foreign Origin, a rebound Host or a text/plain POST is refused, and nothing starts", async () => {
    const before = s.stack.describe().map((p) => `${p.name}@${p.version}`);
    const body = JSON.stringify({ service: "webapp", version: "pwned" });
    const tries: { headers: Record<string, string>; status: number }[] = [
      // A no-cors fetch from any site: text/plain needs no preflight.
      { headers: { origin: "https://evil.example", "content-type": "text/plain" }, status: 403 },
      { headers: { "content-type": "text/plain" }, status: 415 },
      { headers: {}, status: 415 },
      // DNS rebinding: the attacker's name resolving to 127.0.0.1, same-origin with its page.
      {
        headers: { host: "attacker.example", origin: "http://attacker.example", "content-type": "application/json" },
        status: 403,
      },
    ];
    for (const t of tries) {
      const res = await fetch(`${s.url}/rollout`, { method: "POST", headers: t.headers, body });
      expect({ headers: t.headers, status: res.status }).toEqual({ headers: t.headers, status: t.status });
    }
    const read = await fetch(`${s.url}/stack`, { headers: { host: "attacker.example" } });
    expect(read.status).toBe(403);
    expect((await read.json()).detail).toContain("DNS rebinding");
    expect(s.stack.describe().map((p) => `${p.name}@${p.version}`)).toEqual(before);
    // A read from curl or Prometheus (no Origin, an address as Host) is answered.
    expect((await fetch(`${s.url}/stack`)).status).toBe(200);
  });

  test("a foreign process on a spare port: the rollout stops before starting a replica there", async () => {
    const spare = s.stack.portsOf("webapp", 1, 1).PORT!;
    const other = squat(spare, "webapp-1.2");
    try {
      await expect(s.stack.rollingReplace("webapp", "v4")).rejects.toThrow(
        `webapp-1 keeps serving and the rollout stops here: another process listens on PORT=${spare}`,
      );
      expect(
        s.stack
          .describe()
          .filter((p) => p.kind === "webapp")
          .map((p) => p.name),
      ).toEqual(["webapp-1"]);
    } finally {
      other.stop(true);
    }
  }, 60_000);

  test("a replica that crashed before its turn is not reported again by every later rollout", async () => {
    const webapp = s.stack.processes.find((p) => p.name === "webapp-1")!;
    webapp.proc.kill("SIGKILL");
    await webapp.proc.exited;
    const first: RolloutEvent[] = [];
    await s.stack.rollingReplace("webapp", "v5", (e) => first.push(e));
    await s.stack.settled((e) => first.push(e));
    expect(first.filter((e) => "instance" in e && e.instance === "webapp-1")).toEqual([]);
    const second: RolloutEvent[] = [];
    await s.stack.rollingReplace("webapp", "v6", (e) => second.push(e));
    await s.stack.settled((e) => second.push(e));
    expect(second.filter((e) => e.type === "settled").map((e) => (e as { instance: string }).instance)).toEqual([
      "webapp-1.2",
    ]);
  }, 60_000);
});

test.skipIf(!requireBinary("redis-server"))(
  "a redis-server that fails to start: its last lines, which say why, are in the error",
  async () => {
    // 192.0.2.1 (TEST-NET-1) is on no interface here: redis-server cannot bind it, says so, exits 1.
    const started = startLocalRedis({ port: await freePort(), host: "192.0.2.1" });
    const outcome = await started.then(
      async (redis) => {
        await redis.stop();
        return "started";
      },
      (err: Error) => err.message,
    );
    expect(outcome).toMatch(
      /^redis-server exited with code 1 before listening on 192\.0\.2\.1:\d+\nredis-server's last lines:\n/,
    );
    expect(outcome).toContain("Cannot assign requested address");
  },
);
