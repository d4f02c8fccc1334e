/**
 * What the rate-limit tests share: a real redis-server on a free port (stoppable, killable and
 * restartable on the same port), a stub upstream, a routes.yaml in a temp dir, and gateway
 * processes started from source. Everything is cleaned up by PID in afterAll → stopAll().
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import {
  type Spawned,
  spawnService,
  testTempDir,
  waitFor,
  waitForHttp,
} from "../../scripts/stack/testing/processes.ts";

export { TestRedis } from "../../scripts/stack/testing/redis.ts";

/** A stub upstream in the test process: 200 "ok" to everything, counting requests per path. */
export async function startStubUpstream(): Promise<{
  address: string;
  received: (path: string) => number;
  stop: () => void;
}> {
  const received = new Map<string, number>();
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: await freePort(),
    fetch(req) {
      const path = new URL(req.url).pathname;
      received.set(path, (received.get(path) ?? 0) + 1);
      return new Response("ok", { headers: { "x-served-by": "stub" } });
    },
  });
  return {
    address: `127.0.0.1:${server.port}`,
    received: (path) => received.get(path) ?? 0,
    stop: () => void server.stop(true),
  };
}

/** Writes `yaml` as routes.yaml in a fresh temp dir (removed by stopAll()) and returns its path. */
export function writeRoutes(yaml: string): string {
  const file = join(testTempDir("ratelimit"), "routes.yaml");
  writeFileSync(file, yaml);
  return file;
}

export interface TestGateway {
  name: string;
  url: string;
  adminUrl: string;
  proc: Spawned;
}

/** Starts one gateway from source and waits until it is ready. */
export async function startGateway(
  name: string,
  routesFile: string,
  env: Record<string, string | undefined> = {},
): Promise<TestGateway> {
  const [port, adminPort] = [await freePort(), await freePort()];
  return startGatewayOn(name, routesFile, port, adminPort, env);
}

export async function startGatewayOn(
  name: string,
  routesFile: string,
  port: number,
  adminPort: number,
  env: Record<string, string | undefined> = {},
): Promise<TestGateway> {
  const proc = spawnService(
    "gateway",
    {
      HOST: "127.0.0.1",
      PORT: String(port),
      ADMIN_PORT: String(adminPort),
      ROUTES_FILE: routesFile,
      INSTANCE_ID: name,
      LOG_LEVEL: "info",
      ...env,
    },
    name,
  );
  const gateway = { name, url: `http://127.0.0.1:${port}`, adminUrl: `http://127.0.0.1:${adminPort}`, proc };
  await waitForHttp(`${gateway.adminUrl}/readyz`, proc);
  return gateway;
}

/** Waits until the process has logged a JSON line with `msg` (and the given fields). */
export function waitForLog(
  p: Spawned,
  msg: string,
  fields: Record<string, unknown> = {},
  timeoutMs = 10_000,
  after = 0,
): Promise<void> {
  return waitFor(
    `${p.name} to log "${msg}"`,
    () =>
      p.lines.slice(after).some((line) => {
        if (!line.includes(msg)) return false;
        try {
          const entry = JSON.parse(line) as Record<string, unknown>;
          return entry.msg === msg && Object.entries(fields).every(([k, v]) => entry[k] === v);
        } catch {
          return false;
        }
      }),
    { proc: p, timeoutMs },
  );
}

/**
 * Sends requests from `concurrency` loops per target until `durationMs` passed, each bounded
 * by a 5 s client timeout, and counts statuses per target and the slowest answer.
 */
export async function hammer(
  targets: { url: string; headers?: Record<string, string> }[],
  opts: { durationMs: number; concurrency: number },
): Promise<{
  statuses: Map<number, number>[];
  total: (status: number) => number;
  maxLatencyMs: number;
  elapsedMs: number;
  /** From the first to the last 200 received: the window in which the budget was spent. */
  admittingMs: number;
  requests: number;
}> {
  const statuses = targets.map(() => new Map<number, number>());
  let maxLatencyMs = 0;
  let requests = 0;
  let firstOk = Infinity;
  let lastOk = -Infinity;
  const start = performance.now();
  const deadline = start + opts.durationMs;
  await Promise.all(
    targets.flatMap((target, t) =>
      Array.from({ length: opts.concurrency }, async () => {
        while (performance.now() < deadline) {
          const sent = performance.now();
          let status: number;
          try {
            const res = await fetch(target.url, { headers: target.headers, signal: AbortSignal.timeout(5000) });
            await res.arrayBuffer();
            status = res.status;
          } catch {
            status = 0; // no answer within 5 s, or a connection error
          }
          const received = performance.now();
          maxLatencyMs = Math.max(maxLatencyMs, received - sent);
          if (status === 200) [firstOk, lastOk] = [Math.min(firstOk, received), Math.max(lastOk, received)];
          requests++;
          statuses[t]!.set(status, (statuses[t]!.get(status) ?? 0) + 1);
        }
      }),
    ),
  );
  const elapsedMs = performance.now() - start;
  const admittingMs = Math.max(0, lastOk - firstOk);
  return {
    statuses,
    total: (status) => statuses.reduce((sum, m) => sum + (m.get(status) ?? 0), 0),
    maxLatencyMs,
    elapsedMs,
    admittingMs,
    requests,
  };
}

/** One answer of a paced run. */
export interface PacedAnswer {
  target: number;
  status: number;
  /** performance.now() when the request was sent and when its answer arrived. */
  sentAt: number;
  receivedAt: number;
}

/**
 * Sends `count` requests at a steady `ratePerSecond`, round-robin over the targets, without
 * waiting for answers (an open loop: the offered load does not sag when answers slow down), at
 * most `maxInFlight` at once. Unlike `hammer`, which loads the machine as hard as it can, this
 * keeps the load known and light, so the times measured here stay close to the times the
 * gateways and Redis decided at. A send the timer made late goes out at once (catch-up).
 */
export async function pace(
  targets: { url: string; headers?: Record<string, string> }[],
  opts: { ratePerSecond: number; count: number; maxInFlight?: number },
): Promise<{ answers: PacedAnswer[]; skipped: number; maxLagMs: number }> {
  const answers: PacedAnswer[] = [];
  const inFlight = new Set<Promise<void>>();
  const maxInFlight = opts.maxInFlight ?? 200;
  const intervalMs = 1000 / opts.ratePerSecond;
  let skipped = 0;
  let maxLagMs = 0;
  const start = performance.now();
  for (let i = 0; i < opts.count; i++) {
    const due = start + i * intervalMs;
    const wait = due - performance.now();
    if (wait > 0) await Bun.sleep(wait);
    maxLagMs = Math.max(maxLagMs, performance.now() - due);
    if (inFlight.size >= maxInFlight) {
      skipped++;
      continue;
    }
    const t = i % targets.length;
    const target = targets[t]!;
    const sentAt = performance.now();
    const request: Promise<void> = fetch(target.url, { headers: target.headers, signal: AbortSignal.timeout(5000) })
      .then(async (res) => {
        await res.arrayBuffer();
        return res.status;
      })
      .catch(() => 0)
      .then((status) => {
        answers.push({ target: t, status, sentAt, receivedAt: performance.now() });
        inFlight.delete(request);
      });
    inFlight.add(request);
  }
  await Promise.all(inFlight);
  return { answers, skipped, maxLagMs };
}
