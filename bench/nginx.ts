/**
 * nginx as a reference proxy: one worker, keep-alive to the upstreams, round-robin. The idle
 * cache is 64 connections per upstream server: nginx keeps one LRU cache for the whole block, and
 * with only 64 slots round-robin at 64 in flight closes and reopens connections all the time
 * (measured: ~1,200 new connections in a 2 s run). No access log. Started in the foreground
 * (`daemon off`) with a generated config in a temp dir, so its master's PID is the one we
 * spawned; the worker is its child, counted by procs.ts's process tree.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { TLS12_CIPHERS } from "../lib/tls-listener.ts";
import { pinned, spawn, waitHttp, tempDir } from "./procs.ts";

/** A certificate and key (PEM files) for a TLS-terminating row. */
export interface BenchTls {
  cert: string;
  key: string;
}

/**
 * With `tls`: nginx terminates TLS as the gateway does — TLS 1.2 and 1.3, the same TLS 1.2 suites
 * (lib/tls-listener.ts), the same certificate; wrk keeps its connections, so this measures the
 * record layer, not handshakes.
 */
export function nginxConfig(dir: string, port: number, upstreams: string[], tls?: BenchTls): string {
  return `daemon off;
worker_processes 1;
error_log ${dir}/error.log warn;
pid ${dir}/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir};
  proxy_temp_path ${dir};
  fastcgi_temp_path ${dir};
  uwsgi_temp_path ${dir};
  scgi_temp_path ${dir};
  keepalive_requests 1000000;
  upstream backend {
${upstreams.map((u) => `    server ${u};`).join("\n")}
    keepalive ${64 * upstreams.length};
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:${port}${tls ? " ssl" : ""};
${
  tls
    ? `    ssl_certificate ${tls.cert};
    ssl_certificate_key ${tls.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ${TLS12_CIPHERS};
`
    : ""
}    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
    }
  }
}
`;
}

export async function startNginx(
  port: number,
  upstreams: string[],
  cpu?: number,
  tls?: BenchTls & { ca: string },
): Promise<Subprocess> {
  const dir = tempDir("nginx");
  const conf = join(dir, "nginx.conf");
  writeFileSync(conf, nginxConfig(dir, port, upstreams, tls));
  // -e: nginx otherwise opens its compiled-in error log (/var/log/nginx) before reading the config.
  const proc = spawn("nginx", pinned(["nginx", "-c", conf, "-p", dir, "-e", `${dir}/error.log`], cpu), {
    stdout: "ignore",
    stderr: "inherit",
  });
  await waitHttp(
    `${tls ? "https" : "http"}://127.0.0.1:${port}/healthz`,
    proc,
    tls ? { tls: { ca: readFileSync(tls.ca, "utf8") } } : undefined,
  );
  return proc;
}
