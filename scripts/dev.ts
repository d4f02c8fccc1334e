/**
 * `make dev`: the whole stack as local processes — 3 webapps, 3 rpcapps, 3 gateways sharing one
 * port — with one readable log stream. Ctrl-C stops everything. Every port and replica count is an
 * environment variable (see docs/configuration.md, "The local stack (make dev)").
 */
import { join, relative } from "node:path";
import { envPort, startupEnv } from "../lib/env.ts";
import { colorFor, prettyLine } from "./stack/pretty.ts";
import { describeRateLimits, isListening, isRedisInstalled } from "./stack/redis.ts";
import { describeEvent } from "./stack/dev-control.ts";
import { DEFAULT_CONTROL_PORT, startControlServer } from "./stack/control.ts";
import { describeHandover, handoverModeFromEnv } from "./stack/listener-handover.ts";
import { RollingStack } from "./stack/rolling.ts";
import { stackOptionsFromEnv } from "./stack/stack.ts";

const useColor = process.stdout.isTTY && !process.env.NO_COLOR;
const names: string[] = [];
const raw = process.env.DEV_LOG_FORMAT === "json";

/** The gateways share rate limits through Redis: REDIS_URL, else a local redis-server when installed. */
async function redisOptions(): Promise<{ redisUrl?: string; redisPort?: number }> {
  if (process.env.REDIS_URL) return { redisUrl: process.env.REDIS_URL };
  if (!isRedisInstalled()) return {};
  if (process.env.REDIS_PORT) return { redisPort: envPort("REDIS_PORT", 6390) };
  // The default port may be taken by another `make dev`: use the next free one.
  for (let port = 6390; port < 6400; port++) if (!(await isListening(port))) return { redisPort: port };
  return { redisPort: 6390 };
}

const fromEnv = startupEnv("make dev", () => stackOptionsFromEnv());

// Found by the gateways through the stack's DNS, so `make rollout` can replace replicas (rolling.ts).
const stack = new RollingStack(
  {
    ...fromEnv,
    ...(await redisOptions()),
    onLine(name, line) {
      if (raw) return void console.log(line);
      if (!names.includes(name)) names.push(name);
      console.log(prettyLine(name, colorFor(names.indexOf(name)), line, useColor));
    },
    onExit(name, code) {
      console.error(
        `\n${name} exited unexpectedly (code ${code}); the rest of the stack keeps running. Ctrl-C to stop.`,
      );
    },
  },
  // net.ipv4.tcp_migrate_req=1 when permitted, so a gateway rollout resets no new connection.
  { handover: handoverModeFromEnv() },
);

/** Set by the first SIGINT/SIGTERM; settles never (the process exits when the stack has stopped). */
let shuttingDown: Promise<void> | undefined;
async function shutdown(signal: string) {
  console.log(`\n${signal}: stopping ${stack.processes.length} processes…`);
  await stack.stop();
  console.log("stopped.");
  process.exit(0);
}
process.on("SIGINT", () => void (shuttingDown ??= shutdown("SIGINT")));
process.on("SIGTERM", () => void (shuttingDown ??= shutdown("SIGTERM")));

const { opts } = stack;
console.log(
  `starting ${opts.webappReplicas} webapps, ${opts.rpcappReplicas} rpcapps, ${opts.gatewayReplicas} gateways…`,
);
try {
  await stack.start();
} catch (err) {
  // Ctrl-C during start-up: the processes being stopped fail their readiness checks, which is
  // no sign of a port conflict. The shutdown under way says what happens and exits.
  if (shuttingDown) await shuttingDown;
  console.error(`\nmake dev: ${(err as Error).message}`);
  console.error(
    "Is another stack (or anything else) using these ports? Override them with GATEWAY_PORT, WEBAPP_BASE_PORT, … (docs/configuration.md).",
  );
  await stack.stop();
  process.exit(1);
}

// Ctrl-C just as the last process became ready: no banner, no control port.
if (shuttingDown) await shuttingDown;

const gw = stack.gatewayUrl;
const https = stack.gatewayHttpsUrl;
const caFile = opts.tls ? relative(process.cwd(), join(opts.tls.dir, "ca.crt")) : "";
// `make rollout` / `make rollback` ask this process to replace replicas (stack/control.ts).
const controlPort = envPort("DEV_CONTROL_PORT", DEFAULT_CONTROL_PORT);
let rollouts = `make rollout SERVICE=webapp, make rollback SERVICE=webapp (control port 127.0.0.1:${controlPort})`;
try {
  startControlServer(stack, { port: controlPort, onEvent: (e) => console.log(`rollout: ${describeEvent(e)}`) });
} catch (err) {
  rollouts = `unavailable: the control port ${controlPort} is taken (${(err as Error).message}); set DEV_CONTROL_PORT`;
}
const rateLimits = describeRateLimits(stack.redisUrl, stack.redis !== undefined);
if (!stack.redisUrl) console.warn(`\nwarning: rate limits are ${rateLimits}`);
console.log(`
Portico is up.
  gateway     ${gw}   (${opts.gatewayReplicas} processes sharing the port)
${
  https
    ? `  https       ${https}   (TLS=1: the local CA is ${caFile}; gateway → webapp and rpcapp is mutual TLS)\n`
    : ""
}  admin       ${stack.adminUrls().join("  ")}
  dashboard   ${stack.adminUrls()[0]}/dashboard   (live view of all ${opts.gatewayReplicas} gateways; any admin port serves it)
              ${
                stack.adminToken
                  ? "ADMIN_TOKEN is set: the admin routes but /metrics and the probes need it; the page asks for it once"
                  : "no authentication (ADMIN_TOKEN unset): the admin ports listen on 127.0.0.1 only"
              }
  rate limits ${rateLimits}
  webapps     ${stack.endpoints("webapp")}
  rpcapps     ${stack.endpoints("rpcapp")} (gRPC)
  discovery   the gateways resolve the replicas through the stack's DNS server ${stack.dns?.address}
  rollouts    ${rollouts}
              ${stack.handover ? describeHandover(stack.handover) : ""}
  metrics     ${stack
    .adminUrls()
    .map((u) => `${u}/metrics`)
    .join("  ")}
              webapps and rpcapps: /metrics on their plain HTTP ports (make monitor: a local Prometheus scraping them all)
  traces      set OTEL_EXPORTER_OTLP_ENDPOINT (e.g. a local Jaeger's http://127.0.0.1:4318) to export spans;
              every log line carries trace_id, span_id and request_id either way
  logs        this terminal (JSON lines from every process, prettified; DEV_LOG_FORMAT=json for raw);
              probes (/healthz, /readyz, health checks) are not access-logged: LOG_PROBES=true make dev shows them

Try:
  curl -X POST -H 'Content-type: application/json' -d '{"title":"An awesome project"}' ${gw}/projects/
  curl -X POST -H 'Content-type: application/json' -d '{"id": 121, "token": "a$$" }' ${gw}/verify/
${
  https
    ? `  curl --cacert ${caFile} -X POST -H 'Content-type: application/json' -d '{"title":"Over TLS"}' ${https}/projects/\n`
    : ""
}  make smoke      (in another shell)
`);
