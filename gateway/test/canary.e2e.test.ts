/**
 * Canary releases through a real gateway process, on loopback, bounded in time: three stable
 * replicas (v1) and one canary (v2) behind it, a steady client load, and the canary started
 * through the admin API. Proves the acceptance at the gateway:
 *
 * 1. a good v2 is promoted through every step to 100 % with 0 failed requests (HTTP and gRPC);
 * 2. a v2 that answers 5 % of requests with 500, or adds 50 ms, is stopped within its first step
 *    (weight 0), the stable version serving on; the failures users saw are counted and printed;
 * 3. each step's measured share is within ±3 points of its weight.
 *
 * The HTTP replicas are small Bun servers that report their version as webapp does
 * (`x-service-version`, on answers and on /healthz); the gRPC ones are real rpcapp processes.
 */
import { afterAll, afterEach, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import {
  type Spawned,
  spawnService,
  stopAll,
  stopProcess,
  waitFor,
  waitForHttp,
} from "../../scripts/stack/testing/processes.ts";
import { removeTempFiles, writeRoutes } from "./resilience-harness.ts";

const POLICY = "{ steps: [5, 25, 50, 100], minRequests: 40, minStepMs: 600 }";
const CONCURRENCY = 12;
const json = { "content-type": "application/json" };

type Mode = "good" | "errors" | "latency";

/** A replica answering POST /projects with 201 (or as `mode` says), and /healthz, with its version. */
function replica(version: string, mode: Mode = "good"): Server<undefined> {
  let answered = 0;
  return Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      const headers = { "x-service-version": version, "x-served-by": `${version}-${this.port}` };
      if (new URL(req.url).pathname === "/healthz") return Response.json({ status: "ok" }, { headers });
      await req.arrayBuffer();
      if (mode === "errors" && ++answered % 20 === 0)
        return Response.json({ error: "injected" }, { status: 500, headers });
      if (mode === "latency") await Bun.sleep(50);
      return Response.json({ id: 1 }, { status: 201, headers });
    },
  });
}

interface CanaryView {
  state: string;
  weight: number;
  version: string | null;
  history: { step: number; weight: number; measuredShare: number; verdict: string; reason: string }[];
}

interface Gateway {
  url: string;
  admin: string;
  proc: Spawned;
}

async function startGateway(protocol: "http" | "grpc", endpoints: string[]): Promise<Gateway> {
  const [port, adminPort] = [await freePort(), await freePort()];
  const upstream =
    protocol === "http"
      ? `  app: { protocol: http, endpoints: "${endpoints.join(",")}", healthCheck: { intervalMs: 500, timeoutMs: 400 }, canary: ${POLICY} }`
      : `  app: { protocol: grpc, endpoints: "${endpoints.join(",")}", proto: proto/userverify.proto, healthCheck: { intervalMs: 500, timeoutMs: 400 }, canary: ${POLICY} }`;
  const route =
    protocol === "http"
      ? "  - { name: app, path: /projects, upstream: app }"
      : "  - { name: app, path: /verify, match: exact, upstream: app, grpc: { method: userverify.UserVerify/VerifyUser } }";
  const routes = writeRoutes(`canary-${protocol}-${port}`, `upstreams:\n${upstream}\nroutes:\n${route}\n`);
  const proc = spawnService(
    "gateway",
    { HOST: "127.0.0.1", PORT: String(port), ADMIN_PORT: String(adminPort), ROUTES_FILE: routes, LOG_LEVEL: "info" },
    `gateway-canary-${protocol}`,
  );
  const admin = `http://127.0.0.1:${adminPort}`;
  await waitForHttp(`${admin}/readyz`, proc);
  return { url: `http://127.0.0.1:${port}`, admin, proc };
}

const canaryOf = async (gw: Gateway): Promise<CanaryView> =>
  (await (await fetch(`${gw.admin}/canary/app`)).json()) as CanaryView;

/** Waits until every endpoint's version is known to the gateway (learned from its health checks). */
async function versionsKnown(gw: Gateway, n: number): Promise<void> {
  await waitFor(
    "every endpoint's version",
    async () => {
      const [u] = (await (await fetch(`${gw.admin}/upstreams`)).json()) as {
        endpoints: { version: string | null }[];
      }[];
      return u!.endpoints.filter((e) => e.version).length === n;
    },
    { timeoutMs: 10_000 },
  );
}

/**
 * Requests from CONCURRENCY clients until `done`; every answer's status and version kept, with when
 * its request was sent (`at`): what the gateway decided for it came after that, whenever the
 * answer was read.
 */
function load(gw: Gateway, path: string, body: string) {
  const answers: { status: number; version: string | null; at: number }[] = [];
  let running = true;
  const clients = Array.from({ length: CONCURRENCY }, async () => {
    while (running) {
      const at = Date.now();
      try {
        const res = await fetch(`${gw.url}${path}`, { method: "POST", headers: json, body });
        await res.arrayBuffer();
        answers.push({ status: res.status, version: res.headers.get("x-service-version"), at });
      } catch {
        answers.push({ status: 0, version: null, at });
      }
    }
  });
  return {
    answers,
    stop: async () => {
      running = false;
      await Promise.all(clients);
    },
  };
}

async function runCanary(gw: Gateway, path: string, body: string, until: (c: CanaryView) => boolean) {
  const traffic = load(gw, path, body);
  await Bun.sleep(300);
  const started = await fetch(`${gw.admin}/canary/app/start`, {
    method: "POST",
    headers: json,
    body: JSON.stringify({ version: "v2" }),
  });
  expect(started.status).toBe(200);
  let view = (await started.json()) as CanaryView;
  await waitFor(
    "the canary to finish",
    async () => {
      view = await canaryOf(gw);
      return until(view);
    },
    { timeoutMs: 30_000, intervalMs: 100 },
  );
  const endedAt = Date.now();
  await Bun.sleep(300);
  await traffic.stop();
  return { view, answers: traffic.answers, endedAt };
}

function expectSharesMatch(view: CanaryView): void {
  for (const step of view.history) expect(Math.abs(step.measuredShare - step.weight)).toBeLessThanOrEqual(3);
}

const servers: Server<undefined>[] = [];
const started: Spawned[] = [];

afterEach(async () => {
  for (const s of servers.splice(0)) s.stop(true);
  for (const p of started.splice(0)) await stopProcess(p);
});

afterAll(async () => {
  await stopAll();
  removeTempFiles();
});

async function httpSetup(mode: Mode): Promise<Gateway> {
  servers.push(replica("v1"), replica("v1"), replica("v1"), replica("v2", mode));
  const gw = await startGateway(
    "http",
    servers.map((s) => `127.0.0.1:${s.port}`),
  );
  started.push(gw.proc);
  await versionsKnown(gw, 4);
  return gw;
}

describe("a canary of an HTTP upstream", () => {
  test("a good version is promoted through every step to 100 % with 0 failed requests", async () => {
    const gw = await httpSetup("good");
    const { view, answers, endedAt } = await runCanary(gw, "/projects", "{}", (c) => c.state !== "running");
    console.log(
      "[canary good]",
      JSON.stringify(view.history.map((h) => ({ weight: h.weight, share: h.measuredShare, verdict: h.verdict }))),
    );
    expect(view.state).toBe("promoted");
    expect(view.history.map((h) => [h.weight, h.verdict])).toEqual([
      [5, "passed"],
      [25, "passed"],
      [50, "passed"],
    ]);
    expectSharesMatch(view);
    expect(answers.filter((a) => a.status !== 201)).toEqual([]);
    // Promoted: everything after goes to v2.
    const after = answers.filter((a) => a.at > endedAt + 100);
    expect(after.length).toBeGreaterThan(0);
    expect(after.every((a) => a.version === "v2")).toBe(true);
    // The log says what happened.
    expect(gw.proc.lines.some((l) => l.includes('"msg":"canary promoted: every request to it"'))).toBe(true);
  }, 60_000);

  test("a version answering 5 % with 500 is stopped in its first step; users saw at most that step's share", async () => {
    const gw = await httpSetup("errors");
    const { view, answers, endedAt } = await runCanary(gw, "/projects", "{}", (c) => c.state === "aborted");
    const failed = answers.filter((a) => a.status !== 201);
    const [first] = view.history;
    console.log(
      `[canary errors] aborted at step ${first?.step} (${first?.weight}%): ${first?.reason}; users saw ${failed.length} failed of ${answers.length}`,
    );
    expect(view.history).toHaveLength(1);
    expect(first).toMatchObject({ step: 1, weight: 5, verdict: "failed" });
    expect(view.weight).toBe(0);
    // Every failure came from the canary, while it had its 5 %: none once it was stopped.
    expect(failed.every((a) => a.status === 500 && a.version === "v2")).toBe(true);
    expect(failed.every((a) => a.at <= endedAt)).toBe(true);
    expect(failed.length).toBeLessThanOrEqual(Math.ceil(answers.length * 0.05));
    // The stable version kept serving, and takes everything now.
    const after = answers.filter((a) => a.at > endedAt + 100);
    expect(after.length).toBeGreaterThan(0);
    expect(after.every((a) => a.status === 201 && a.version === "v1")).toBe(true);
    const metrics = await (await fetch(`${gw.admin}/metrics`)).text();
    expect(metrics).toMatch(/portico_gateway_canary_analyses_total\{upstream="app",result="failed"[^}]*\} 1\n/);
    expect(metrics).toMatch(/portico_gateway_canary_weight_percent\{upstream="app",version="v2"[^}]*\} 0\n/);
  }, 60_000);

  test("a version 50 ms slower is stopped at the end of its first step", async () => {
    const gw = await httpSetup("latency");
    const { view } = await runCanary(gw, "/projects", "{}", (c) => c.state === "aborted");
    console.log(`[canary latency] ${JSON.stringify(view.history)}`);
    expect(view.history).toHaveLength(1);
    expect(view.history[0]).toMatchObject({ step: 1, weight: 5, verdict: "failed" });
    expect(view.history[0]!.reason).toMatch(/^p9\d(\.\d)? /);
    expectSharesMatch(view);
  }, 60_000);

  test("the admin API refuses what the state does not allow, and names bad input", async () => {
    const gw = await httpSetup("good");
    const post = (path: string, body?: unknown) =>
      fetch(`${gw.admin}/canary/app/${path}`, {
        method: "POST",
        headers: json,
        ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
      });
    expect((await post("pause")).status).toBe(409);
    expect((await post("start", "{not json")).status).toBe(400);
    expect((await post("start", { version: "../v2" })).status).toBe(400);
    expect((await post("dance")).status).toBe(404);
    expect((await fetch(`${gw.admin}/canary/nowhere`)).status).toBe(404);
    expect((await post("start", { version: "v2" })).status).toBe(200);
    expect((await post("start", { version: "v3" })).status).toBe(409);
    // A weight that is no integer from 0 to 100 is a bad body (400), not a state conflict.
    for (const weight of [-5, 150, 12.5, "30"])
      expect([weight, (await post("weight", { weight })).status]).toEqual([weight, 400]);
    expect((await post("weight", '{"weight":1e999}')).status).toBe(400);
    const weighted = (await (await post("weight", { weight: 30 })).json()) as CanaryView;
    expect(weighted).toMatchObject({ state: "paused", weight: 30 });
    expect(((await (await post("abort")).json()) as CanaryView).weight).toBe(0);
    expect(((await (await post("reset")).json()) as CanaryView).state).toBe("idle");
  }, 30_000);
});

describe("a canary of a gRPC upstream", () => {
  test("a good rpcapp version is promoted through every step with 0 failed calls", async () => {
    const replicas: string[] = [];
    for (const version of ["v1", "v1", "v2"]) {
      const [port, metricsPort] = [await freePort(), await freePort()];
      const p = spawnService(
        "rpcapp",
        {
          HOST: "127.0.0.1",
          PORT: String(port),
          METRICS_PORT: String(metricsPort),
          SERVICE_VERSION: version,
          LOG_LEVEL: "warn",
        },
        `rpcapp-${version}-${port}`,
      );
      started.push(p);
      await waitForHttp(`http://127.0.0.1:${metricsPort}/readyz`, p);
      replicas.push(`127.0.0.1:${port}`);
    }
    const gw = await startGateway("grpc", replicas);
    started.push(gw.proc);
    await versionsKnown(gw, 3);
    const { view, answers } = await runCanary(
      gw,
      "/verify",
      '{"id": 121, "token": "a$$"}',
      (c) => c.state !== "running",
    );
    console.log(
      "[canary grpc]",
      JSON.stringify(view.history.map((h) => ({ weight: h.weight, share: h.measuredShare, verdict: h.verdict }))),
    );
    expect(view.state).toBe("promoted");
    expectSharesMatch(view);
    expect(answers.filter((a) => a.status !== 200)).toEqual([]);
    expect(new Set(answers.map((a) => a.version))).toEqual(new Set(["v1", "v2"]));
  }, 60_000);
});
