/**
 * A trivial HTTP/1.1 upstream for the proxy benchmark: every request gets the same 201 JSON
 * (GET /readyz and /healthz a 200, for the gateway's health checks), written from one
 * pre-encoded buffer.
 *
 * Raw TCP (Bun.listen) rather than Bun.serve, for two reasons: it counts accepted connections
 * exactly (Bun.serve has no connection hook, and `ss` snapshots miss connections that open and
 * close between two readings), and it costs less CPU per request than Bun.serve, so the upstream
 * stays far from being the bottleneck. It understands what proxies send: keep-alive, pipelining,
 * Content-Length and chunked bodies, `Connection: close`.
 *
 * One process serves several ports, one per benchmark target, so that each target's connection
 * count is its own (a gateway's health checks included, which are part of what it costs).
 *
 * Usage: bun bench/upstream.ts <port>…  — started with an IPC channel by bench/run.ts, which sends
 * "stats" and gets back `{ [port]: { accepted, requests } }`.
 */
import type { Socket } from "bun";

const ports = process.argv.slice(2).map(Number);
if (ports.length === 0 || !ports.every((p) => Number.isInteger(p) && p > 0)) {
  console.error("usage: bun bench/upstream.ts <port>…");
  process.exit(2);
}

const BODY = JSON.stringify({ id: 1, title: "An awesome project" });
const CREATED = Buffer.from(
  `HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: ${BODY.length}\r\n\r\n${BODY}`,
  "latin1",
);
const OK = Buffer.from("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok", "latin1");

interface Counts {
  accepted: number;
  requests: number;
}
const stats: Record<number, Counts> = {};

interface Conn {
  counts: Counts;
  /** Bytes received and not yet parsed, latin1 (one char per byte, so offsets are byte offsets). */
  buf: string;
  /** Bytes not yet accepted by the kernel (only under backpressure). */
  pending: Buffer | null;
  closeAfterWrite: boolean;
}

/** End of the request starting at `buf[0]`, or -1 while incomplete. */
function requestEnd(buf: string, headEnd: number, head: string): number {
  const bodyStart = headEnd + 4;
  if (/^transfer-encoding:[^\r]*chunked/im.test(head)) {
    let at = bodyStart;
    for (;;) {
      const lineEnd = buf.indexOf("\r\n", at);
      if (lineEnd < 0) return -1;
      const size = Number.parseInt(buf.slice(at, lineEnd), 16);
      if (size === 0) {
        // Last chunk: optional trailers, then an empty line.
        const end = buf.startsWith("\r\n", lineEnd + 2) ? lineEnd + 4 : buf.indexOf("\r\n\r\n", lineEnd + 2) + 4;
        return end >= 4 && end <= buf.length ? end : -1;
      }
      at = lineEnd + 2 + size + 2;
      if (at > buf.length) return -1;
    }
  }
  const length = /^content-length:\s*(\d+)/im.exec(head);
  const end = bodyStart + (length ? Number(length[1]) : 0);
  return end <= buf.length ? end : -1;
}

function write(socket: Socket<Conn>, bytes: Buffer): void {
  const written = socket.write(bytes);
  if (written < bytes.length) socket.data.pending = bytes.subarray(Math.max(written, 0));
  else if (socket.data.closeAfterWrite) socket.end();
}

function listen(port: number): void {
  const counts: Counts = { accepted: 0, requests: 0 };
  stats[port] = counts;
  Bun.listen<Conn>({ hostname: "127.0.0.1", port, socket: { ...handlers, open: (socket) => opened(socket, counts) } });
}

function opened(socket: Socket<Conn>, counts: Counts): void {
  counts.accepted++;
  socket.data = { counts, buf: "", pending: null, closeAfterWrite: false };
}

const handlers = {
  data(socket: Socket<Conn>, chunk: Buffer) {
    const conn = socket.data;
    conn.buf += chunk.toString("latin1");
    const replies: Buffer[] = [];
    for (;;) {
      const headEnd = conn.buf.indexOf("\r\n\r\n");
      if (headEnd < 0) break;
      const head = conn.buf.slice(0, headEnd);
      const end = requestEnd(conn.buf, headEnd, head);
      if (end < 0) break;
      conn.buf = conn.buf.slice(end);
      conn.counts.requests++;
      replies.push(/^GET \/(readyz|healthz)[ ?]/.test(head) ? OK : CREATED);
      if (/^connection:\s*close/im.test(head)) {
        conn.closeAfterWrite = true;
        break;
      }
    }
    if (replies.length === 0) return;
    if (conn.pending) conn.pending = Buffer.concat([conn.pending, ...replies]);
    else write(socket, replies.length === 1 ? replies[0]! : Buffer.concat(replies));
  },
  drain(socket: Socket<Conn>) {
    const pending = socket.data.pending;
    if (!pending) return;
    socket.data.pending = null;
    write(socket, pending);
  },
};

for (const port of ports) listen(port);
process.on("message", (message) => {
  if (message === "stats") process.send?.(stats);
});
