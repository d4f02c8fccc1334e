/**
 * Start-up of a gateway process: a SIGHUP while it starts (here, while it waits on a DNS server
 * that never answers) is noted, not fatal — SIGHUP's default action ends a process, and the
 * reloader only takes the signal over at the end of start-up; a taken ADMIN_PORT stops it with a
 * clear line instead of sharing the port with the process that holds it; so does a bad OTEL_*
 * variable, checked with the other settings before anything starts.
 */
import { afterAll, expect, test } from "bun:test";
import { createSocket } from "node:dgram";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { stopAll, waitFor } from "../../scripts/stack/testing/processes.ts";
import { removeTempFiles, spawnGateway, startGateway, writeRoutes } from "./resilience-harness.ts";

const silentDns = createSocket("udp4");

afterAll(async () => {
  await stopAll();
  silentDns.close();
  removeTempFiles();
});

test("SIGHUP during start-up does not end the gateway; it starts and serves", async () => {
  const dnsPort = await freePort();
  await new Promise<void>((resolve) => silentDns.bind(dnsPort, "127.0.0.1", resolve));
  const routes = writeRoutes(
    "startup-hup",
    `upstreams:\n  a: { protocol: http, endpoints: "never-answered.test:80", healthCheck: { enabled: false } }\nroutes:\n  - { name: r, path: /r, upstream: a }\n`,
  );
  const { proc, adminUrl } = await spawnGateway("gateway-startup-hup", routes, {
    DNS_SERVER: `127.0.0.1:${dnsPort}`,
    LOG_LEVEL: "info",
  });
  // Start-up is waiting on the silent DNS server (each lookup is bounded, a few seconds).
  await waitFor("the gateway to be running", () => proc.lines.length > 0, { timeoutMs: 10_000, intervalMs: 20 });
  await Bun.sleep(300);
  proc.proc.kill("SIGHUP");
  await waitFor(
    "the gateway to be ready",
    async () => (await fetch(`${adminUrl}/readyz`).catch(() => undefined))?.status === 200,
    { timeoutMs: 20_000, intervalMs: 100, proc },
  );
  expect(proc.proc.exitCode).toBeNull();
  expect(proc.lines.some((l) => l.includes("SIGHUP during start-up"))).toBe(true);
}, 40_000);

test("a second gateway on a taken ADMIN_PORT exits with a clear line; the first keeps its admin port alone", async () => {
  const routes = writeRoutes(
    "startup-admin-port",
    `upstreams:\n  a: { protocol: http, endpoints: "127.0.0.1:9", healthCheck: { enabled: false } }\nroutes:\n  - { name: r, path: /r, upstream: a }\n`,
  );
  const first = await startGateway("gateway-admin-first", routes);
  const adminPort = new URL(first.adminUrl).port;
  const second = await spawnGateway("gateway-admin-second", routes, { ADMIN_PORT: adminPort });
  expect(await second.proc.proc.exited).toBe(1);
  await waitFor(
    "the start-up error line",
    () => second.proc.lines.some((l) => l.includes(`cannot start the admin listener on port ${adminPort}`)),
    { timeoutMs: 2000 },
  );
  // Every admin answer comes from the first gateway (with a shared port, some came from the second).
  for (let i = 0; i < 8; i++) {
    const version = (await (await fetch(`${first.adminUrl}/version`)).json()) as { instance: string };
    expect(version.instance).toBe("gateway-admin-first");
  }
}, 40_000);

test("a HOST that is no address of this machine stops the start-up with a line naming HOST and PORT, not a stack trace", async () => {
  const routes = writeRoutes(
    "startup-host",
    `upstreams:\n  a: { protocol: http, endpoints: "127.0.0.1:9", healthCheck: { enabled: false } }\nroutes:\n  - { name: r, path: /r, upstream: a }\n`,
  );
  const gateway = await spawnGateway("gateway-bad-host", routes, { HOST: "256.1.1.1" });
  expect(await gateway.proc.proc.exited).toBe(1);
  await waitFor(
    "the start-up error line",
    () =>
      gateway.proc.lines.some((l) => l.includes("gateway: cannot listen on 256.1.1.1:") && l.includes("(HOST, PORT)")),
    { timeoutMs: 2000 },
  );
  // Bun's own report of an uncaught error ("Bun v1.… (…)", the source excerpt) is not there.
  expect(gateway.proc.lines.filter((l) => /^Bun v\d/.test(l.trim()))).toEqual([]);
}, 40_000);

test("a bad OTEL_* variable stops the start-up with one line naming it, not a stack trace", async () => {
  const routes = writeRoutes(
    "startup-otel",
    `upstreams:\n  a: { protocol: http, endpoints: "127.0.0.1:9", healthCheck: { enabled: false } }\nroutes:\n  - { name: r, path: /r, upstream: a }\n`,
  );
  const gateway = await spawnGateway("gateway-bad-otel", routes, {
    OTEL_RESOURCE_ATTRIBUTES: "deployment.environment.name",
  });
  expect(await gateway.proc.proc.exited).toBe(1);
  await waitFor(
    "the start-up error line",
    () => gateway.proc.lines.some((l) => l.startsWith("gateway: OTEL_RESOURCE_ATTRIBUTES: entry 1 is not key=value")),
    { timeoutMs: 2000 },
  );
  expect(gateway.proc.lines.some((l) => /^\s+at /.test(l))).toBe(false);
}, 20_000);
