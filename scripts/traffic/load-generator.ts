/**
 * Steady traffic through a gateway, counting every failure: what `make rollout`, `make rollback`
 * and `make load` drive while the stack changes under it, and what the rolling-upgrade test
 * measures. Open loop — requests start at a fixed rate whatever the latency, as real clients do,
 * with a cap on requests in flight — over keep-alive connections (Bun's fetch pool), so the
 * keep-alive races of a replica going away are exercised, not avoided.
 *
 * A request fails when it gets no response (connection refused or reset, timeout) or a status
 * other than 2xx. Nothing is retried here: a retry would hide the failure the check looks for.
 * Each response's versions are counted — `x-gateway-version` (the gateway) and
 * `x-service-version` (the service behind the route) — so a rollout shows up as two versions
 * side by side, then one.
 */

export interface RequestSpec {
  /** Names the route in the report ("projects", "verify"). */
  name: string;
  method: string;
  path: string;
  body?: unknown;
}

/** The seed's two requests (docs/design.md, "What the stack must do"): one to webapp over HTTP, one to rpcapp over gRPC. */
export const SEED_MIX: readonly RequestSpec[] = [
  { name: "projects", method: "POST", path: "/projects/", body: { title: "An awesome project" } },
  { name: "verify", method: "POST", path: "/verify/", body: { id: 121, token: "a$$" } },
];

export interface LoadOptions {
  /** Requests started per second. */
  rps: number;
  /** Never more than this many unanswered at once; a start that would exceed it is counted as skipped. */
  maxInFlight?: number;
  timeoutMs?: number;
  /** Sent in turn. */
  mix?: readonly RequestSpec[];
}

export interface LoadReport {
  sent: number;
  ok: number;
  failed: number;
  /** Starts skipped because `maxInFlight` requests were unanswered (the target is too slow). */
  skipped: number;
  durationMs: number;
  /** Failure kind ("HTTP 502", "ECONNRESET", "timeout") → count. */
  failures: Record<string, number>;
  /** The first few failures, with what identifies them. */
  examples: string[];
  /** `x-gateway-version` → count. */
  gatewayVersions: Record<string, number>;
  /** Route name → `x-service-version` → count. */
  serviceVersions: Record<string, Record<string, number>>;
  /** Route name → `x-served-by` → count. */
  servedBy: Record<string, Record<string, number>>;
  /** Of successful requests, in ms. */
  latency: { p50: number; p99: number; max: number };
}

const MAX_EXAMPLES = 5;
const TICK_MS = 5;

export class LoadGenerator {
  readonly #base: string;
  readonly #rps: number;
  readonly #maxInFlight: number;
  readonly #timeoutMs: number;
  readonly #mix: readonly { spec: RequestSpec; body: string | undefined }[];
  #timer: ReturnType<typeof setInterval> | undefined;
  #startedAt = 0;
  #stoppedAt = 0;
  #due = 0;
  #inFlight = new Set<Promise<void>>();
  #latencies: number[] = [];
  readonly #report: Omit<LoadReport, "durationMs" | "latency"> = {
    sent: 0,
    ok: 0,
    failed: 0,
    skipped: 0,
    failures: {},
    examples: [],
    gatewayVersions: {},
    serviceVersions: {},
    servedBy: {},
  };

  constructor(baseUrl: string, opts: LoadOptions) {
    if (!(opts.rps > 0)) throw new Error(`the request rate must be above 0, not ${opts.rps}`);
    this.#base = baseUrl.replace(/\/+$/, "");
    this.#rps = opts.rps;
    this.#maxInFlight = opts.maxInFlight ?? 256;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#mix = (opts.mix ?? SEED_MIX).map((spec) => ({
      spec,
      body: spec.body === undefined ? undefined : JSON.stringify(spec.body),
    }));
  }

  get running(): boolean {
    return this.#timer !== undefined;
  }

  start(): void {
    if (this.#timer) return;
    this.#startedAt = performance.now();
    // setInterval drifts under load; launching what is due since the start keeps the rate exact.
    this.#timer = setInterval(() => this.#tick(), TICK_MS);
  }

  /** The figures so far (requests in flight not included). */
  snapshot(): LoadReport {
    const end = this.#stoppedAt || performance.now();
    return {
      ...structuredClone(this.#report),
      durationMs: Math.round(end - this.#startedAt),
      latency: percentiles(this.#latencies),
    };
  }

  /** Stops starting requests, waits for those in flight, and returns the report. */
  async stop(): Promise<LoadReport> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    this.#stoppedAt = performance.now();
    await Promise.all([...this.#inFlight]);
    return this.snapshot();
  }

  #tick(): void {
    const due = Math.floor(((performance.now() - this.#startedAt) / 1000) * this.#rps);
    while (this.#due < due) {
      this.#due++;
      if (this.#inFlight.size >= this.#maxInFlight) {
        this.#report.skipped++;
        continue;
      }
      const request = this.#send(this.#mix[this.#due % this.#mix.length]!);
      this.#inFlight.add(request);
      void request.finally(() => this.#inFlight.delete(request));
    }
  }

  async #send({ spec, body }: { spec: RequestSpec; body: string | undefined }): Promise<void> {
    const r = this.#report;
    r.sent++;
    const requestId = crypto.randomUUID();
    const sentAt = performance.now();
    try {
      const res = await fetch(this.#base + spec.path, {
        method: spec.method,
        headers: { "content-type": "application/json", "x-request-id": requestId },
        body,
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      const text = await res.text();
      count(r.gatewayVersions, res.headers.get("x-gateway-version") ?? "(none)");
      if (res.status >= 200 && res.status < 300) {
        r.ok++;
        this.#latencies.push(performance.now() - sentAt);
        count((r.serviceVersions[spec.name] ??= {}), res.headers.get("x-service-version") ?? "(none)");
        count((r.servedBy[spec.name] ??= {}), res.headers.get("x-served-by") ?? "(none)");
        return;
      }
      this.#fail(
        `HTTP ${res.status}${res.status === 429 ? " (rate limited: lower LOAD_RPS)" : ""}`,
        `${spec.method} ${spec.path} → ${res.status} ${text.slice(0, 160)} (x-request-id ${requestId}, gateway ${res.headers.get("x-gateway") ?? "?"})`,
      );
    } catch (err) {
      const e = err as Error & { code?: string };
      const kind = e.name === "TimeoutError" ? `timeout (${this.#timeoutMs} ms)` : (e.code ?? e.name);
      this.#fail(kind, `${spec.method} ${spec.path} → ${kind}: ${e.message} (x-request-id ${requestId})`);
    }
  }

  #fail(kind: string, example: string): void {
    const r = this.#report;
    r.failed++;
    count(r.failures, kind);
    if (r.examples.length < MAX_EXAMPLES) r.examples.push(example);
  }
}

function count(into: Record<string, number>, key: string): void {
  into[key] = (into[key] ?? 0) + 1;
}

function percentiles(values: number[]): LoadReport["latency"] {
  if (values.length === 0) return { p50: 0, p99: 0, max: 0 };
  const sorted = Float64Array.from(values).sort();
  const at = (q: number) => Math.round(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]! * 10) / 10;
  return { p50: at(0.5), p99: at(0.99), max: Math.round(sorted[sorted.length - 1]! * 10) / 10 };
}

/** `abc123 ×310, def456 ×290`, most frequent first. */
export function formatCounts(counts: Record<string, number>): string {
  const entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
  return entries.length === 0 ? "none" : entries.map(([k, n]) => `${k} ×${n}`).join(", ");
}

/** The report as a few lines a person reads. */
export function formatReport(r: LoadReport): string {
  const pct = r.sent === 0 ? "0" : ((r.failed / r.sent) * 100).toFixed(r.failed === 0 ? 0 : 3);
  const lines = [
    `requests   ${r.sent} sent in ${(r.durationMs / 1000).toFixed(1)} s (${(r.sent / Math.max(1, r.durationMs / 1000)).toFixed(0)}/s): ${r.ok} ok, ${r.failed} failed (${pct} %)${r.skipped ? `, ${r.skipped} not sent (${r.skipped} starts found the in-flight cap full)` : ""}`,
    `latency    p50 ${r.latency.p50} ms, p99 ${r.latency.p99} ms, max ${r.latency.max} ms`,
    `gateway    x-gateway-version: ${formatCounts(r.gatewayVersions)}`,
    ...Object.entries(r.serviceVersions).map(
      ([route, versions]) => `${route.padEnd(10)} x-service-version: ${formatCounts(versions)}`,
    ),
  ];
  if (r.failed > 0) {
    lines.push(`failures   ${formatCounts(r.failures)}`);
    for (const example of r.examples) lines.push(`  e.g. ${example}`);
  }
  return lines.join("\n");
}
