/**
 * The Redis users `make up` generates (scripts/cluster/secrets.ts), on a real redis-server started
 * the way k8s/redis-limiter.yaml starts it: the gateway's GCRA script and webapp's store work as
 * their ACL users, everything else is refused, the default user cannot connect, and the readiness
 * probe's command answers. Under CI a missing redis-server fails the test instead of skipping it.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RedisClient } from "bun";
import { limiterSecret, storeSecret } from "../../scripts/cluster/secrets.ts";
import { isListening } from "../../scripts/stack/redis.ts";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { requireBinary, type Spawned, spawnProcess, stopAll, waitFor } from "../../scripts/stack/testing/processes.ts";
import { openRedisStore } from "../../webapp/src/store/redis.ts";
import { type Workload, workloadsOf } from "./checks/cross-checks.ts";
import { loadManifests, REPO_ROOT } from "./checks/manifests.ts";

const hasRedis = requireBinary("redis-server") && requireBinary("redis-cli");
const dir = mkdtempSync(join(tmpdir(), "portico-redis-acl-"));
const clients: RedisClient[] = [];
afterAll(async () => {
  for (const c of clients) c.close();
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
});

const limiterWorkload = workloadsOf(loadManifests()).find((w) => w.name === "redis-limiter") as Workload;
const limiterContainer = limiterWorkload.containers[0]!;

/** redis-server as the manifest runs it, on a free loopback port, with `acl` as its ACL file. */
async function startRedis(name: string, acl: string): Promise<{ port: number; proc: Spawned }> {
  const port = await freePort();
  const aclFile = join(dir, `${name}.acl`);
  writeFileSync(aclFile, acl);
  const args = [...(limiterContainer.args ?? [])];
  args[args.indexOf("--port") + 1] = String(port);
  args[args.indexOf("--aclfile") + 1] = aclFile;
  const proc = spawnProcess(`redis-${name}`, [...args, "--bind", "127.0.0.1", "--dir", dir]);
  await waitFor(`redis ${name} on ${port}`, () => isListening(port), { proc, timeoutMs: 5000 });
  return { port, proc };
}

function client(url: string): RedisClient {
  const c = new RedisClient(url, { autoReconnect: false, connectionTimeout: 2000 });
  clients.push(c);
  return c;
}

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "accepted";
  } catch (err) {
    return String((err as Error).message).split(" ")[0]!;
  }
}

describe.skipIf(!hasRedis)("the limiter's Redis (redis-limiter.yaml)", async () => {
  const secret = limiterSecret();
  const { port } = hasRedis ? await startRedis("limiter", secret["users.acl"]) : { port: 0 };
  const url = secret.url.replace("@redis-limiter:6379", `@127.0.0.1:${port}`);

  test("the gateway's user runs the GCRA script on its own keys", async () => {
    const gcra = readFileSync(join(REPO_ROOT, "gateway/src/ratelimit/gcra.lua"), "utf8");
    const reply = (await client(url).send("EVAL", [
      gcra,
      "1",
      "portico:rl:verify:ip:192.0.2.1",
      "1000",
      "5000",
    ])) as number[];
    expect(reply[0]).toBe(1); // admitted
  });

  test("it may touch nothing else: other keys, administration and dangerous commands are refused", async () => {
    const c = client(url);
    expect({
      otherKey: await refusal(c.send("SET", ["portico:webapp:id", "1"])),
      flushall: await refusal(c.send("FLUSHALL", [])),
      config: await refusal(c.send("CONFIG", ["SET", "protected-mode", "no"])),
      keys: await refusal(c.send("KEYS", ["*"])),
      acl: await refusal(c.send("ACL", ["LIST"])),
    }).toEqual({ otherKey: "NOPERM", flushall: "NOPERM", config: "NOPERM", keys: "NOPERM", acl: "NOPERM" });
  });

  test("without a password (the default user) or with a wrong one, nothing is answered", async () => {
    expect(await refusal(client(`redis://127.0.0.1:${port}`).send("PING", []))).toMatch(/^NOAUTH|^WRONGPASS/);
    expect(
      await refusal(client(`redis://gateway:wrong-password-0123456789@127.0.0.1:${port}`).send("PING", [])),
    ).toMatch(/^WRONGPASS/);
  });

  test("the readiness probe's command answers with the container's REDISCLI_AUTH, and fails without it", async () => {
    const command = limiterContainer.readinessProbe?.exec?.command ?? [];
    expect(command.slice(0, 2)).toEqual(["sh", "-c"]);
    const script = command[2]!.replace("redis-cli ", `redis-cli -p ${port} `);
    const run = (env: Record<string, string>) =>
      Bun.spawnSync(["sh", "-c", script], { env: { PATH: process.env.PATH ?? "", ...env } }).exitCode;
    expect(run({ REDISCLI_AUTH: secret.password })).toBe(0);
    expect(run({})).not.toBe(0);
  });
});

describe.skipIf(!hasRedis)("the store's Redis users (redis-store.yaml)", async () => {
  const secret = storeSecret();
  const { port } = hasRedis ? await startRedis("store", secret["users.acl"]) : { port: 0 };
  const url = secret.url.replace("@redis-store-0.redis-store:6379", `@127.0.0.1:${port}`);

  test("webapp's store creates and lists projects as the `webapp` user", async () => {
    const store = openRedisStore({ url, keyPrefix: "portico:webapp:", timeoutMs: 2000 });
    try {
      await waitFor("the store", async () => {
        try {
          await store.ping();
          return true;
        } catch {
          return false;
        }
      });
      const created = await store.create("ACL test");
      expect((await store.list({ limit: 10, after: 0 })).map((p) => p.title)).toContain(created.title);
    } finally {
      await store.close();
    }
  });

  test("the replication user can replicate and ping, and read nothing", async () => {
    const replica = client(`redis://replica:${encodeURIComponent(secret["replica-password"])}@127.0.0.1:${port}`);
    expect(await replica.send("PING", [])).toBe("PONG");
    expect(await refusal(replica.send("GET", ["portico:webapp:id"]))).toBe("NOPERM");
  });

  test("the webapp user cannot reconfigure or flush the store", async () => {
    const c = client(url);
    expect(await refusal(c.send("FLUSHDB", []))).toBe("NOPERM");
    expect(await refusal(c.send("REPLICAOF", ["NO", "ONE"]))).toBe("NOPERM");
  });
});
