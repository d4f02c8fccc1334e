/**
 * Runs wrk against one URL and returns throughput and latency percentiles. POST bodies go
 * through a generated Lua script; `--latency` gives the percentiles.
 */
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pinned, spawn, tempDir } from "./procs.ts";

export interface WrkResult {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  requests: number;
  /** Non-2xx/3xx responses plus socket errors. */
  errors: number;
}

export interface WrkOptions {
  url: string;
  method?: string;
  body?: string;
  headers?: Record<string, string>;
  connections: number;
  threads: number;
  durationS: number;
  /** Pin wrk to this CPU (taskset), away from the proxy under test. */
  cpu?: number;
}

export async function runWrk(opts: WrkOptions): Promise<WrkResult> {
  const dir = tempDir("wrk");
  const script = join(dir, "request.lua");
  const headerLines = Object.entries({ "content-type": "application/json", ...opts.headers })
    .map(([k, v]) => `wrk.headers[${JSON.stringify(k)}] = ${JSON.stringify(v)}`)
    .join("\n");
  writeFileSync(
    script,
    `wrk.method = ${JSON.stringify(opts.method ?? "GET")}\n${opts.body ? `wrk.body = ${JSON.stringify(opts.body)}\n` : ""}${headerLines}\n`,
  );
  const proc = spawn(
    "wrk",
    pinned(
      [
        "wrk",
        "-t",
        String(opts.threads),
        "-c",
        String(opts.connections),
        "-d",
        `${opts.durationS}s`,
        "--latency",
        "-s",
        script,
        opts.url,
      ],
      opts.cpu,
    ),
    { stdout: "pipe", stderr: "pipe" },
  );
  const [out, err] = await Promise.all([
    new Response(proc.stdout as ReadableStream).text(),
    new Response(proc.stderr as ReadableStream).text(),
  ]);
  rmSync(dir, { recursive: true, force: true });
  if ((await proc.exited) !== 0) throw new Error(`wrk failed: ${err || out}`);
  return parseWrk(out);
}

function toMs(value: string, unit: string): number {
  const n = Number(value);
  return unit === "us" ? n / 1000 : unit === "s" ? n * 1000 : unit === "m" ? n * 60_000 : n;
}

export function parseWrk(out: string): WrkResult {
  const percentile = (p: string) => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m)`, "m").exec(out);
    return m ? toMs(m[1]!, m[2]!) : Number.NaN;
  };
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? Number.NaN);
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const socketErrors = socket ? socket.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  return {
    requestsPerSecond: rps,
    p50Ms: percentile("50"),
    p99Ms: percentile("99"),
    requests,
    errors: non2xx + socketErrors,
  };
}
