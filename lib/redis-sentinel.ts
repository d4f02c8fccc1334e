/**
 * A Redis connection that follows the master of a Sentinel-managed set: it asks the Sentinels
 * which server is master (SENTINEL get-master-addr-by-name), connects there with the user and
 * password of the data URL, and asks again whenever that stops working. Bun's RedisClient has no
 * Sentinel support; this is the thin part on top of lib/redis.ts's BoundedRedis, which bounds
 * every call (no offline queue, a timeout per call, a probe that reconnects).
 * https://redis.io/docs/latest/develop/reference/sentinel-clients/
 *
 * The Sentinels are asked again:
 * - when the master connection goes down (closed, or a call timed out), every `probeIntervalMs`
 *   until they name a master that answers: during a failover they name the old one until a
 *   replica is promoted;
 * - when a call is refused with READONLY, LOADING or MASTERDOWN: the server is no longer (or not
 *   yet) a usable master, though the connection still works — a demoted master keeps its clients;
 * - every `checkIntervalMs` while all is well, for a switch that neither of those reveals.
 * A server is used only once it says it is a master (HELLO's `role`; ROLE is an admin command
 * the app's ACL user may not run), so a Sentinel that still names a demoted master costs only a
 * retry.
 *
 * Nothing here makes a write durable across a failover: Redis replicates asynchronously, so the
 * caller WAITs for a replica where that matters (webapp/src/store/redis.ts).
 *
 * @example
 *   const redis = new SentinelRedis({ sentinels: ["redis-store-sentinel:26379"], masterName: "portico",
 *     sentinelPassword, url: "redis://webapp:pw@ignored:6379", timeoutMs: 500 });
 *   await redis.probe();
 *   await redis.call("GET", ["key"]); // RedisUnavailableError until a master is found
 */
import type { Logger } from "./log.ts";
import {
  BoundedRedis,
  type BoundedRedisOptions,
  type RedisConnection,
  type RedisStateChange,
  RedisUnavailableError,
  redactUrl,
} from "./redis.ts";

export interface SentinelRedisOptions {
  /** `host:port` of each Sentinel (or of one Service in front of them); asked in turn. */
  sentinels: readonly string[];
  /** The name the Sentinels monitor the set under (`sentinel monitor <name> …`). */
  masterName: string;
  /** What the Sentinels ask for (their `requirepass`); none: they ask for nothing. */
  sentinelPassword?: string;
  /** The data servers' URL: its scheme, user, password and database are used, its host and port replaced by the master's. */
  url: string;
  /** Bound on every call, to a Sentinel or to the master (ms). */
  timeoutMs: number;
  /** How often, while there is no usable master, the Sentinels are asked again (ms; 250). */
  probeIntervalMs?: number;
  /** How often, while the master answers, the Sentinels are asked whether it still is (ms; 1000). */
  checkIntervalMs?: number;
  onStateChange?: (change: RedisStateChange) => void;
  log?: Logger;
  /** Names this connection in log lines. */
  name?: string;
}

/** Replies that say "this server is not a master that can serve now", though the connection works. */
const NOT_A_MASTER_NOW = /^(READONLY|LOADING|MASTERDOWN)\b/;

export class SentinelRedis implements RedisConnection {
  readonly #opts: SentinelRedisOptions;
  readonly #sentinels: { address: string; redis: BoundedRedis }[];
  readonly #timer: Timer;
  readonly #name: string;
  #master: BoundedRedis | undefined;
  #masterAddress: string | undefined;
  /** The Sentinel that answered last: asked first next time. */
  #preferred = 0;
  #resolving: Promise<void> | undefined;
  #lastAsked = 0;
  #up = false;
  #downSince = performance.now();
  /** The last reason no master could be found, logged once per change rather than every interval. */
  #lastProblem: string | undefined;
  #closed = false;

  /** Throws when a Sentinel address is not `host:port` or `url` is not a Redis URL. */
  constructor(opts: SentinelRedisOptions) {
    if (opts.sentinels.length === 0) throw new Error("no Sentinel address given");
    this.#opts = opts;
    this.#name = opts.name ?? "redis";
    dataUrl(opts.url, "127.0.0.1", 6379); // fails now on a URL that cannot be followed
    const scheme = new URL(opts.url).protocol;
    const auth = opts.sentinelPassword ? `:${encodeURIComponent(opts.sentinelPassword)}@` : "";
    this.#sentinels = opts.sentinels.map((address) => {
      const { host, port } = parseHostPort(address);
      return {
        address,
        redis: new BoundedRedis(`${scheme}//${auth}${formatHost(host)}:${port}`, {
          timeoutMs: opts.timeoutMs,
          probeIntervalMs: opts.probeIntervalMs ?? 250,
          log: opts.log,
          name: `${this.#name} sentinel ${address}`,
        }),
      };
    });
    this.#timer = setInterval(() => this.#tick(), opts.probeIntervalMs ?? 250);
    this.#timer.unref();
  }

  get isUp(): boolean {
    return this.#up;
  }

  /** The master's URL without its password, and the Sentinels it came from. */
  get displayUrl(): string {
    const via = `sentinel master "${this.#opts.masterName}" via ${this.#opts.sentinels.join(",")}`;
    if (!this.#masterAddress) return `${via} (no master known yet)`;
    const { host, port } = parseHostPort(this.#masterAddress);
    return `${redactUrl(dataUrl(this.#opts.url, host, port))} (${via})`;
  }

  /** `host:port` of the master in use, if any. */
  get masterAddress(): string | undefined {
    return this.#masterAddress;
  }

  call(command: string, args: string[]): Promise<unknown> {
    const master = this.#master;
    if (!master || this.#closed)
      return Promise.reject(
        new RedisUnavailableError(
          this.#closed
            ? "redis client closed"
            : `no master of "${this.#opts.masterName}" known yet: asking the Sentinels at ${this.#opts.sentinels.join(",")}`,
        ),
      );
    return master.call(command, args).catch((err: unknown) => {
      if (err instanceof Error && NOT_A_MASTER_NOW.test(err.message)) {
        // Still connected, but no longer (or not yet) the master: stop sending here and ask again.
        master.markDown(`${command}: ${err.message.split("\n")[0]}`);
        void this.#resolve();
      }
      throw err;
    });
  }

  /** Asks the Sentinels now and connects to the master they name. */
  async probe(): Promise<void> {
    await this.#resolve();
    await this.#master?.probe();
  }

  close(): void {
    this.#closed = true;
    this.#up = false;
    clearInterval(this.#timer);
    this.#master?.close();
    for (const s of this.#sentinels) s.redis.close();
  }

  #tick(): void {
    if (this.#closed) return;
    const due = this.#up ? (this.#opts.checkIntervalMs ?? 1000) : 0;
    if (performance.now() - this.#lastAsked >= due) void this.#resolve();
  }

  /** One round of questions at a time; callers share it. */
  #resolve(): Promise<void> {
    this.#resolving ??= this.#askSentinels().finally(() => (this.#resolving = undefined));
    return this.#resolving;
  }

  async #askSentinels(): Promise<void> {
    this.#lastAsked = performance.now();
    const problems: string[] = [];
    const count = this.#sentinels.length;
    for (let i = 0; i < count && !this.#closed; i++) {
      const index = (this.#preferred + i) % count;
      const { address, redis } = this.#sentinels[index]!;
      try {
        if (!redis.isUp) await redis.probe();
        const reply = await redis.call("SENTINEL", ["get-master-addr-by-name", this.#opts.masterName]);
        if (!Array.isArray(reply) || reply.length !== 2) {
          problems.push(`${address} does not monitor a master named "${this.#opts.masterName}"`);
          continue;
        }
        this.#preferred = index;
        this.#lastProblem = undefined;
        this.#follow(`${formatHost(String(reply[0]))}:${Number(reply[1])}`);
        return;
      } catch (err) {
        problems.push(`${address}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    const problem = problems.join("; ");
    if (problem && problem !== this.#lastProblem) {
      this.#lastProblem = problem;
      this.#opts.log?.warn({ sentinels: problems }, `${this.#name}: no Sentinel named the master`);
    }
  }

  /** Sends calls to `address` from now on, if it is not the master in use already. */
  #follow(address: string): void {
    if (address === this.#masterAddress || this.#closed) return;
    const previous = this.#masterAddress;
    const old = this.#master;
    const { host, port } = parseHostPort(address);
    const options: BoundedRedisOptions = {
      timeoutMs: this.#opts.timeoutMs,
      probeIntervalMs: this.#opts.probeIntervalMs ?? 250,
      check: isMaster,
      onStateChange: (change) => {
        // Events of a connection already replaced say nothing about the master in use.
        if (this.#master === master) this.#masterChanged(change);
      },
      log: this.#opts.log,
      name: this.#name,
    };
    const master = new BoundedRedis(dataUrl(this.#opts.url, host, port), options);
    this.#master = master;
    this.#masterAddress = address;
    old?.close(); // its pending calls fail (connection closed): the caller answers "unavailable"
    if (this.#up) this.#masterChanged({ up: false, reason: `the Sentinels name ${address} master now` });
    this.#opts.log?.info(
      { master: address, previous: previous ?? null },
      `${this.#name}: following the master the Sentinels name`,
    );
    void master.probe();
  }

  #masterChanged(change: RedisStateChange): void {
    if (change.up) {
      if (this.#up) return;
      this.#up = true;
      this.#opts.onStateChange?.({ up: true, downMs: performance.now() - this.#downSince });
    } else {
      if (this.#up) {
        this.#up = false;
        this.#downSince = performance.now();
        this.#opts.onStateChange?.(change);
      }
      void this.#resolve();
    }
  }
}

/** The probe's check on a master connection: only a server that says it is master is used. */
async function isMaster(redis: BoundedRedis): Promise<void> {
  const hello = (await redis.send("HELLO", ["3"])) as { role?: unknown } | null;
  const role = hello?.role;
  if (role !== "master") throw new Error(`the server is ${String(role ?? "of unknown role")}, not the master`);
}

/** `url` with its host and port replaced. */
export function dataUrl(url: string, host: string, port: number): string {
  const u = new URL(url);
  u.hostname = formatHost(host);
  u.port = String(port);
  return u.toString();
}

/** `host:port` or `[v6]:port`. */
export function parseHostPort(address: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(address.trim());
  const port = Number(match?.[3]);
  if (!match || port < 1 || port > 65535)
    throw new Error(`"${address}" is not host:port (e.g. redis-sentinel:26379, [::1]:26379)`);
  return { host: match[1] ?? match[2]!, port };
}

function formatHost(host: string): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]` : host;
}
