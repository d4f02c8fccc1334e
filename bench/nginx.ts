/**
 * nginx as a reference proxy for the benchmark: one worker, keep-alive to the same upstreams the
 * gateway uses, started with a generated config in a temp dir and stopped by PID.
 */
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export async function startNginx(port: number, upstreams: string[]): Promise<{ stop(): Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), "portico-nginx-"));
  const conf = join(dir, "nginx.conf");
  writeFileSync(
    conf,
    `daemon off;
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
  upstream webapp {
${upstreams.map((u) => `    server ${u};`).join("\n")}
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://webapp;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
    }
  }
}
`,
  );
  const proc = Bun.spawn(["nginx", "-c", conf, "-p", dir], { stdout: "ignore", stderr: "pipe" });
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    try {
      await fetch(`http://127.0.0.1:${port}/healthz`);
      break;
    } catch {
      await Bun.sleep(50);
    }
  }
  return {
    async stop() {
      proc.kill("SIGTERM");
      await proc.exited;
    },
  };
}
