/**
 * The direct gRPC baseline: h2load sends one pre-encoded unary call (a length-prefixed protobuf
 * message) over h2c straight to rpcapp, one stream in flight per connection, as wrk does for HTTP.
 * h2load prints no percentiles; its per-request log (--log-file) gives them.
 */
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pinned, spawn, tempDir } from "./procs.ts";
import type { WrkResult } from "./wrk.ts";

/** userverify.VerifyRequest { id: 121, token: "a$$" } in the gRPC wire frame. */
export function verifyRequestFrame(): Uint8Array {
  const token = new TextEncoder().encode("a$$");
  const message = Uint8Array.from([0x08, 121, 0x12, token.length, ...token]); // field 1 varint, field 2 bytes
  return Uint8Array.from([0, 0, 0, 0, message.length, ...message]); // uncompressed, big-endian length
}

export interface H2loadOptions {
  url: string;
  connections: number;
  durationS: number;
  cpu?: number;
}

export async function runH2loadGrpc(opts: H2loadOptions): Promise<WrkResult> {
  const dir = tempDir("h2load");
  const [bodyFile, logFile] = [join(dir, "request.bin"), join(dir, "requests.tsv")];
  writeFileSync(bodyFile, verifyRequestFrame());
  const argv = [
    "h2load",
    "-t1",
    `-c${opts.connections}`,
    "-m1",
    `-D${opts.durationS}`,
    `-d${bodyFile}`,
    "-Hcontent-type: application/grpc",
    "-Hte: trailers",
    `--log-file=${logFile}`,
    opts.url,
  ];
  const proc = spawn("h2load", pinned(argv, opts.cpu), { stdout: "pipe", stderr: "pipe" });
  const [out, err] = await Promise.all([
    new Response(proc.stdout as ReadableStream).text(),
    new Response(proc.stderr as ReadableStream).text(),
  ]);
  try {
    if ((await proc.exited) !== 0) throw new Error(`h2load failed: ${err || out}`);
    return parseH2load(out, readFileSync(logFile, "utf8"));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * h2load's summary and per-request log. Errors: non-2xx responses and requests that failed or
 * timed out. (gRPC statuses travel in trailers, which h2load does not read: the request is valid,
 * so rpcapp answers OK.)
 */
export function parseH2load(out: string, log: string): WrkResult {
  const rps = Number(/finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(out)?.[1] ?? Number.NaN);
  const counts =
    /requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(
      out,
    );
  const durations: number[] = [];
  let non2xx = 0;
  for (const line of log.split("\n")) {
    const [, status, micros] = line.split("\t");
    if (micros === undefined) continue;
    if (!status?.startsWith("2")) non2xx++;
    durations.push(Number(micros) / 1000);
  }
  durations.sort((a, b) => a - b);
  const at = (q: number) =>
    durations.length ? durations[Math.min(durations.length - 1, Math.floor(q * durations.length))]! : Number.NaN;
  return {
    requestsPerSecond: rps,
    p50Ms: at(0.5),
    p99Ms: at(0.99),
    requests: Number(counts?.[2] ?? durations.length),
    // h2load's "failed" (done but not succeeded) covers bad statuses, errors and timeouts alike.
    errors: Math.max(Number(counts?.[4] ?? 0), non2xx),
  };
}
