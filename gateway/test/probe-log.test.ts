/** The public /healthz and /readyz are answered but not access-logged unless LOG_PROBES asks (logProbes). */
import { afterAll, describe, expect, test } from "bun:test";
import type { Server } from "bun";
import { Lifecycle } from "../../lib/lifecycle.ts";
import { createLogger } from "../../lib/log.ts";
import { parseConfig } from "../src/config/load.ts";
import { Gateway } from "../src/server.ts";

const config = parseConfig(
  `upstreams: { web: { protocol: http, endpoints: "127.0.0.1:9", healthCheck: { enabled: false } } }
routes: [{ name: r, path: /r, upstream: web }]`,
  "inline.yaml",
);
/** Just what the request path asks of Bun's server. */
const server = {
  requestIP: () => ({ address: "127.0.0.1", family: "IPv4", port: 1 }),
  timeout() {},
} as unknown as Server<unknown>;
const gateways: Gateway[] = [];
afterAll(() => {
  for (const g of gateways) g.close();
});

function gatewayLogging(logProbes: boolean) {
  const identity = { service: "gateway", version: "t", instance: "gw-test" };
  const lines: Record<string, unknown>[] = [];
  const log = createLogger(identity, { destination: { write: (l: string) => void lines.push(JSON.parse(l)) } });
  const lifecycle = new Lifecycle({ drainDelayMs: 0, shutdownTimeoutMs: 1000, log, exit: () => {} });
  lifecycle.markReady();
  const gateway = new Gateway(config, { identity, log, lifecycle, logProbes });
  gateways.push(gateway);
  const get = (path: string, id: string) =>
    gateway.fetch(new Request(`http://gw${path}`, { headers: { "x-request-id": id } }), server);
  const accessLines = () => lines.filter((l) => l.msg === "request").map((l) => [l.request_id, l.path, l.status]);
  return { get, accessLines };
}

describe("probe access lines", () => {
  test("by default probes are answered and not logged; a request that is not a probe is", async () => {
    const { get, accessLines } = gatewayLogging(false);
    expect((await get("/healthz", "p1")).status).toBe(200);
    expect((await get("/readyz", "p2")).status).toBe(200);
    expect((await get("/nope", "n1")).status).toBe(404);
    expect(accessLines()).toEqual([["n1", "/nope", 404]]);
  });

  test("with logProbes they are logged like any request", async () => {
    const { get, accessLines } = gatewayLogging(true);
    await get("/healthz", "p3");
    await get("/readyz", "p4");
    expect(accessLines()).toEqual([
      ["p3", "/healthz", 200],
      ["p4", "/readyz", 200],
    ]);
  });
});
