/**
 * A throwaway local redis-server for `make dev`: the gateways' shared rate-limit budget. Nothing
 * is written to disk (`--save "" --appendonly no`): budgets are short-lived and a restart only
 * refills them. Started only when `redis-server` is installed; otherwise the gateways keep their
 * budgets in memory, one per process.
 */
import type { Subprocess } from "bun";
import { connect } from "node:net";
import { lines } from "../../lib/lines.ts";
import { redactUrl } from "../../lib/redis.ts";

export interface LocalRedis {
  url: string;
  port: number;
  proc: Subprocess<"ignore", "pipe", "pipe">;
  stop(): Promise<void>;
}

/** The command line of a memory-only redis-server on `host:port` (tests use it too). */
export function redisServerArgv(port: number, host = "127.0.0.1"): string[] {
  return [
    "redis-server",
    "--port",
    String(port),
    "--bind",
    host,
    "--save",
    "",
    "--appendonly",
    "no",
    "--loglevel",
    "warning",
  ];
}

/** Where the stack's rate limits are kept, for `make dev`'s banner: the URL without its password. */
export function describeRateLimits(redisUrl: string | undefined, startedLocally: boolean): string {
  return redisUrl
    ? `${redactUrl(redisUrl)}${startedLocally ? " (a local redis-server started for this stack)" : ""}: one budget shared by the gateways`
    : "per gateway process (in memory): redis-server is not installed, so each gateway admits the full limit (apt-get install redis-server, or set REDIS_URL)";
}

export function isRedisInstalled(): boolean {
  return Bun.which("redis-server") !== null;
}

/** Whether something accepts TCP connections on host:port. */
export function isListening(port: number, host = "127.0.0.1", timeoutMs = 300): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ port, host });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/**
 * Starts redis-server on `port` and waits until it accepts connections. Its own output (a start-up
 * banner and kernel-tuning warnings) is not shown: the gateways log what matters, Redis going away
 * and coming back. Its last lines are kept, though, for the message when it does not come up
 * (why it exited: a bad option, a bind error). Fails with a message naming the port when it is
 * taken or redis does not come up. `signal` aborts the start (the stack is stopping): the
 * redis-server is killed and the promise rejects.
 */
export async function startLocalRedis(opts: {
  port: number;
  host?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}): Promise<LocalRedis> {
  const host = opts.host ?? "127.0.0.1";
  if (await isListening(opts.port, host)) {
    throw new Error(
      `port ${opts.port} is already in use (another redis?); set REDIS_PORT to another port, or REDIS_URL to use a running Redis`,
    );
  }
  opts.signal?.throwIfAborted();
  const proc = Bun.spawn(redisServerArgv(opts.port, host), { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  const tail: string[] = [];
  const keep = async (stream: ReadableStream<Uint8Array>) => {
    for await (const line of lines(stream)) {
      tail.push(line);
      if (tail.length > 10) tail.shift();
    }
  };
  const drained = Promise.all([keep(proc.stdout), keep(proc.stderr)]);
  const lastLines = async () => {
    // What it wrote before exiting may still be in the pipes: read it first (briefly).
    await Promise.race([drained, Bun.sleep(500)]);
    return tail.length > 0 ? `\nredis-server's last lines:\n${tail.join("\n")}` : "";
  };
  const deadline = Date.now() + (opts.timeoutMs ?? 5000);
  while (!(await isListening(opts.port, host))) {
    if (opts.signal?.aborted) {
      proc.kill("SIGKILL");
      await proc.exited;
      throw new Error(`redis-server on ${host}:${opts.port} was stopped while starting: the stack is stopping`);
    }
    if (proc.exitCode !== null)
      throw new Error(
        `redis-server exited with code ${proc.exitCode} before listening on ${host}:${opts.port}${await lastLines()}`,
      );
    if (Date.now() > deadline) {
      proc.kill("SIGKILL");
      throw new Error(
        `redis-server did not listen on ${host}:${opts.port} within ${opts.timeoutMs ?? 5000} ms${await lastLines()}`,
      );
    }
    await Bun.sleep(25);
  }
  return {
    url: `redis://${host}:${opts.port}`,
    port: opts.port,
    proc,
    async stop() {
      if (proc.exitCode !== null) return;
      proc.kill("SIGTERM");
      const timer = setTimeout(() => proc.kill("SIGKILL"), 3000);
      await proc.exited;
      clearTimeout(timer);
    },
  };
}
