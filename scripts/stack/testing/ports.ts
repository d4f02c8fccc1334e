/**
 * Free TCP ports for tests. Ports are drawn below 32768: the kernel hands out client source
 * ports from 32768–60999, and a test server listening there can collide with them (docs/design.md, "Known traps").
 */
import { createServer } from "node:net";

const LOW = 20000;
const HIGH = 32000;
const handedOut = new Set<number>();

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen({ port, host: "127.0.0.1", exclusive: true }, () => server.close(() => resolve(true)));
  });
}

/** A port nobody listens on now and that this test process has not handed out before. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const port = LOW + Math.floor(Math.random() * (HIGH - LOW));
    if (handedOut.has(port)) continue;
    if (await canListen(port)) {
      handedOut.add(port);
      return port;
    }
  }
  throw new Error(`no free port found in ${LOW}-${HIGH}`);
}

/**
 * The first of `n` consecutive free ports, all reserved for this test process: no later
 * freePort() or freeBlock() hands out a port inside the block (two blocks that overlapped put a
 * gateway's admin port and a webapp on one port).
 */
export async function freeBlock(n: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = await freePort();
    const rest = Array.from({ length: n - 1 }, (_, i) => base + 1 + i);
    if (rest.some((port) => port >= HIGH || handedOut.has(port))) continue;
    if ((await Promise.all(rest.map(canListen))).every(Boolean)) {
      for (const port of rest) handedOut.add(port);
      return base;
    }
  }
  throw new Error(`no block of ${n} free ports found in ${LOW}-${HIGH}`);
}

export async function freePorts(n: number): Promise<number[]> {
  const ports: number[] = [];
  for (let i = 0; i < n; i++) ports.push(await freePort());
  return ports;
}
