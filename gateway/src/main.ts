/**
 * The gateway process: reads config and env, starts the public listener (shared by every local
 * gateway process through SO_REUSEPORT) and the admin listener, and drains on SIGTERM.
 */
import { envInt, envPort, envString, serviceIdentity } from "../../lib/env.ts";
import { Lifecycle } from "../../lib/lifecycle.ts";
import { createLogger } from "../../lib/log.ts";
import { createAdminApp } from "./admin.ts";
import { ConfigError, loadConfig } from "./config/load.ts";
import { Gateway } from "./server.ts";

const identity = serviceIdentity("gateway");
const log = createLogger(identity);
const host = envString("HOST", "0.0.0.0");
const port = envPort("PORT", 8080);
const adminPort = envPort("ADMIN_PORT", 9901);
const routesFile = envString("ROUTES_FILE", "gateway/routes.yaml");

let config;
try {
  config = loadConfig(routesFile);
} catch (err) {
  if (err instanceof ConfigError) {
    // Printed plainly as well as logged: this is what a user editing routes.yaml reads.
    console.error(err.message);
    log.fatal({ file: err.file, problems: err.problems }, "invalid config; not starting");
    process.exit(78); // EX_CONFIG
  }
  throw err;
}

const lifecycle = new Lifecycle({
  drainDelayMs: envInt("DRAIN_DELAY_MS", 0, { min: 0 }),
  shutdownTimeoutMs: envInt("SHUTDOWN_TIMEOUT_MS", 20_000, { min: 100 }),
  log,
});
const gateway = new Gateway(config, { identity, log, lifecycle });

const server = Bun.serve({
  hostname: host,
  port,
  // Several gateway processes bind the same port; the kernel spreads connections across them.
  reusePort: true,
  // Bun's own limit is only a backstop (it answers a bare 413); the per-route limit, checked in
  // the request path, answers problem+json. So Bun's is set well above every route's.
  maxRequestBodySize: Math.max(gateway.maxBodyBytes * 4, 8 * 1024 * 1024),
  fetch: gateway.fetch,
  error(err) {
    log.error({ err }, "server error");
    return new Response(null, { status: 500 });
  },
});
const admin = createAdminApp(gateway, identity, lifecycle).listen({ hostname: host, port: adminPort });

lifecycle.onStop("public listener", () => server.stop(false));
lifecycle.onStop("admin listener", async () => {
  await admin.stop();
});
lifecycle.onStop("upstream connections", () => gateway.close());
lifecycle.handleSignals();
lifecycle.markReady();
log.info(
  { port: server.port, admin_port: adminPort, routes: config.routes.length, upstreams: [...config.upstreams.keys()], config: routesFile },
  "gateway ready",
);
