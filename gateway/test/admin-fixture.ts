/**
 * A gateway and its dashboard built in process, for tests of the admin app (admin/app.ts) that
 * need no listener of the gateway's: one upstream that is never called, one route, logs silent.
 * Close both after the tests (`dashboard.close()`, `gateway.close()`).
 */
import pino from "pino";
import { Lifecycle } from "../../lib/lifecycle.ts";
import { parseConfig } from "../src/config/load.ts";
import { Dashboard } from "../src/dashboard/index.ts";
import { PeerDirectory } from "../src/peers.ts";
import { Gateway } from "../src/server.ts";

export function inProcessGateway() {
  const config = parseConfig(
    [
      "upstreams:",
      "  web:",
      "    protocol: http",
      "    endpoints: 127.0.0.1:9",
      "    healthCheck: { enabled: false }",
      "routes:",
      "  - name: r",
      "    path: /r",
      "    upstream: web",
    ].join("\n"),
    "inline.yaml",
  );
  const log = pino({ level: "silent" });
  const lifecycle = new Lifecycle({ drainDelayMs: 0, shutdownTimeoutMs: 1000, log });
  const identity = { service: "gateway", version: "t", instance: "gw-test" };
  const gateway = new Gateway(config, { identity, log, lifecycle });
  const dashboard = new Dashboard({
    gateway,
    identity,
    lifecycle,
    peers: new PeerDirectory({ urls: [], adminPort: 0 }),
  });
  return { gateway, dashboard, identity, lifecycle, log };
}
