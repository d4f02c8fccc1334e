/**
 * The floor for Portico's own data path: Bun.serve in front of the gateway's upstream client
 * (gateway/src/proxy/h1-client.ts: keep-alive pool, llhttp parser, timeouts, response limits),
 * round-robin over the upstreams, and nothing else — no routing, guards, forwarded headers,
 * breaker, retries, metrics, trace context or logs. What Portico lean costs above this row is
 * what its request path costs; what this row costs above nginx is Bun.serve's and the pool's.
 * Usage: bun bench/pool-proxy.ts <port> <host:port>,<host:port>,…
 */
import { H1Pool } from "../gateway/src/proxy/h1-client.ts";

const [port, list] = [Number(process.argv[2]), process.argv[3] ?? ""];
const pools = list.split(",").map((hostPort) => new H1Pool(hostPort));
const limits = { maxHeaderBytes: 64 * 1024, maxResponseBytes: 16 * 1024 * 1024 };
let next = 0;
Bun.serve({
  hostname: "127.0.0.1",
  port,
  async fetch(req) {
    const { url } = req;
    const body = req.method === "GET" || req.method === "HEAD" ? null : await req.bytes();
    const pool = pools[next++ % pools.length]!;
    const outcome = await pool.send(req.method, url.slice(url.indexOf("/", 8)), req.headers, body, 30_000, limits);
    return outcome.kind === "response" ? outcome.response : new Response(null, { status: 502 });
  },
});
