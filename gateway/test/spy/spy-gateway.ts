/**
 * One gateway process in front of one UpstreamSpy, for the data-path tests: the routes file is
 * written to a temp dir (resilience-harness.ts) with health checks, ejection and breakers out of
 * the way (a misbehaving spy must not take itself out of the set between cases) and no retries
 * (each client request is one upstream request, so what the spy received maps to what was sent).
 */
import { readFileSync } from "node:fs";
import { type Gateway, startGateway, writeRoutes } from "../resilience-harness.ts";
import type { UpstreamSpy } from "./upstream-spy.ts";

export interface SpyGateway extends Gateway {
  port: number;
  routesFile: string;
  instance: string;
}

export interface SpyRouteOptions {
  timeoutMs?: number;
  /** YAML flow-mapping entries added to `limits`, e.g. `maxResponseBytes: 1024`. */
  limits?: string;
  /** Top-level YAML added as is (e.g. `trustedProxies: ["127.0.0.1/32"]`). */
  extra?: string;
  /** More routes to the spy, as YAML list items (each `  - { … }` on its own line). */
  routes?: string;
}

/** A routes.yaml: upstream `spy`, route `spy` on prefix /spy to it. */
export function spyRoutesYaml(spy: UpstreamSpy, opts: SpyRouteOptions = {}): string {
  return `limits: { idleTimeoutSec: 10${opts.limits ? `, ${opts.limits}` : ""} }
upstreams:
  spy:
    protocol: http
    endpoints: "${spy.address}"
    healthCheck: { enabled: false }
    outlierDetection: { consecutiveFailures: 1000 }
    circuitBreaker: { consecutiveFailures: 1000 }
routes:
  - { name: spy, path: /spy, upstream: spy, timeoutMs: ${opts.timeoutMs ?? 3000}, retry: { attempts: 1 } }
${opts.routes ?? ""}
${opts.extra ?? ""}
`;
}

export async function startSpyGateway(
  name: string,
  spy: UpstreamSpy,
  opts: SpyRouteOptions = {},
  env: Record<string, string> = {},
): Promise<SpyGateway> {
  const routesFile = writeRoutes(name, spyRoutesYaml(spy, opts));
  // Access log lines (info) are what tests correlate with the spy's bytes.
  const gw = await startGateway(name, routesFile, { LOG_LEVEL: "info", ...env });
  return { ...gw, port: Number(new URL(gw.url).port), routesFile, instance: name };
}

/** The gateway's access log so far: one entry per request it handled. */
export interface AccessEntry {
  request_id: string;
  method: string;
  path: string;
  status: number;
}

export function accessLog(gw: Gateway): AccessEntry[] {
  const entries: AccessEntry[] = [];
  for (const line of gw.proc.lines) {
    if (!line.startsWith("{")) continue;
    try {
      const parsed = JSON.parse(line) as AccessEntry & { msg?: string };
      if (parsed.msg === "request") entries.push(parsed);
    } catch {}
  }
  return entries;
}

/** Resident set size of a process, from /proc (bytes). */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]) * 1024;
}

export const MiB = 1024 * 1024;
