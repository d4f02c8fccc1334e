/**
 * The floor under the floor: what a proxy written on Bun can cost at all. `Bun.listen` for clients
 * and a `Bun.connect` keep-alive pool per upstream, round-robin, and no HTTP object anywhere: a
 * request is forwarded as the bytes that came in and the answer as the bytes that came back. It
 * frames messages by Content-Length only (what wrk and bench/upstream.ts send) and checks nothing:
 * no smuggling defences, no limits, no timeouts, no chunked bodies, no errors answered. Not a proxy
 * for anything but this benchmark — it measures Bun's sockets, not a gateway.
 * Usage: bun bench/raw-proxy.ts <port> <host:port>,<host:port>,… [<cert.pem> <key.pem>]
 */
import type { Socket } from "bun";

const [port, list, certFile, keyFile] = [
  Number(process.argv[2]),
  process.argv[3] ?? "",
  process.argv[4],
  process.argv[5],
];
const upstreams = list.split(",").map((hostPort) => {
  const at = hostPort.lastIndexOf(":");
  return { hostname: hostPort.slice(0, at), port: Number(hostPort.slice(at + 1)), idle: [] as Socket<Link>[] };
});
const CRLF2 = Buffer.from("\r\n\r\n");
const CONTENT_LENGTH = /\r\ncontent-length:[ \t]*(\d+)/i;

/** Where a complete message ends in `buf`, or -1 while it is incomplete. */
function messageEnd(buf: Buffer): number {
  const head = buf.indexOf(CRLF2);
  if (head < 0) return -1;
  const length = CONTENT_LENGTH.exec(buf.toString("latin1", 0, head));
  const end = head + 4 + (length ? Number(length[1]) : 0);
  return buf.length >= end ? end : -1;
}

/** A client connection's state, and the upstream connection serving its current request. */
interface Link {
  buf: Buffer;
  busy: boolean;
  peer?: Socket<Link>;
}

let next = 0;
function forward(client: Socket<Link>) {
  const link = client.data;
  if (link.busy) return;
  const end = messageEnd(link.buf);
  if (end < 0) return;
  const request = link.buf.subarray(0, end);
  link.buf = link.buf.subarray(end);
  link.busy = true;
  const upstream = upstreams[next++ % upstreams.length]!;
  const send = (socket: Socket<Link>) => {
    socket.data.peer = client;
    socket.write(request);
  };
  const idle = upstream.idle.pop();
  if (idle) return send(idle);
  const kept = Buffer.from(request); // sent after this callback returns
  Bun.connect<Link>({
    hostname: upstream.hostname,
    port: upstream.port,
    socket: {
      open(socket) {
        socket.data.peer = client;
        socket.write(kept);
      },
      data(socket, chunk) {
        const state = socket.data;
        state.buf = state.buf.length ? Buffer.concat([state.buf, chunk]) : chunk;
        const done = messageEnd(state.buf);
        if (done < 0) {
          state.buf = Buffer.from(state.buf); // Bun may reuse a chunk's memory after this callback
          return;
        }
        const answer = state.buf.subarray(0, done);
        state.buf = Buffer.alloc(0);
        const to = state.peer!;
        state.peer = undefined;
        upstream.idle.push(socket);
        to.write(answer);
        to.data.busy = false;
        forward(to);
      },
      close(socket) {
        const i = upstream.idle.indexOf(socket);
        if (i >= 0) upstream.idle.splice(i, 1);
        socket.data.peer?.end();
      },
      error() {},
    },
    data: { buf: Buffer.alloc(0), busy: false },
  }).catch(() => client.end());
}

Bun.listen<Link>({
  hostname: "127.0.0.1",
  port,
  ...(certFile && keyFile ? { tls: { cert: Bun.file(certFile), key: Bun.file(keyFile) } } : {}),
  socket: {
    open(socket) {
      socket.data = { buf: Buffer.alloc(0), busy: false };
    },
    data(socket, chunk) {
      const link = socket.data;
      link.buf = link.buf.length ? Buffer.concat([link.buf, chunk]) : chunk;
      forward(socket);
      if (link.buf.length) link.buf = Buffer.from(link.buf); // kept past this callback: copied
    },
    error() {},
  },
});
