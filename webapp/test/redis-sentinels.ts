/**
 * A Sentinel-managed Redis set on 127.0.0.1, shaped like k8s/redis-store.yaml: three redis-server
 * processes (one master, two replicas) and three Sentinels (quorum 2) watching them under the
 * master name `portico`, with the cluster's own ACL users and passwords (scripts/cluster/secrets.ts
 * storeSecret: `webapp` for the app, `replica` for replication, `sentinel` for the Sentinels, and
 * a password on the Sentinels). Failure detection is tuned down (down-after-milliseconds) so a
 * failover takes seconds. Processes are cleaned up by PID with the test file's others (stopAll).
 */
import { RedisClient } from "bun";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { STORE_MASTER_NAME, storeSecret } from "../../scripts/cluster/secrets.ts";
import { freePorts } from "../../scripts/stack/testing/ports.ts";
import {
  type Spawned,
  spawnProcess,
  stopProcess,
  testTempDir,
  waitFor,
} from "../../scripts/stack/testing/processes.ts";
import { isListening } from "../../scripts/stack/redis.ts";

export interface SentinelSetOptions {
  /** How long the master must not answer before a Sentinel calls it down (ms). */
  downAfterMs: number;
  /** Sentinel's failover-timeout (ms). */
  failoverTimeoutMs: number;
}

export class TestSentinelSet {
  readonly secret = storeSecret();
  readonly masterName = STORE_MASTER_NAME;
  readonly dir = testTempDir("sentinel");
  /** redis-server processes by port. */
  readonly nodes = new Map<number, Spawned>();
  readonly sentinels = new Map<number, Spawned>();

  private constructor(
    readonly nodePorts: number[],
    readonly sentinelPorts: number[],
  ) {}

  /** Starts the set and waits until every Sentinel sees the two replicas and the two other Sentinels. */
  static async start(opts: SentinelSetOptions): Promise<TestSentinelSet> {
    const ports = await freePorts(6);
    const set = new TestSentinelSet(ports.slice(0, 3), ports.slice(3));
    writeFileSync(join(set.dir, "users.acl"), set.secret["users.acl"]);
    const [master, ...replicas] = set.nodePorts as [number, number, number];
    set.#startNode(master, undefined);
    await waitFor(`redis master on ${master}`, () => isListening(master), { timeoutMs: 5000 });
    for (const port of replicas) set.#startNode(port, master);
    for (const port of set.sentinelPorts) set.#startSentinel(port, master, opts);
    await Promise.all(
      set.sentinelPorts.map((port) =>
        waitFor(
          `sentinel ${port} to see 2 replicas and 2 other sentinels`,
          async () => {
            const info = await set.sentinelMasterInfo(port);
            if (info["num-slaves"] !== "2" || info["num-other-sentinels"] !== "2" || info.flags !== "master")
              return false;
            return (await set.replicasInSync(port)) === 2;
          },
          { timeoutMs: 20_000, intervalMs: 200, proc: set.sentinels.get(port) },
        ),
      ),
    );
    return set;
  }

  /** REDIS_SENTINELS for the webapp. */
  get sentinelList(): string {
    return this.sentinelPorts.map((p) => `127.0.0.1:${p}`).join(",");
  }

  /**
   * REDIS_URL for the webapp: the `webapp` user and password, on a host that is none of the
   * nodes — the address must come from the Sentinels.
   */
  get webappUrl(): string {
    return `redis://webapp:${encodeURIComponent(this.secret["webapp-password"])}@127.0.0.1:1`;
  }

  /** What a Sentinel says of the master, as field → value. */
  async sentinelMasterInfo(port: number): Promise<Record<string, string>> {
    return fields(await this.#askSentinel(port, ["MASTER", this.masterName]));
  }

  /** How many replicas the Sentinel at `port` sees with their replication link up. */
  async replicasInSync(port: number): Promise<number> {
    const replicas = (await this.#askSentinel(port, ["REPLICAS", this.masterName])) as unknown[];
    return replicas.map(fields).filter((r) => r["master-link-status"] === "ok" && r.flags === "slave").length;
  }

  /** The master's port, as the first Sentinel that answers names it. */
  async masterPort(): Promise<number> {
    for (const port of this.sentinelPorts) {
      try {
        const reply = (await this.#askSentinel(port, ["GET-MASTER-ADDR-BY-NAME", this.masterName])) as string[];
        return Number(reply[1]);
      } catch {
        // the next one
      }
    }
    throw new Error("no Sentinel answered");
  }

  async kill(nodePort: number): Promise<void> {
    await stopProcess(this.nodes.get(nodePort)!, "SIGKILL");
  }

  async #askSentinel(port: number, args: string[]): Promise<unknown> {
    const client = new RedisClient(
      `redis://:${encodeURIComponent(this.secret["sentinel-password"])}@127.0.0.1:${port}`,
      {
        autoReconnect: false,
        connectionTimeout: 1000,
      },
    );
    try {
      return await client.send("SENTINEL", args);
    } finally {
      client.close();
    }
  }

  #startNode(port: number, masterPort: number | undefined): void {
    const lines = [
      `port ${port}`,
      "bind 127.0.0.1",
      `dir ${this.dir}`,
      `aclfile ${join(this.dir, "users.acl")}`,
      'save ""',
      "appendonly no",
      "maxmemory-policy noeviction",
      // A replica's first full sync starts at once (the default waits 5 s for more replicas).
      "repl-diskless-sync-delay 0",
      "masteruser replica",
      `masterauth ${this.secret["replica-password"]}`,
      "loglevel warning",
      ...(masterPort ? [`replicaof 127.0.0.1 ${masterPort}`] : []),
    ];
    const file = join(this.dir, `redis-${port}.conf`);
    writeFileSync(file, `${lines.join("\n")}\n`);
    this.nodes.set(port, spawnProcess(`redis-${port}`, ["redis-server", file]));
  }

  #startSentinel(port: number, masterPort: number, opts: SentinelSetOptions): void {
    const password = this.secret["sentinel-password"];
    const lines = [
      `port ${port}`,
      "bind 127.0.0.1",
      `dir ${this.dir}`,
      `requirepass ${password}`,
      `sentinel sentinel-pass ${password}`,
      `sentinel monitor ${this.masterName} 127.0.0.1 ${masterPort} 2`,
      `sentinel auth-user ${this.masterName} sentinel`,
      `sentinel auth-pass ${this.masterName} ${this.secret["sentinel-redis-password"]}`,
      `sentinel down-after-milliseconds ${this.masterName} ${opts.downAfterMs}`,
      `sentinel failover-timeout ${this.masterName} ${opts.failoverTimeoutMs}`,
      `sentinel parallel-syncs ${this.masterName} 1`,
      "loglevel notice",
    ];
    // A Sentinel rewrites its config file as it learns the set: one writable file each.
    const file = join(this.dir, `sentinel-${port}.conf`);
    writeFileSync(file, `${lines.join("\n")}\n`);
    this.sentinels.set(port, spawnProcess(`sentinel-${port}`, ["redis-server", file, "--sentinel"]));
  }
}

/** A Sentinel's description of a server as field → value: RESP3 answers a map, RESP2 a flat list. */
function fields(reply: unknown): Record<string, string> {
  if (!Array.isArray(reply)) return Object.fromEntries(Object.entries(reply as object).map(([k, v]) => [k, String(v)]));
  const info: Record<string, string> = {};
  for (let i = 0; i + 1 < reply.length; i += 2) info[String(reply[i])] = String(reply[i + 1]);
  return info;
}
