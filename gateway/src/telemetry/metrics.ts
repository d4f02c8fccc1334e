/**
 * The gateway's Prometheus metrics, served on the admin port's /metrics:
 *
 * - requests served (lib/telemetry: http_server_* by route name, method, status code);
 * - every try sent to an upstream endpoint, counted and timed as it happens under the verdict
 *   upstream/dispatch.ts gave it (./index.ts calls `attempt()` from its try hooks):
 *   portico_gateway_upstream_requests_total{outcome}, portico_gateway_upstream_request_duration_seconds;
 * - the upstreams' state — breaker, health, ejection, load, retries — and the rate limiter's
 *   decisions, Redis latency and mode, read from their own objects when Prometheus scrapes. Those
 *   modules keep plain numbers and know nothing of Prometheus; nothing here runs per request;
 * - each upstream's client certificate (mutual TLS): its expiry and reloads, in the same metrics
 *   as the HTTPS listener's certificate (lib/tls-listener.ts), `certificate="upstream-client"`.
 */
import type { Registry } from "prom-client";
import { HttpServerMetrics } from "../../../lib/telemetry/metrics.ts";
import { exportCertificates } from "../../../lib/tls-listener.ts";
import {
  type CollectedValue,
  collectedMetric,
  counterView,
  histogramValues,
  histogramView,
  LATENCY_BUCKETS,
  type Series,
  SeriesSet,
} from "../../../lib/telemetry/series.ts";
import type { RateLimiter } from "../ratelimit/limiter.ts";
import { REDIS_LATENCY_BUCKETS_MS } from "../ratelimit/stats.ts";
import type { Endpoint } from "../upstream/endpoint.ts";
import type { Verdict } from "../upstream/outcome.ts";
import type { Upstream } from "../upstream/upstream.ts";

/** What the metrics read from the gateway at scrape time: its current upstreams (they change on reload). */
export interface UpstreamSource {
  readonly upstreams: ReadonlyMap<string, Upstream>;
}

const BREAKER_STATE = { closed: 0, "half-open": 1, open: 2 } as const;
const REDIS_BUCKETS_S = REDIS_LATENCY_BUCKETS_MS.map((ms) => ms / 1000);

/** The series one endpoint's tries are recorded in, found once per endpoint. */
interface EndpointSeries {
  latency: Series;
  outcomes: Map<Verdict, Series>;
}

export class GatewayMetrics {
  readonly http: HttpServerMetrics;
  readonly #attempts = new SeriesSet(["upstream", "endpoint", "outcome"]);
  readonly #latency = new SeriesSet(["upstream", "endpoint"], LATENCY_BUCKETS);
  /** Endpoint objects live as long as discovery keeps them; so does their entry here. */
  readonly #byEndpoint = new WeakMap<Endpoint, EndpointSeries>();
  #gateway: UpstreamSource | undefined;

  /**
   * Made before the gateway, whose telemetry counts into it; `watch(gateway)` adds the upstreams'
   * state once the gateway exists.
   */
  constructor(
    readonly registry: Registry,
    rateLimiter?: RateLimiter,
  ) {
    this.http = new HttpServerMetrics(registry);
    const prune = () => this.#pruneGoneEndpoints();
    counterView(
      registry,
      "portico_gateway_upstream_requests_total",
      "Tries sent to an upstream endpoint (retries included), by outcome: ok (it answered, 4xx included), connect, refused (gRPC REFUSED_STREAM, twice), unavailable (502/503/504, reset, gRPC UNAVAILABLE), timeout, failure (500, gRPC INTERNAL…).",
      this.#attempts,
      prune,
    );
    histogramView(
      registry,
      "portico_gateway_upstream_request_duration_seconds",
      "Time from sending a try to an upstream endpoint to its response headers or gRPC reply, in seconds.",
      this.#latency,
      prune,
    );
    if (rateLimiter) registerRateLimitMetrics(registry, rateLimiter);
  }

  /** Exports the state of `gateway`'s upstreams (read at scrape time: they change on reload). */
  watch(gateway: UpstreamSource): void {
    if (this.#gateway) throw new Error("GatewayMetrics already watch a gateway");
    this.#gateway = gateway;
    this.#registerUpstreamState(this.registry, gateway);
  }

  /** Records one try on `endpoint` of `upstream`, with the verdict dispatch gave it. */
  attempt(upstream: string, endpoint: Endpoint, verdict: Verdict, seconds: number): void {
    let series = this.#byEndpoint.get(endpoint);
    if (series === undefined)
      this.#byEndpoint.set(
        endpoint,
        (series = { latency: this.#latency.get(upstream, endpoint.address), outcomes: new Map() }),
      );
    series.latency.observe(seconds);
    let outcome = series.outcomes.get(verdict);
    if (outcome === undefined)
      series.outcomes.set(verdict, (outcome = this.#attempts.get(upstream, endpoint.address, verdict)));
    outcome.inc();
  }

  /** Series of endpoints discovery has dropped go with them (pod IPs change on every rollout). */
  #pruneGoneEndpoints(): void {
    if (!this.#gateway) return;
    const live = new Set<string>();
    for (const u of this.#gateway.upstreams.values()) for (const e of u.endpoints) live.add(`${u.name} ${e.address}`);
    const keep = (labels: Readonly<Record<string, string>>) => live.has(`${labels.upstream} ${labels.endpoint}`);
    this.#attempts.retain(keep);
    this.#latency.retain(keep);
  }

  #registerUpstreamState(registry: Registry, gateway: UpstreamSource): void {
    const perEndpoint = (name: string, help: string, type: "gauge" | "counter", value: (e: Endpoint) => number) =>
      collectedMetric(registry, name, help, type, () => {
        const values: CollectedValue[] = [];
        for (const u of gateway.upstreams.values()) {
          for (const e of u.endpoints)
            values.push({ labels: { upstream: u.name, endpoint: e.address }, value: value(e) });
        }
        return values;
      });
    const perUpstream = (name: string, help: string, type: "gauge" | "counter", value: (u: Upstream) => number) =>
      collectedMetric(registry, name, help, type, () =>
        [...gateway.upstreams.values()].map((u) => ({ labels: { upstream: u.name }, value: value(u) })),
      );

    perUpstream(
      "portico_gateway_upstream_endpoints",
      "Endpoints discovery currently knows for the upstream.",
      "gauge",
      (u) => u.endpoints.length,
    );
    perEndpoint(
      "portico_gateway_upstream_endpoint_available",
      "1 if the balancer may pick this endpoint now (healthy, not ejected, breaker closed or probing), else 0.",
      "gauge",
      (e) => (e.available ? 1 : 0),
    );
    perEndpoint(
      "portico_gateway_upstream_endpoint_healthy",
      "1 if the active health checks last found this endpoint healthy, 0 if unhealthy or not yet checked.",
      "gauge",
      (e) => (e.health === "healthy" ? 1 : 0),
    );
    perEndpoint(
      "portico_gateway_upstream_breaker_state",
      "Circuit breaker of the endpoint: 0 closed, 1 half-open, 2 open.",
      "gauge",
      (e) => BREAKER_STATE[e.breakerState] ?? 0,
    );
    perEndpoint(
      "portico_gateway_upstream_ejected",
      "1 while outlier detection keeps the endpoint out of the balancer, else 0.",
      "gauge",
      (e) => (e.ejected ? 1 : 0),
    );
    perEndpoint(
      "portico_gateway_upstream_ejections_total",
      "Times outlier detection ejected the endpoint.",
      "counter",
      (e) => e.ejections,
    );
    perEndpoint(
      "portico_gateway_upstream_in_flight",
      "Tries sent to the endpoint and not yet answered.",
      "gauge",
      (e) => e.inflight,
    );
    perEndpoint(
      "portico_gateway_upstream_latency_ewma_seconds",
      "The balancer's latency figure for the endpoint (an EWMA, failures weighted up), in seconds.",
      "gauge",
      (e) => e.ewmaMs / 1000,
    );
    // Canaries (canary/controller.ts): one series per upstream with a canary in progress.
    const canaries = () =>
      [...gateway.upstreams.values()].flatMap((u) =>
        u.canary?.active && u.canary.version ? [{ upstream: u.name, canary: u.canary, version: u.canary.version }] : [],
      );
    collectedMetric(
      registry,
      "portico_gateway_canary_weight_percent",
      "Percent of the upstream's requests sent to the canary version now (0 after a failed analysis, 100 once promoted).",
      "gauge",
      () => canaries().map((c) => ({ labels: { upstream: c.upstream, version: c.version }, value: c.canary.weight })),
    );
    collectedMetric(
      registry,
      "portico_gateway_canary_analyses_total",
      "Canary steps judged on this gateway, by result: passed, failed (a failure sets the weight to 0).",
      "counter",
      () =>
        [...gateway.upstreams.values()].flatMap((u) =>
          u.canary
            ? [
                { labels: { upstream: u.name, result: "passed" }, value: u.canary.judged.passed },
                { labels: { upstream: u.name, result: "failed" }, value: u.canary.judged.failed },
              ]
            : [],
        ),
    );
    perUpstream(
      "portico_gateway_upstream_retries_total",
      "Retries sent to another endpoint after a failed try.",
      "counter",
      (u) => u.retries.attempted,
    );
    perUpstream(
      "portico_gateway_upstream_retries_budget_exhausted_total",
      "Retries not sent because the route's retry budget was spent.",
      "counter",
      (u) => u.retries.budgetExhausted,
    );
    // The client certificate the gateway presents to each upstream with mutual TLS, and the CA it
    // verifies the upstream by: they expire like the edge certificate does, and every request to
    // the upstream fails when one has.
    exportCertificates(registry, () =>
      [...gateway.upstreams.values()].flatMap((u) => {
        if (!u.tls) return [];
        const notAfter = u.tls.notAfter;
        const ca = { labels: { certificate: "upstream-ca", upstream: u.name }, notAfter: u.tls.caNotAfter };
        return notAfter
          ? [{ labels: { certificate: "upstream-client", upstream: u.name }, notAfter, reloads: u.tls.reloads }, ca]
          : [ca];
      }),
    );
  }
}

/** The rate limiter's figures (ratelimit/stats.ts), read at scrape time. */
function registerRateLimitMetrics(registry: Registry, limiter: RateLimiter): void {
  const { stats } = limiter;
  collectedMetric(
    registry,
    "portico_gateway_ratelimit_decisions_total",
    "Rate-limit decisions, by route and decision (allowed, denied).",
    "counter",
    () =>
      [...stats.decisions].flatMap(([route, counts]) => [
        { labels: { route, decision: "allowed" }, value: counts.allowed },
        { labels: { route, decision: "denied" }, value: counts.denied },
      ]),
  );
  collectedMetric(
    registry,
    "portico_gateway_ratelimit_fallback_decisions_total",
    "Rate-limit decisions taken by the fallback while Redis was unreachable (also counted in decisions_total).",
    "counter",
    () => [...stats.decisions].map(([route, counts]) => ({ labels: { route }, value: counts.fallback })),
  );
  collectedMetric(
    registry,
    "portico_gateway_ratelimit_redis_duration_seconds",
    "Duration of the rate limiter's Redis calls (the GCRA script and health probes), in seconds.",
    "histogram",
    () =>
      histogramValues(
        "portico_gateway_ratelimit_redis_duration_seconds",
        {},
        REDIS_BUCKETS_S,
        stats.redis.buckets,
        stats.redis.totalMs / 1000,
        stats.redis.calls,
      ),
  );
  collectedMetric(
    registry,
    "portico_gateway_ratelimit_redis_calls_total",
    "The rate limiter's Redis calls, by result (ok, error, timeout).",
    "counter",
    () => {
      const { calls, errors, timeouts } = stats.redis;
      return [
        { labels: { result: "ok" }, value: calls - errors - timeouts },
        { labels: { result: "error" }, value: errors },
        { labels: { result: "timeout" }, value: timeouts },
      ];
    },
  );
  collectedMetric(
    registry,
    "portico_gateway_ratelimit_fallback_entries_total",
    "Times the rate limiter lost Redis and switched to its fallback.",
    "counter",
    () => [{ labels: {}, value: stats.fallbackEntries }],
  );
  collectedMetric(
    registry,
    "portico_gateway_ratelimit_mode",
    "1 for the rate limiter's current mode: redis (shared budget), fallback (Redis unreachable) or memory (no Redis configured).",
    "gauge",
    () => {
      const mode = limiter.mode();
      return (["redis", "fallback", "memory"] as const).map((m) => ({
        labels: { mode: m },
        value: m === mode ? 1 : 0,
      }));
    },
  );
}
