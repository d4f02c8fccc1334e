/**
 * Zero-downtime upgrades and downgrades, measured locally: a steady mixed load (POST /projects/
 * through webapp, POST /verify/ through rpcapp) goes through the 3 gateways while every replica of
 * every service, the gateways included, is replaced one by one with version v2, then rolled back
 * to v1 — what `make rollout` / `make rollback` do in `make dev` (scripts/stack/rolling.ts). Each
 * new replica is ready before its predecessor gets SIGTERM and drains (lib/lifecycle.ts).
 * Not one request may fail, and the responses must show both versions.
 *
 * Run twice: in plain HTTP, and with TLS on every hop (`TLS=1 make dev`: the load over HTTPS to
 * the gateways, mutual TLS to webapp and rpcapp, whose readiness is read on their plain ports).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { waitFor } from "../stack/testing/processes.ts";
import { formatCounts, formatReport, LoadGenerator } from "../traffic/load-generator.ts";
import { type Kind, RollingStack, type RolloutEvent } from "../stack/rolling.ts";
import { freeBlock, freePort, startTestStack, type TestStack } from "../stack/testing/stack.ts";

const RPS = 150;
const MIN_LOAD_MS = 30_000;
const UPGRADE: Kind[] = ["webapp", "rpcapp", "gateway"];

describe.each([
  ["in plain HTTP", false],
  ["with TLS on every hop", true],
] as const)("%s", (_mode, tls) => {
  let stack: TestStack & RollingStack;
  const tlsDir = tls ? mkdtempSync(join(tmpdir(), "rolling-tls-")) : undefined;

  beforeAll(async () => {
    // Each slot has a base port and a spare one N above it: blocks of 2 × 3 ports.
    const ports = {
      adminBasePort: await freeBlock(6),
      webappBasePort: await freeBlock(6),
      rpcappBasePort: await freeBlock(6),
      rpcappHttpBasePort: await freeBlock(6),
      webappMetricsBasePort: await freeBlock(6),
    };
    stack = (await startTestStack(
      {
        ...ports,
        version: "v1",
        env: { LOG_LEVEL: "warn" },
        ...(tlsDir ? { tls: { dir: tlsDir, httpsPort: await freePort() } } : {}),
      },
      (opts) => new RollingStack(opts),
    )) as TestStack & RollingStack;
  }, 60_000);

  afterAll(async () => {
    await stack?.stop(5_000);
    if (tlsDir) rmSync(tlsDir, { recursive: true, force: true });
  });

  test("every replica of every service is upgraded to v2 and rolled back to v1 under steady load: 0 failed requests, both versions seen", async () => {
    const events: { at: number; e: RolloutEvent }[] = [];
    /** Which version each instance runs, to read rpcapp's from x-served-by (the gateway does not forward gRPC's x-service-version). */
    const versionOf = new Map(stack.describe().map((p) => [p.name, p.version]));
    const t0 = performance.now();
    const onEvent = (e: RolloutEvent) => {
      events.push({ at: performance.now() - t0, e });
      if (e.type === "starting") versionOf.set(e.instance, e.version);
    };

    // A high in-flight cap: on 2 busy cores a process start can stall answers for a second or two,
    // and the load must keep its rate through that rather than skip requests.
    const load = tlsDir
      ? new LoadGenerator(stack.gatewayHttpsUrl!, {
          rps: RPS,
          maxInFlight: 2_000,
          caPem: readFileSync(join(tlsDir, "ca.crt"), "utf8"),
        })
      : new LoadGenerator(stack.gatewayUrl, { rps: RPS, maxInFlight: 2_000 });
    load.start();
    const phases: Record<string, number> = {};
    try {
      await waitFor("the first answers through the gateways", () => load.snapshot().ok >= 50, { timeoutMs: 10_000 });
      for (const kind of UPGRADE) {
        const from = performance.now();
        await stack.rollingReplace(kind, "v2", onEvent);
        phases[`${kind} → v2`] = Math.round(performance.now() - from);
      }
      for (const kind of [...UPGRADE].reverse()) {
        const from = performance.now();
        await stack.rollback(kind, onEvent);
        phases[`${kind} → v1`] = Math.round(performance.now() - from);
      }
      await stack.settled(onEvent);
      // The issue asks for at least 30 s of load; the replacements usually take longer than that.
      const short = MIN_LOAD_MS - (performance.now() - t0);
      if (short > 0) await Bun.sleep(short);
    } catch (err) {
      console.log(`requests until the failure:\n${formatReport(await load.stop())}`);
      throw err;
    }
    const report = await load.stop();
    if (report.failed > 0)
      console.log(
        `rollout events (s from the start): ${events.map((x) => `${(x.at / 1000).toFixed(1)} ${x.e.type} ${x.e.instance}`).join("; ")}`,
      );

    const rpcappVersions: Record<string, number> = {};
    for (const [instance, n] of Object.entries(report.servedBy.verify ?? {}))
      rpcappVersions[versionOf.get(instance) ?? "?"] = (rpcappVersions[versionOf.get(instance) ?? "?"] ?? 0) + n;
    console.log(
      `rolling upgrade + rollback of 9 replicas (3 gateways, 3 webapps, 3 rpcapps) at ${RPS} req/s, ${_mode}:\n${formatReport(report)}`,
    );
    console.log(`rpcapp     by x-served-by: ${formatCounts(rpcappVersions)}`);
    console.log(
      `phases (ms): ${JSON.stringify(phases)}; replacements: ${events.filter((x) => x.e.type === "starting").length}`,
    );
    console.log(`FIGURE failed=${report.failed} sent=${report.sent} durationMs=${report.durationMs}`);

    expect(report.examples).toEqual([]);
    expect(report.failed).toBe(0);
    expect(report.sent).toBeGreaterThanOrEqual(RPS * (MIN_LOAD_MS / 1000) * 0.95);

    // Both versions answered, from the gateways (x-gateway-version) and from each service.
    expect(Object.keys(report.gatewayVersions).sort()).toEqual(["v1", "v2"]);
    expect(Object.keys(report.serviceVersions.projects ?? {}).sort()).toEqual(["v1", "v2"]);
    const verifyHeader = report.serviceVersions.verify ?? {};
    expect(Object.keys("v2" in verifyHeader ? verifyHeader : rpcappVersions).sort()).toEqual(["v1", "v2"]);

    // Each replacement was ready before its predecessor got SIGTERM, and every predecessor exited 0.
    const order = events.map((x) => x.e);
    const starts = order.filter((e): e is Extract<RolloutEvent, { type: "starting" }> => e.type === "starting");
    expect(starts.length).toBe(18);
    for (const s of starts) {
      const ready = order.findIndex((e) => e.type === "ready" && e.instance === s.instance);
      const sigterm = order.findIndex((e) => e.type === "draining" && e.instance === s.replacing);
      expect(ready).toBeGreaterThanOrEqual(0);
      expect(sigterm).toBeGreaterThan(ready);
    }
    expect(stack.replacedExits.length).toBe(18);
    expect(stack.replacedExits.filter((x) => x.code !== 0)).toEqual([]);

    // Back where it started: 3 replicas of each, all v1, third generation, none draining.
    const now = stack.describe();
    for (const kind of UPGRADE) {
      expect(now.filter((p) => p.kind === kind).map((p) => [p.name, p.version, p.state])).toEqual(
        [1, 2, 3].map((r) => [`${kind}-${r}.3`, "v1", "serving"]),
      );
    }
  }, 150_000);
});
