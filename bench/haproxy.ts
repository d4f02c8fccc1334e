/**
 * HAProxy as a reference proxy: one process, one thread, HTTP mode with keep-alive on both sides
 * and idle upstream connections reused by any request (`http-reuse always`), round-robin, no
 * logging. Started in the foreground (-db) with a generated config in a temp dir.
 */
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { pinned, spawn, waitHttp, tempDir } from "./procs.ts";

export function haproxyConfig(port: number, upstreams: string[]): string {
  return `global
  nbthread 1
  maxconn 4096

defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
  option http-keep-alive

frontend bench
  bind 127.0.0.1:${port}
  default_backend upstreams

backend upstreams
  balance roundrobin
  http-reuse always
${upstreams.map((u, i) => `  server u${i} ${u}`).join("\n")}
`;
}

export async function startHaproxy(port: number, upstreams: string[], cpu?: number): Promise<Subprocess> {
  const dir = tempDir("haproxy");
  const conf = join(dir, "haproxy.cfg");
  writeFileSync(conf, haproxyConfig(port, upstreams));
  const proc = spawn("haproxy", pinned(["haproxy", "-db", "-f", conf], cpu), { stdout: "ignore", stderr: "inherit" });
  await waitHttp(`http://127.0.0.1:${port}/healthz`, proc);
  return proc;
}
