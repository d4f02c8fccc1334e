/**
 * What the resilience tests share: replicas and gateways as real processes on free ports (each
 * restartable on its own port), a routes.yaml in a temp dir, a client load of mixed
 * `POST /projects/` and `POST /verify/` that records every answer, the gateway's admin view of
 * its endpoints, a TCP proxy that adds latency, and a tiny DNS server whose A records the test
 * changes at run time. Everything is cleaned up by PID in afterAll → stopAll().
 */
import { expect } from "bun:test";
import dgram from "node:dgram";
import { writeFileSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import {
  type Spawned,
  spawnService,
  testTempDir,
  waitFor,
  waitForHttp,
} from "../../scripts/stack/testing/processes.ts";
import type { LocalPki } from "../../scripts/tls/pki.ts";
import type { EndpointView } from "../src/dashboard/snapshot.ts";

export const json = { "content-type": "application/json" };
let tempDir: string | undefined;
/** This test file's temp folder (routes files, SQLite files), created on first use; stopAll() removes it. */
const temp = (): string => (tempDir ??= testTempDir("resilience"));

/** Forgets the temp folder (call after stopAll(), which removes it); a later use creates a new one. */
export function removeTempFiles(): void {
  tempDir = undefined;
}

/** Writes a routes.yaml for one test file and returns its path. */
export function writeRoutes(name: string, yaml: string): string {
  const file = join(temp(), `${name}.yaml`);
  writeFileSync(file, yaml);
  return file;
}

export interface Replica {
  kind: "webapp" | "rpcapp";
  name: string;
  host: string;
  /** The port the gateway talks to (HTTP for webapp, gRPC for rpcapp). */
  port: number;
  /** HTTP port answering /readyz. */
  readyPort: number;
  env: Record<string, string>;
  proc: Spawned;
}

/** The local CA and certificates (scripts/tls/pki.ts) for replicas that speak mutual TLS. */
export type ReplicaTls = Pick<LocalPki, "caFile" | "certFile" | "keyFile">;

/**
 * Starts one replica (webapp: its own SQLite file, so a frozen replica cannot hold the others'
 * write lock). With `tls`, its API port speaks mutual TLS only (its own certificate, clients
 * signed by the CA) and /readyz is on its plain METRICS_PORT.
 */
export async function startReplica(
  kind: "webapp" | "rpcapp",
  name: string,
  host = "127.0.0.1",
  port?: number,
  tls?: ReplicaTls,
): Promise<Replica> {
  const mainPort = port ?? (await freePort());
  const readyPort = kind === "webapp" && !tls ? mainPort : await freePort();
  const tlsEnv: Record<string, string> = tls
    ? {
        TLS_CERT_FILE: tls.certFile(kind),
        TLS_KEY_FILE: tls.keyFile(kind),
        TLS_CLIENT_CA_FILE: tls.caFile,
        ...(kind === "webapp" ? { METRICS_PORT: String(readyPort) } : {}),
      }
    : {};
  const env: Record<string, string> =
    kind === "webapp"
      ? {
          HOST: host,
          PORT: String(mainPort),
          INSTANCE_ID: name,
          DB_PATH: join(temp(), `${name}.sqlite`),
          LOG_LEVEL: "warn",
          ...tlsEnv,
        }
      : {
          HOST: host,
          PORT: String(mainPort),
          METRICS_PORT: String(readyPort),
          INSTANCE_ID: name,
          LOG_LEVEL: "warn",
          ...tlsEnv,
        };
  const replica: Replica = { kind, name, host, port: mainPort, readyPort, env, proc: spawnService(kind, env, name) };
  await waitForReady(replica);
  return replica;
}

/** Starts webapp-1..3 and rpcapp-1..3, all at once (with `tls`, speaking mutual TLS). */
export async function startReplicaSets(tls?: ReplicaTls): Promise<{ webapps: Replica[]; rpcapps: Replica[] }> {
  const [webapps, rpcapps] = await Promise.all([
    Promise.all([1, 2, 3].map((i) => startReplica("webapp", `webapp-${i}`, "127.0.0.1", undefined, tls))),
    Promise.all([1, 2, 3].map((i) => startReplica("rpcapp", `rpcapp-${i}`, "127.0.0.1", undefined, tls))),
  ]);
  return { webapps, rpcapps };
}

export function waitForReady(replica: Replica, timeoutMs = 15_000): Promise<void> {
  return waitForHttp(`http://${replica.host}:${replica.readyPort}/readyz`, replica.proc, timeoutMs);
}

/** Starts the same replica again on its port (after a kill). Returns once spawned, not ready. */
export function respawn(replica: Replica): void {
  replica.proc = spawnService(replica.kind, replica.env, replica.name);
}

export function address(replica: Replica): string {
  return `${replica.host}:${replica.port}`;
}

export interface Gateway {
  url: string;
  adminUrl: string;
  proc: Spawned;
}

/** Starts a gateway and waits until its admin port says it is ready. */
export async function startGateway(
  name: string,
  routesFile: string,
  env: Record<string, string> = {},
): Promise<Gateway> {
  const gateway = await spawnGateway(name, routesFile, env);
  await waitForHttp(`${gateway.adminUrl}/readyz`, gateway.proc);
  return gateway;
}

/** Starts a gateway on free ports and returns at once (a test that acts while it starts). */
export async function spawnGateway(
  name: string,
  routesFile: string,
  env: Record<string, string> = {},
): Promise<Gateway> {
  const [port, adminPort] = [await freePort(), await freePort()];
  const proc = spawnService(
    "gateway",
    {
      HOST: "127.0.0.1",
      PORT: String(port),
      ADMIN_PORT: String(adminPort),
      ROUTES_FILE: routesFile,
      INSTANCE_ID: name,
      LOG_LEVEL: "warn",
      ...env,
    },
    name,
  );
  return { url: `http://127.0.0.1:${port}`, adminUrl: `http://127.0.0.1:${adminPort}`, proc };
}

/** One upstream as GET /upstreams on the admin port shows it (admin/app.ts). */
export interface UpstreamView {
  name: string;
  retries: { attempted: number; budgetExhausted: number };
  endpoints: EndpointView[];
}

export async function upstreamView(gateway: Gateway, name: string): Promise<UpstreamView> {
  const all = (await (await fetch(`${gateway.adminUrl}/upstreams`)).json()) as UpstreamView[];
  const found = all.find((u) => u.name === name);
  if (!found) throw new Error(`no upstream ${name} in ${JSON.stringify(all)}`);
  return found;
}

export async function endpointView(
  gateway: Gateway,
  upstream: string,
  addr: string,
): Promise<EndpointView | undefined> {
  return (await upstreamView(gateway, upstream)).endpoints.find((e) => e.address === addr);
}

export interface Answer {
  route: "projects" | "verify";
  /** Epoch ms when sent, and how long the answer took. */
  at: number;
  ms: number;
  /** HTTP status, or 0 when the client got no answer at all. */
  status: number;
  servedBy: string | null;
}

const BODIES = { projects: '{"title":"An awesome project"}', verify: '{"id":121,"token":"a$$"}' } as const;
const OK_STATUS = { projects: 201, verify: 200 } as const;

export function isOk(a: Answer): boolean {
  return a.status === OK_STATUS[a.route];
}

/**
 * Closed-loop client load: `concurrency` workers, each sending the routes in turn as fast as
 * answers come. Every answer is recorded; the client gives up on one after `clientTimeoutMs`
 * (recorded as status 0), so a hang shows as a failure instead of stalling the test.
 */
export class Load {
  readonly answers: Answer[] = [];
  #running = false;
  #workers: Promise<void>[] = [];

  constructor(
    private readonly gatewayUrl: string,
    private readonly routes: readonly ("projects" | "verify")[] = ["projects", "verify"],
    private readonly concurrency = 12,
    private readonly clientTimeoutMs = 5_000,
  ) {}

  start(): this {
    this.#running = true;
    this.#workers = Array.from({ length: this.concurrency }, (_, i) => this.#worker(i));
    return this;
  }

  async stop(): Promise<Answer[]> {
    this.#running = false;
    await Promise.all(this.#workers);
    return this.answers;
  }

  async #worker(offset: number): Promise<void> {
    for (let i = offset; this.#running; i++) {
      const route = this.routes[i % this.routes.length]!;
      const at = Date.now();
      const started = performance.now();
      let status = 0;
      let servedBy: string | null = null;
      try {
        const res = await fetch(`${this.gatewayUrl}/${route}/`, {
          method: "POST",
          headers: json,
          body: BODIES[route],
          signal: AbortSignal.timeout(this.clientTimeoutMs),
        });
        await res.arrayBuffer();
        status = res.status;
        servedBy = res.headers.get("x-served-by");
      } catch {
        status = 0;
      }
      this.answers.push({ route, at, ms: performance.now() - started, status, servedBy });
    }
  }
}

export interface LoadSummary {
  total: number;
  failed: number;
  failedPercent: number;
  byStatus: Record<string, number>;
  maxMs: number;
}

export function summarize(answers: readonly Answer[]): LoadSummary {
  const byStatus: Record<string, number> = {};
  let failed = 0;
  let maxMs = 0;
  for (const a of answers) {
    const key = `${a.route} ${a.status}`;
    byStatus[key] = (byStatus[key] ?? 0) + 1;
    if (!isOk(a)) failed++;
    maxMs = Math.max(maxMs, a.ms);
  }
  return {
    total: answers.length,
    failed,
    failedPercent: answers.length ? (100 * failed) / answers.length : 0,
    byStatus,
    maxMs: Math.round(maxMs),
  };
}

/** Share of answers served by each replica (x-served-by), among successful ones. */
export function shares(answers: readonly Answer[]): Record<string, number> {
  const counts: Record<string, number> = {};
  let n = 0;
  for (const a of answers) {
    if (!isOk(a) || !a.servedBy) continue;
    counts[a.servedBy] = (counts[a.servedBy] ?? 0) + 1;
    n++;
  }
  return Object.fromEntries(Object.entries(counts).map(([k, v]) => [k, Math.round((1000 * v) / n) / 10]));
}

/** Polls until `check` holds; returns the epoch ms at which it was first seen true. */
export async function timeUntil(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 10_000,
  intervalMs = 20,
): Promise<number> {
  let seenAt = 0;
  await waitFor(
    what,
    async () => {
      if (await check()) {
        seenAt = Date.now();
        return true;
      }
      return false;
    },
    { timeoutMs, intervalMs },
  );
  return seenAt;
}

/** A TCP proxy that holds every byte coming back from the target for `delayMs` (an added network latency). */
export class DelayProxy {
  delayMs = 0;
  readonly #sockets = new Set<Socket>();

  private constructor(
    readonly server: Server,
    readonly port: number,
  ) {}

  static async start(targetHost: string, targetPort: number, delayMs: number): Promise<DelayProxy> {
    const port = await freePort();
    const server = createServer();
    const proxy = new DelayProxy(server, port);
    proxy.delayMs = delayMs;
    server.on("connection", (client) => {
      const upstream = createConnection({ host: targetHost, port: targetPort });
      proxy.#sockets.add(client).add(upstream);
      client.on("data", (chunk) => upstream.write(chunk));
      // Equal delays keep the order: timers of the same duration fire in the order they were set.
      upstream.on("data", (chunk) =>
        proxy.delayMs > 0
          ? setTimeout(() => client.writable && client.write(chunk), proxy.delayMs)
          : client.write(chunk),
      );
      const close = () => {
        client.destroy();
        upstream.destroy();
        proxy.#sockets.delete(client);
        proxy.#sockets.delete(upstream);
      };
      client.on("close", close).on("error", close);
      upstream.on("close", close).on("error", close);
    });
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    return proxy;
  }

  close(): void {
    for (const s of this.#sockets) s.destroy();
    this.server.close();
  }
}

/**
 * A DNS server on UDP for the tests: answers A queries from `records` and AAAA queries from
 * `records6` (TTL 0, so nothing caches them), NXDOMAIN for names it knows in neither, and no
 * answers (NODATA) for a type a known name has none of. `silent` names get no answer at all.
 */
export class TestDnsServer {
  readonly records = new Map<string, string[]>();
  readonly records6 = new Map<string, string[]>();
  readonly silent = new Set<string>();
  queries = 0;

  private constructor(
    private readonly socket: dgram.Socket,
    readonly port: number,
  ) {}

  static async start(): Promise<TestDnsServer> {
    const socket = dgram.createSocket("udp4");
    for (let attempt = 0; ; attempt++) {
      const port = await freePort();
      try {
        await new Promise<void>((resolve, reject) => {
          socket.once("error", reject);
          socket.bind(port, "127.0.0.1", () => {
            socket.off("error", reject);
            resolve();
          });
        });
        const server = new TestDnsServer(socket, port);
        socket.on("message", (msg, from) => server.#answer(msg, from));
        return server;
      } catch (err) {
        if (attempt >= 5) throw err;
      }
    }
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  close(): void {
    this.socket.close();
  }

  #answer(query: Buffer, from: dgram.RemoteInfo): void {
    this.queries++;
    const labels: string[] = [];
    let offset = 12;
    while (offset < query.length && query[offset] !== 0) {
      const length = query[offset]!;
      labels.push(query.subarray(offset + 1, offset + 1 + length).toString("latin1"));
      offset += length + 1;
    }
    offset += 1;
    const type = query.readUInt16BE(offset);
    offset += 4;
    const name = labels.join(".").toLowerCase();
    if (this.silent.has(name)) return;
    const known = this.records.has(name) || this.records6.has(name);
    const addresses = type === 1 ? (this.records.get(name) ?? []) : type === 28 ? (this.records6.get(name) ?? []) : [];
    const header = Buffer.alloc(12);
    header.writeUInt16BE(query.readUInt16BE(0), 0); // id
    header.writeUInt16BE(0x8180 | (known ? 0 : 3), 2); // response, recursion available, NOERROR | NXDOMAIN
    header.writeUInt16BE(1, 4);
    header.writeUInt16BE(addresses.length, 6);
    const answers = addresses.map((ip) => {
      const bytes = type === 1 ? Buffer.from(ip.split(".").map(Number)) : ipv6Bytes(ip);
      const rr = Buffer.alloc(12 + bytes.length);
      rr.writeUInt16BE(0xc00c, 0); // the name: a pointer to the question's
      rr.writeUInt16BE(type, 2); // A or AAAA
      rr.writeUInt16BE(1, 4); // IN
      rr.writeUInt32BE(0, 6); // TTL 0
      rr.writeUInt16BE(bytes.length, 10);
      bytes.copy(rr, 12);
      return rr;
    });
    this.socket.send(Buffer.concat([header, query.subarray(12, offset), ...answers]), from.port, from.address);
  }
}

/** An IPv6 address's 16 bytes (`::` expanded). */
function ipv6Bytes(ip: string): Buffer {
  const [head = "", tail = ""] = ip.split("::");
  const left = head ? head.split(":") : [];
  const right = ip.includes("::") && tail ? tail.split(":") : [];
  const groups = [...left, ...Array(8 - left.length - right.length).fill("0"), ...right];
  const bytes = Buffer.alloc(16);
  for (const [i, g] of groups.entries()) bytes.writeUInt16BE(Number.parseInt(g, 16), i * 2);
  return bytes;
}

export const sleep = (ms: number) => Bun.sleep(ms);

/** The figures of one "kill a replica under load, then restart it" run. */
export interface KillFigures {
  requests: number;
  failed: number;
  failedPercent: number;
  /** Failed requests sent after the replica had died (only ones in flight at the kill may fail). */
  failedSentAfterDeath: number;
  /**
   * Requests to the victim's route (any replica) open at some instant between the kill and the
   * death: sent before the death, answered after the kill. The only ones that may fail.
   */
  inFlightAtKill: number;
  /** Failed requests that were not among those: must be none. */
  failedOutsideKill: number;
  /** Kill → the last try the gateway sent to the dead replica (then it got none until readmitted). */
  trafficStoppedAfterMs: number;
  /**
   * The gateway's last try to the dead replica, before (≥ 0) or after (< 0) it took the replica out
   * of its set: both times read off the gateway's one clock, in the view that first showed it out.
   */
  lastTryBeforeOutMs: number;
  /** Kill → the gateway takes the endpoint out of its set (ejection, breaker or health checks). */
  leftSetAfterMs: number;
  /** Tries the gateway still sent to the dead replica after the kill (each one retried or failed). */
  triesToDeadReplica: number;
  trafficAgainAfterRestartMs: number;
  trafficAgainAfterReadyMs: number;
  retries: { attempted: number; budgetExhausted: number };
  slowestAnswerMs: number;
  byStatus: Record<string, number>;
}

/**
 * The requests that fail when a replica is killed are the POSTs it was serving at that instant
 * (they cannot be replayed safely): about concurrency / 2 routes / 3 replicas of them. The bar is
 * that count (see expectKillSurvived); the failure rate over at least MIN_SAMPLE requests, with 8
 * clients, is printed to compare with docs/gateway.md.
 */
const MIN_SAMPLE = 5_000;
const KILL_CONCURRENCY = 8;
/** The load's route to each upstream of routesYaml. */
const ROUTE_TO: Record<string, Answer["route"]> = { webapp: "projects", rpcapp: "verify" };

export async function killAndRestart(
  gateway: Gateway,
  upstream: string,
  victim: Replica,
  settleMs = 1_500,
): Promise<KillFigures> {
  const load = new Load(gateway.url, ["projects", "verify"], KILL_CONCURRENCY).start();
  await sleep(settleMs);
  const before = (await endpointView(gateway, upstream, address(victim)))!;
  const retriesBefore = (await upstreamView(gateway, upstream)).retries;
  const killedAt = Date.now();
  victim.proc.proc.kill("SIGKILL");
  await victim.proc.exited;
  const diedAt = Date.now();
  let out: EndpointView | undefined;
  const leftAt = await timeUntil(
    `${victim.name} to leave the set`,
    async () => {
      const view = (await endpointView(gateway, upstream, address(victim)))!;
      if (!view.available) out = view;
      return !view.available;
    },
    5_000,
    10,
  );
  const lastTryAt = out!.lastRequestAt ?? killedAt;
  await sleep(1_500);
  const dead = (await endpointView(gateway, upstream, address(victim)))!;
  const restartedAt = Date.now();
  respawn(victim);
  await waitForReady(victim);
  const readyAt = Date.now();
  const servedAgainAt = await timeUntil(
    `${victim.name} to get traffic again`,
    () => load.answers.some((a) => a.at >= restartedAt && a.servedBy === victim.name && isOk(a)),
    10_000,
  );
  // A failure rate needs a sample: keep the load on until MIN_SAMPLE answers (at most 8 s more).
  const until = Date.now() + 8_000;
  while (load.answers.length < MIN_SAMPLE && Date.now() < until) await sleep(100);
  const answers = await load.stop();
  const summary = summarize(answers);
  const retries = (await upstreamView(gateway, upstream)).retries;
  const route = ROUTE_TO[upstream];
  if (!route) throw new Error(`no load route to upstream ${upstream}`);
  // Date.now() is in whole ms, cut down: a request sent in diedAt's millisecond may have left before
  // the death was seen, so it counts as in flight, not as sent after; and one answered in the
  // kill's millisecond may read up to 1 ms early (its `at` cut down, its `ms` exact).
  const inFlightAtKill = (a: Answer) => a.route === route && a.at <= diedAt && a.at + a.ms + 1 > killedAt;
  return {
    requests: summary.total,
    failed: summary.failed,
    failedPercent: Number(summary.failedPercent.toFixed(3)),
    failedSentAfterDeath: answers.filter((a) => a.at > diedAt && !isOk(a)).length,
    inFlightAtKill: answers.filter(inFlightAtKill).length,
    failedOutsideKill: answers.filter((a) => !isOk(a) && !inFlightAtKill(a)).length,
    trafficStoppedAfterMs: Math.max(0, lastTryAt - killedAt),
    lastTryBeforeOutMs: out!.outSince! - (out!.lastRequestAt ?? 0),
    leftSetAfterMs: leftAt - killedAt,
    triesToDeadReplica: dead.requests - before.requests,
    trafficAgainAfterRestartMs: servedAgainAt - restartedAt,
    trafficAgainAfterReadyMs: servedAgainAt - readyAt,
    retries: {
      attempted: retries.attempted - retriesBefore.attempted,
      budgetExhausted: retries.budgetExhausted - retriesBefore.budgetExhausted,
    },
    slowestAnswerMs: summary.maxMs,
    byStatus: summary.byStatus,
  };
}

/**
 * What a killed replica (HTTP or gRPC) must cost at most; the same bar for both upstreams. The
 * time bounds derive from the settings both files' routesYaml use: health checks every 500 ms
 * with a 250 ms timeout (unhealthyThreshold 2 and healthyThreshold 1 by default), and the route
 * timeout passed in.
 */
export function expectKillSurvived(figures: KillFigures, routeTimeoutMs: number): void {
  // Only requests in flight on the replica when it died may fail: a POST cannot be replayed
  // safely. So the bar is a count, not a rate: none sent after the death, none that was not open
  // between the kill and the death, and no more than were open then on this route (one per
  // client at a time, KILL_CONCURRENCY of them; about a third on the victim). A rate
  // (docs/gateway.md: ≤ 0.1%) would move with how many requests a busy machine got through in
  // the run, whatever the gateway did; it is printed.
  expect(figures.failedSentAfterDeath).toBe(0);
  expect(figures.failedOutsideKill).toBe(0);
  expect(figures.failed).toBeLessThanOrEqual(figures.inFlightAtKill);
  // No try reaches the dead replica once it is out of the set. Judged on the gateway's clock: the
  // test's (Date.now() when a poll saw it out) and the gateway's (performance.now() mapped to epoch
  // at its start) differ by a millisecond or more, and both figures are a few ms.
  expect(figures.lastTryBeforeOutMs).toBeGreaterThanOrEqual(0);
  // Out of the set by ejection at the first refused connection, or at the latest by 2 failed
  // health checks: 2 × 500 + 250 = 1250 ms; 750 ms of margin for a busy machine.
  expect(figures.leftSetAfterMs).toBeLessThan(2_000);
  // Once the restarted replica is ready, a health check readmits it and the load reaches it at
  // once: the next check, or the one after if a process just started misses the first's 250 ms
  // timeout, 2 × 500 + 250 = 1250 ms; 1250 ms of margin. The time the process takes to start
  // (trafficAgainAfterRestartMs) is printed, not judged: that is Bun's, not the gateway's.
  expect(figures.trafficAgainAfterReadyMs).toBeLessThan(2_500);
  // The route timeout bounds every answer; 500 ms of margin for a busy machine.
  expect(figures.slowestAnswerMs).toBeLessThan(routeTimeoutMs + 500);
}

/** The figures of one "SIGSTOP a replica under load, SIGCONT it later" run. */
export interface FreezeFigures {
  requests: number;
  failed: number;
  /** Answers 504 (the route timeout expired) and answers that never came (client gave up: must be 0). */
  timeouts: number;
  unanswered: number;
  /** Of the 504s, those whose request was sent after the endpoint was out: at most one per breaker window. */
  timeoutsAfterOut: number;
  outWindowMs: number;
  outAfterFreezeMs: number;
  readmittedAfterResumeMs: number;
  servedAgainAfterResumeMs: number;
  slowestAnswerMs: number;
  retries: { attempted: number; budgetExhausted: number };
  byStatus: Record<string, number>;
}

export async function freezeAndResume(
  gateway: Gateway,
  upstream: string,
  victim: Replica,
  frozenMs = 2_500,
): Promise<FreezeFigures> {
  const load = new Load(gateway.url).start();
  await sleep(1_000);
  const retriesBefore = (await upstreamView(gateway, upstream)).retries;
  const frozenAt = Date.now();
  victim.proc.proc.kill("SIGSTOP");
  const outAt = await timeUntil(
    `frozen ${victim.name} to leave the set`,
    async () => !(await endpointView(gateway, upstream, address(victim)))!.available,
    5_000,
  );
  await sleep(frozenMs);
  const resumedAt = Date.now();
  victim.proc.proc.kill("SIGCONT");
  const readmittedAt = await timeUntil(
    `resumed ${victim.name} to be readmitted`,
    async () => (await endpointView(gateway, upstream, address(victim)))!.available,
    10_000,
  );
  const servedAgainAt = await timeUntil(
    `resumed ${victim.name} to serve again`,
    () => load.answers.some((a) => a.at >= resumedAt && a.servedBy === victim.name && isOk(a)),
    10_000,
  );
  const answers = await load.stop();
  const summary = summarize(answers);
  const retries = (await upstreamView(gateway, upstream)).retries;
  const timeouts = answers.filter((a) => a.status === 504);
  return {
    requests: summary.total,
    failed: summary.failed,
    timeouts: timeouts.length,
    unanswered: answers.filter((a) => a.status === 0).length,
    timeoutsAfterOut: timeouts.filter((a) => a.at > outAt).length,
    outWindowMs: resumedAt - outAt,
    outAfterFreezeMs: outAt - frozenAt,
    readmittedAfterResumeMs: readmittedAt - resumedAt,
    servedAgainAfterResumeMs: servedAgainAt - resumedAt,
    slowestAnswerMs: summary.maxMs,
    retries: {
      attempted: retries.attempted - retriesBefore.attempted,
      budgetExhausted: retries.budgetExhausted - retriesBefore.budgetExhausted,
    },
    byStatus: summary.byStatus,
  };
}

/** Waits until every endpoint of the named upstreams is available and healthy (between scenarios). */
export async function allAvailable(
  gateway: Gateway,
  upstreams: readonly string[] = ["webapp", "rpcapp"],
): Promise<void> {
  await timeUntil("every endpoint available", async () => {
    const views = await Promise.all(upstreams.map((u) => upstreamView(gateway, u)));
    return views.every((v) => v.endpoints.every((e) => e.available && e.health === "healthy"));
  });
}

/** Shortened through routes.yaml so each scenario runs in seconds; the behaviour is the defaults'. */
export const RESILIENCE_TIMINGS = { routeTimeoutMs: 1_000, halfOpenAfterMs: 500 } as const;

/**
 * The routes the kill and freeze scenarios run on: route timeout 1 s, health checks every 500 ms.
 * With `tls`, the gateway speaks mutual TLS to both upstreams (HTTPS, gRPC over TLS), presenting
 * `gateway-client` and checking the replicas' certificates for `localhost`.
 */
export function resilienceRoutes(webapp: string, rpcapp: string, tls?: ReplicaTls): string {
  const { routeTimeoutMs, halfOpenAfterMs } = RESILIENCE_TIMINGS;
  const tlsBlock = tls
    ? `\n    tls: { ca: "${tls.caFile}", cert: "${tls.certFile("gateway-client")}", key: "${tls.keyFile("gateway-client")}", serverName: localhost }`
    : "";
  return `upstreams:
  webapp:
    protocol: http
    endpoints: "${webapp}"
    healthCheck: { intervalMs: 500, timeoutMs: 250 }
    outlierDetection: { baseEjectionMs: 1000 }
    circuitBreaker: { halfOpenAfterMs: ${halfOpenAfterMs}, maxHalfOpenAfterMs: 2000 }${tlsBlock}
  rpcapp:
    protocol: grpc
    endpoints: "${rpcapp}"
    proto: proto/userverify.proto
    healthCheck: { intervalMs: 500, timeoutMs: 250 }
    outlierDetection: { baseEjectionMs: 1000 }
    circuitBreaker: { halfOpenAfterMs: ${halfOpenAfterMs}, maxHalfOpenAfterMs: 2000 }${tlsBlock}
routes:
  - { name: projects, path: /projects, upstream: webapp, timeoutMs: ${routeTimeoutMs} }
  - { name: verify, path: /verify, match: exact, upstream: rpcapp, timeoutMs: ${routeTimeoutMs}, grpc: { method: userverify.UserVerify/VerifyUser, idempotent: true } }
`;
}

/** What a frozen webapp replica (SIGSTOP for 2.5 s, then SIGCONT) may cost, on resilienceRoutes' timings. */
export function expectWebappFreezeSurvived(figures: FreezeFigures): void {
  const { routeTimeoutMs, halfOpenAfterMs } = RESILIENCE_TIMINGS;
  expect(figures.unanswered).toBe(0);
  // The route timeout bounds every answer: the freeze (2.5 s) would otherwise; its double leaves a
  // busy machine room and stays below the freeze.
  expect(figures.slowestAnswerMs).toBeLessThan(routeTimeoutMs * 2);
  // Requests already on the frozen replica time out (POST is not retried) at the route timeout,
  // and those failures eject it (health checks alone would take 2 × 500 + 250 ms): out while it
  // is still frozen (2.5 s), with what margin a busy machine needs...
  expect(figures.outAfterFreezeMs).toBeLessThan(2_400);
  // ...and from then on at most one probe per breaker window may time out.
  expect(figures.timeoutsAfterOut).toBeLessThanOrEqual(Math.ceil(figures.outWindowMs / halfOpenAfterMs));
  // Resumed, the next health check (every 500 ms, 250 ms timeout) readmits it; 2250 ms of margin
  // (a replica that was stopped for 2.5 s has timers and sockets to catch up on first).
  expect(figures.readmittedAfterResumeMs).toBeLessThan(3_000);
}
