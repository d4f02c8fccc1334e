/**
 * The floor for a proxy written on Bun: Bun.serve + fetch, round-robin, nothing else (no limits,
 * no timeouts, no logs, no metrics). What the gateway costs above this is what its features cost.
 * Usage: bun bench/bare-proxy.ts <port> <host:port>,<host:port>,…
 */
const [port, list] = [Number(process.argv[2]), process.argv[3] ?? ""];
const origins = list.split(",").map((hostPort) => `http://${hostPort}`);
let next = 0;
Bun.serve({
  hostname: "127.0.0.1",
  port,
  async fetch(req) {
    const url = new URL(req.url);
    const origin = origins[next++ % origins.length];
    const body = req.method === "GET" || req.method === "HEAD" ? null : await req.arrayBuffer();
    return fetch(origin + url.pathname + url.search, { method: req.method, headers: req.headers, body });
  },
});
