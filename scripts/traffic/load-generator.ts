/**
 * Steady traffic through a gateway, counting every failure: what `make rollout`, `make rollback`
 * and `make load` drive while the stack changes under it, and what the rolling-upgrade test
 * measures. Open loop — requests start at a fixed rate whatever the latency, as real clients do,
 * with a cap on requests in flight — from two kinds of client side by side:
 *
 * - keep-alive clients (Bun's fetch pool), so the keep-alive races of a replica going away are
 *   exercised: a request written on a pooled connection the server is closing;
 * - clients that open a new connection for each request (`newConnectionRps`; `keepalive: false`),
 *   as scripts, health checkers and clients without a pool do, so the listener's races are
 *   exercised too: a connection the kernel queued to a gateway whose listener then closes is
 *   reset (docs/operations.md, "Replacing a gateway locally").
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

/**
 * What the tools that run for minutes send — `make load`, `make rollout`, `make rollback`, the
 * canaries: the seed's two routes, with webapp read instead of written. webapp keeps every project
 * it creates, up to MAX_PROJECTS (docs/services.md), so minutes of creates at hundreds per second
 * would fill a persistent store within a few runs, and every create after that — `make smoke`'s
 * included — would fail with 507.
 */
export const TRAFFIC_MIX: readonly RequestSpec[] = [
  { name: "projects", method: "GET", path: "/projects/?limit=10" },
  { name: "verify", method: "POST", path: "/verify/", body: { id: 121, token: "a$$" } },
];

export interface LoadOptions {
  /** Requests started per second over keep-alive connections. */
  rps: number;
  /** Requests started per second, each on a connection of its own (default 0: none). */
  newConnectionRps?: number;
  /** Never more than this many unanswered at once, both kinds together; a start that would exceed it is counted as skipped. */
  maxInFlight?: number;
  timeoutMs?: number;
  /** Sent in turn. */
  mix?: readonly RequestSpec[];
  /** For an https base URL: the CA (PEM) the gateway's certificate must chain to. */
  caPem?: string;
}

export type ClientKind = "keepAlive" | "newConnection";

/** One kind of client's share of the report. */
export interface ClientFigures {
  sent: number;
  ok: number;
  failed: number;
}

export interface LoadReport {
  sent: number;
  ok: number;
  failed: number;
  /** Starts skipped because `maxInFlight` requests were unanswered (the target is too slow). */
  skipped: number;
  durationMs: number;
  /** The figures of each kind of client (see the file comment). */
  clients: Record<ClientKind, ClientFigures>;
  /** Failure kind ("HTTP 502", "ECONNRESET", "timeout"; "… (new connection)" from those clients) → count. */
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

/** How each kind of client sends: `keepalive: false` makes Bun's fetch open and close a connection per request. */
const CLIENT_INIT: Record<ClientKind, RequestInit> = { keepAlive: {}, newConnection: { keepalive: false } };

export class LoadGenerator {
  readonly #base: string;
  readonly #rps: number;
  readonly #newConnectionRps: number;
  readonly #maxInFlight: number;
  readonly #timeoutMs: number;
  readonly #mix: readonly { spec: RequestSpec; body: string | undefined }[];
  #timer: ReturnType<typeof setInterval> | undefined;
  #startedAt = 0;
  #stoppedAt = 0;
  #due = 0;
  #dueNew = 0;
  #inFlight = new Set<Promise<void>>();
  #latencies: number[] = [];
  readonly #report: Omit<LoadReport, "durationMs" | "latency"> = {
    sent: 0,
    ok: 0,
    failed: 0,
    skipped: 0,
    clients: { keepAlive: { sent: 0, ok: 0, failed: 0 }, newConnection: { sent: 0, ok: 0, failed: 0 } },
    failures: {},
    examples: [],
    gatewayVersions: {},
    serviceVersions: {},
    servedBy: {},
  };

  readonly #tls: { tls?: { ca: string } };

  constructor(baseUrl: string, opts: LoadOptions) {
    if (!(opts.rps > 0)) throw new Error(`the request rate must be above 0, not ${opts.rps}`);
    this.#base = baseUrl.replace(/\/+$/, "");
    this.#rps = opts.rps;
    this.#newConnectionRps = opts.newConnectionRps ?? 0;
    if (!(this.#newConnectionRps >= 0))
      throw new Error(`the new-connection rate must be 0 or more, not ${opts.newConnectionRps}`);
    this.#maxInFlight = opts.maxInFlight ?? 256;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#tls = opts.caPem === undefined ? {} : { tls: { ca: opts.caPem } };
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
    const seconds = (performance.now() - this.#startedAt) / 1000;
    const due = Math.floor(seconds * this.#rps);
    while (this.#due < due) {
      this.#due++;
      this.#launch(this.#due, "keepAlive");
    }
    const dueNew = Math.floor(seconds * this.#newConnectionRps);
    while (this.#dueNew < dueNew) {
      this.#dueNew++;
      this.#launch(this.#dueNew, "newConnection");
    }
  }

  #launch(n: number, client: ClientKind): void {
    if (this.#inFlight.size >= this.#maxInFlight) {
      this.#report.skipped++;
      return;
    }
    const request = this.#send(this.#mix[n % this.#mix.length]!, client);
    this.#inFlight.add(request);
    void request.finally(() => this.#inFlight.delete(request));
  }

  async #send({ spec, body }: { spec: RequestSpec; body: string | undefined }, client: ClientKind): Promise<void> {
    const r = this.#report;
    const figures = r.clients[client];
    r.sent++;
    figures.sent++;
    const requestId = crypto.randomUUID();
    const sentAt = performance.now();
    const suffix = client === "newConnection" ? " (new connection)" : "";
    try {
      const res = await fetch(this.#base + spec.path, {
        ...CLIENT_INIT[client],
        ...this.#tls,
        method: spec.method,
        headers: { "content-type": "application/json", "x-request-id": requestId },
        body,
        signal: AbortSignal.timeout(this.#timeoutMs),
      });
      const text = await res.text();
      count(r.gatewayVersions, res.headers.get("x-gateway-version") ?? "(none)");
      if (res.status >= 200 && res.status < 300) {
        r.ok++;
        figures.ok++;
        this.#latencies.push(performance.now() - sentAt);
        count((r.serviceVersions[spec.name] ??= {}), res.headers.get("x-service-version") ?? "(none)");
        count((r.servedBy[spec.name] ??= {}), res.headers.get("x-served-by") ?? "(none)");
        return;
      }
      this.#fail(
        figures,
        `HTTP ${res.status}${res.status === 429 ? " (rate limited: lower LOAD_RPS)" : ""}${suffix}`,
        `${spec.method} ${spec.path} → ${res.status} ${text.slice(0, 160)} (x-request-id ${requestId}, gateway ${res.headers.get("x-gateway") ?? "?"})${suffix}`,
      );
    } catch (err) {
      const e = err as Error & { code?: string };
      const kind = e.name === "TimeoutError" ? `timeout (${this.#timeoutMs} ms)` : (e.code ?? e.name);
      this.#fail(
        figures,
        `${kind}${suffix}`,
        `${spec.method} ${spec.path} → ${kind}: ${e.message} (x-request-id ${requestId})${suffix}`,
      );
    }
  }

  #fail(figures: ClientFigures, kind: string, example: string): void {
    const r = this.#report;
    r.failed++;
    figures.failed++;
    count(r.failures, kind);
    // When, from the start of the load, so a failure can be set against what the stack was doing.
    const at = ((performance.now() - this.#startedAt) / 1000).toFixed(1);
    if (r.examples.length < MAX_EXAMPLES) r.examples.push(`${example} at +${at} s`);
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

function clientLine(c: ClientFigures): string {
  return `${c.sent} sent, ${c.failed} failed`;
}

/** The report as a few lines a person reads. */
export function formatReport(r: LoadReport): string {
  const pct = r.sent === 0 ? "0" : ((r.failed / r.sent) * 100).toFixed(r.failed === 0 ? 0 : 3);
  const lines = [
    `requests   ${r.sent} sent in ${(r.durationMs / 1000).toFixed(1)} s (${(r.sent / Math.max(1, r.durationMs / 1000)).toFixed(0)}/s): ${r.ok} ok, ${r.failed} failed (${pct} %)${r.skipped ? `, ${r.skipped} not sent (${r.skipped} starts found the in-flight cap full)` : ""}`,
    ...(r.clients.newConnection.sent > 0
      ? [
          `clients    keep-alive ${clientLine(r.clients.keepAlive)}; a new connection per request ${clientLine(r.clients.newConnection)}`,
        ]
      : []),
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
