/**
 * Summaries of the proxy benchmark's runs, the aligned text table it prints, and the Markdown and
 * JSON it writes to bench/results/.
 */
import type { StartupResult } from "./startup.ts";
import type { WrkResult } from "./wrk.ts";

/** One wrk (or h2load) run of one target, with what the processes used meanwhile. */
export interface Run {
  round: number;
  connections: number;
  result: WrkResult;
  /** CPU seconds (user + system, every thread and child) of the proxy; undefined for direct rows. */
  proxyCpuS?: number;
  /** CPU seconds of the upstream processes (all of them, loaded or not). */
  upstreamCpuS: number;
  /** Connections the upstreams accepted during the run; undefined where not counted (gRPC). */
  newUpstreamConnections?: number;
}

export interface Row {
  key: string;
  name: string;
  /** Why there are no figures ("not installed", a start-up error). */
  unavailable?: string;
  runs: Run[];
  /** Runs that produced no figures (wrk failed, a process died): the row is incomplete. */
  failed?: { round: number; connections: number; error: string }[];
}

export interface Summary {
  rps: number;
  p50Ms: number;
  p99Ms: number;
  p99At8Ms: number;
  errors: number;
  proxyUsPerReq?: number;
  upstreamUsPerReq: number;
  newConns64?: number;
  newConns8?: number;
}

/**
 * Whether a row's figures can be compared with the others': not with failed requests — a refusal
 * is answered faster than a proxied request, so its req/s and CPU per request would flatter it.
 */
export function comparable(summary: Summary): boolean {
  return summary.errors === 0;
}

/**
 * Whether a census window (bench/census.ts: the heap's objects by type counted before and after
 * `requests` requests, as differences) saw no collection: a collection frees garbage, so some
 * type's count falls — or, early in the window, every count ends positive but short. Bun.serve
 * makes one `Request` per request and nothing keeps it, so fewer than `requests` of them tells
 * the second case.
 */
export function censusWindowIsClean(counts: Record<string, number>, requests: number): boolean {
  return (counts.Request ?? 0) >= requests && Object.values(counts).every((n) => n > -10);
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);
const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);

export function summarize(row: Row, high: number, low: number): Summary | undefined {
  const at = (c: number) => row.runs.filter((r) => r.connections === c);
  const [h, l] = [at(high), at(low)];
  if (h.length === 0) return undefined;
  const requests = sum(h.map((r) => r.result.requests));
  const perReq = (cpu: (r: Run) => number | undefined) => {
    const values = h.map(cpu);
    if (values.some((v) => v === undefined)) return undefined;
    return requests > 0 ? (sum(values as number[]) / requests) * 1e6 : Number.NaN;
  };
  const conns = (runs: Run[]) =>
    runs.some((r) => r.newUpstreamConnections === undefined)
      ? undefined
      : mean(runs.map((r) => r.newUpstreamConnections ?? 0));
  const summary: Summary = {
    rps: mean(h.map((r) => r.result.requestsPerSecond)),
    p50Ms: mean(h.map((r) => r.result.p50Ms)),
    p99Ms: mean(h.map((r) => r.result.p99Ms)),
    p99At8Ms: mean(l.map((r) => r.result.p99Ms)),
    errors: sum(row.runs.map((r) => r.result.errors)),
    upstreamUsPerReq: perReq((r) => r.upstreamCpuS) ?? Number.NaN,
  };
  const proxyUs = perReq((r) => r.proxyCpuS);
  if (proxyUs !== undefined) summary.proxyUsPerReq = proxyUs;
  const [c64, c8] = [conns(h), conns(l)];
  if (c64 !== undefined) summary.newConns64 = c64;
  if (c8 !== undefined) summary.newConns8 = c8;
  return summary;
}

export interface Meta {
  date: string;
  commit: string;
  cores: number;
  bun: string;
  tools: Record<string, string>;
  seconds: number;
  rounds: number;
  high: number;
  low: number;
  pinning: string;
  loadAverageBefore: string;
  loadAverageAfter: string;
  notes: string[];
}

const fmt = (n: number | undefined, digits = 0) => (n === undefined || Number.isNaN(n) ? "–" : n.toFixed(digits));

function tableCells(rows: Row[], meta: Meta): string[][] {
  const nginx = rows.find((r) => r.key === "nginx");
  const nginxRps = nginx ? summarize(nginx, meta.high, meta.low)?.rps : undefined;
  const header = [
    "target",
    "req/s",
    "p50 ms",
    "p99 ms",
    `p99@${meta.low} ms`,
    "errors",
    "× nginx",
    "proxy µs/req",
    "upstream µs/req",
    `new upstream conns @${meta.high}/@${meta.low}`,
  ];
  const body = rows.map((row) => {
    const s = summarize(row, meta.high, meta.low);
    if (!s) return [row.name, row.unavailable ?? "no figures", "", "", "", "", "", "", "", ""];
    const ok = comparable(s);
    const failed = row.failed?.length ?? 0;
    return [
      failed ? `${row.name} (incomplete: ${failed} of ${row.runs.length + failed} runs failed)` : row.name,
      fmt(s.rps),
      fmt(s.p50Ms, 2),
      fmt(s.p99Ms, 2),
      fmt(s.p99At8Ms, 2),
      String(s.errors),
      nginxRps && ok ? `${(s.rps / nginxRps).toFixed(2)}×` : "–",
      ok ? fmt(s.proxyUsPerReq) : "–",
      fmt(s.upstreamUsPerReq),
      s.newConns64 === undefined ? "–" : `${fmt(s.newConns64)}/${fmt(s.newConns8)}`,
    ];
  });
  return [header, ...body];
}

/** The aligned text table printed at the end of `make bench`. */
export function formatTable(rows: Row[], meta: Meta): string {
  const cells = tableCells(rows, meta);
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((r) => r[i]!.length)));
  return cells
    .map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  "))
    .join("\n");
}

export function formatStartup(s: StartupResult): string {
  return [
    `compiled gateway (${s.binary}), lean config:`,
    `  start (exec → first proxied 2xx): ${s.medianStartMs.toFixed(0)} ms median of ${s.startMs.map((m) => m.toFixed(0)).join(", ")}`,
    `  RSS: idle ${s.idleRssMiB.toFixed(1)} MiB (median of ${s.idleRssEachMiB.map((m) => m.toFixed(1)).join(", ")}), under ${64}-connection load ${s.loadRssMiB.toFixed(1)} MiB (${s.load.requestsPerSecond.toFixed(0)} req/s), 2 s after ${s.afterRssMiB.toFixed(1)} MiB, 5 s after ${s.after5sRssMiB.toFixed(1)} MiB, 32 s after (quiet: compiled code dropped) ${s.afterQuietRssMiB.toFixed(1)} MiB`,
  ].join("\n");
}

export function formatMeta(meta: Meta): string {
  return [
    `${meta.date}, commit ${meta.commit}, ${meta.cores} CPUs, Bun ${meta.bun}; ${Object.entries(meta.tools)
      .map(([k, v]) => `${k} ${v}`)
      .join(", ")}`,
    `wrk -t1 -c${meta.high} (and -c${meta.low}) --latency, ${meta.seconds} s per run, ${meta.rounds} interleaved rounds; ${meta.pinning}`,
    `load average before ${meta.loadAverageBefore}, after ${meta.loadAverageAfter}`,
  ].join("\n");
}

export function markdown(rows: Row[], meta: Meta, startup: StartupResult | string | undefined): string {
  const cells = tableCells(rows, meta);
  const line = (r: string[]) => `| ${r.join(" | ")} |`;
  const raw = rows.flatMap((row) =>
    row.runs.map(
      (r) =>
        `| ${row.name} | ${r.round} | ${r.connections} | ${r.result.requestsPerSecond.toFixed(0)} | ${r.result.p50Ms.toFixed(2)} | ${r.result.p99Ms.toFixed(2)} | ${r.result.requests} | ${r.result.errors} | ${fmt(r.proxyCpuS, 2)} | ${r.upstreamCpuS.toFixed(2)} | ${r.newUpstreamConnections ?? "–"} |`,
    ),
  );
  return [
    `# Proxy benchmark — ${meta.date} (${meta.commit})`,
    "",
    ...formatMeta(meta)
      .split("\n")
      .map((l) => `${l}  `),
    "",
    line(cells[0]!),
    line(cells[0]!.map((_, i) => (i === 0 ? "---" : "---:"))),
    ...cells.slice(1).map(line),
    "",
    ...(meta.notes.length ? [...meta.notes.map((n) => `- ${n}`), ""] : []),
    "## Compiled gateway",
    "",
    startup === undefined
      ? "not measured"
      : typeof startup === "string"
        ? startup
        : ["```text", formatStartup(startup), "```"].join("\n"),
    "",
    "## Every run",
    "",
    "| target | round | conns | req/s | p50 ms | p99 ms | requests | errors | proxy CPU s | upstream CPU s | new upstream conns |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ...raw,
    "",
  ].join("\n");
}
