/**
 * One replica of an upstream service, as the gateway sees it. Each endpoint owns what is
 * particular to it: its address, its connections (HTTP/1.1: a keep-alive pool, proxy/h1-client.ts;
 * gRPC: one channel — one HTTP/2 session —, grpc/h2-client.ts, so calls are balanced per request
 * instead of pinned to one connection), its circuit breaker, and its
 * load and health figures, which the
 * balancer reads on every pick and the admin API and metrics export as they are.
 */
import { GrpcChannel } from "../grpc/h2-client.ts";
import { H1Pool } from "../proxy/h1-client.ts";
import type { UpstreamTlsClient } from "./tls.ts";
import { type BreakerSettings, type BreakerState, EndpointBreaker } from "./breaker.ts";
import type { Verdict } from "./outcome.ts";

export type Health = "unknown" | "healthy" | "unhealthy";

/** A failed request counts as at least this slow in the latency EWMA, so a replica that fails fast does not attract traffic. */
const FAILURE_PENALTY_MS = 250;
/** Weight of one new latency sample in the EWMA. */
const EWMA_ALPHA = 0.3;
/**
 * One answer counts as at most this many times the current figure: a single hiccup (a GC pause,
 * a cold connection) moves the EWMA at most ×1.9, while a replica that stays slow is found
 * within a handful of answers (×1.9 each).
 */
const SPIKE_CAP = 4;
/** An idle endpoint's latency figure halves every this many ms, so one that was slow gets tried again. */
const IDLE_HALF_LIFE_MS = 1_000;
const IDLE_DECAY = Math.LN2 / IDLE_HALF_LIFE_MS;

export class Endpoint {
  /** Requests sent and not yet answered. */
  inflight = 0;
  /** Total requests sent (retries included). */
  requests = 0;
  /** Requests that failed (connection error, timeout, 5xx, gRPC UNAVAILABLE…). */
  failures = 0;
  /** Latency EWMA in ms (send → response headers / reply). */
  ewmaMs: number;
  /** performance.now() of the last latency sample and of the last request sent. */
  lastSampleAt = 0;
  lastRequestAt = 0;
  /** Active health checks' verdict ("unknown" until the first check). */
  health: Health = "unknown";
  checksPassedInRow = 0;
  checksFailedInRow = 0;
  /** Outlier ejection: out of the balancer's set until `ejectedUntil` (epoch ms). */
  ejected = false;
  ejectedUntil = 0;
  /** Ejections so far, and in a row (the latter sets the next ejection's length). */
  ejections = 0;
  ejectionStreak = 0;
  lastEjectedAt: number | null = null;
  lastReadmittedAt: number | null = null;
  /** Failed requests in a row, for outlier detection. */
  consecutiveFailures = 0;
  /** Whether the balancer may pick this endpoint now; recomputed on every state change. */
  available = true;
  /** performance.now() when it last left the balancer's set (0 while in it). */
  outSince = 0;
  /** Dropped from the upstream by discovery. */
  removed = false;
  /** The version the replica reports (`x-service-version`), from its health checks and answers. */
  version: string | undefined;
  readonly origin: string;
  /** Fed the verdict dispatch.ts gave each try (outcome.ts): it does not classify again. */
  readonly breaker: EndpointBreaker<Verdict>;
  #grpcChannel: GrpcChannel | undefined;
  #httpPool: H1Pool | undefined;
  #reportedBreakerState: BreakerState = "closed";

  constructor(
    /** host:port */
    readonly address: string,
    readonly protocol: "http" | "grpc",
    breakerSettings: BreakerSettings,
    /** Starting latency figure: the upstream's mean, so a new endpoint neither floods nor starves. */
    initialEwmaMs: number,
    private readonly onBreakerChange: (endpoint: Endpoint, state: BreakerState) => void = () => {},
    /** TLS to this endpoint (https, gRPC over TLS); undefined: plain text. */
    private readonly tls?: UpstreamTlsClient,
  ) {
    this.origin = `${tls ? "https" : "http"}://${address}`;
    this.ewmaMs = initialEwmaMs;
    this.lastSampleAt = performance.now();
    this.breaker = new EndpointBreaker<Verdict>(breakerSettings, isFailedTry, () => this.#breakerChanged());
  }

  /** The keep-alive pool of HTTP/1.1 connections to this endpoint (requests and health checks), created on first use. */
  httpPool(): H1Pool {
    const tls = this.tls;
    this.#httpPool ??= new H1Pool(this.address, tls ? () => tls.clientOptions(this.address) : undefined);
    return this.#httpPool;
  }

  get breakerState(): BreakerState {
    return this.breaker.state;
  }

  /** The gRPC channel to this endpoint (requests and health checks), created on first use. */
  grpcChannel(): GrpcChannel {
    const tls = this.tls;
    this.#grpcChannel ??= new GrpcChannel(this.address, tls ? { secure: () => tls.http2Options(this.address) } : {});
    return this.#grpcChannel;
  }

  /**
   * Drops the gRPC connection and its reconnect backoff, so the next call dials afresh. For an
   * endpoint the health checks found down: the check that readmits it must not wait out a
   * backoff (up to 2 s) after the replica is back.
   */
  resetConnection(): void {
    this.#grpcChannel?.reset();
  }

  /**
   * What a request here is expected to cost: latency EWMA × (in-flight + 1) — "peak EWMA"
   * least-request. An idle endpoint's figure decays, so a replica that was slow is tried again
   * and can prove it recovered. A breaker waiting for its probe costs nothing: the next pick
   * that sees it sends the probe.
   */
  cost(now: number): number {
    if (this.breaker.probeReady) return -1;
    if (this.inflight === 0) return this.ewmaMs * Math.exp((this.lastSampleAt - now) * IDLE_DECAY);
    return this.ewmaMs * (this.inflight + 1);
  }

  /** Records one answered request's latency (a failure counts as at least FAILURE_PENALTY_MS). */
  sample(latencyMs: number, failed: boolean, now: number): void {
    // Decay first, as cost() does, so a long-idle endpoint restarts from where the balancer saw it.
    const base = this.inflight === 0 ? this.ewmaMs * Math.exp((this.lastSampleAt - now) * IDLE_DECAY) : this.ewmaMs;
    const value = failed ? Math.max(latencyMs, FAILURE_PENALTY_MS) : Math.min(latencyMs, base * SPIKE_CAP || latencyMs);
    this.ewmaMs = base + EWMA_ALPHA * (value - base);
    this.lastSampleAt = now;
  }

  /** Starts the latency figure afresh (readmitted after an outage: its old samples say nothing now). */
  restartLatency(ewmaMs: number): void {
    this.ewmaMs = ewmaMs;
    this.lastSampleAt = performance.now();
  }

  /** Recomputes `available` from health, ejection and breaker. */
  refreshAvailability(): void {
    const breakerAllows = this.breaker.state === "closed" || (this.breaker.state === "open" && this.breaker.probeReady);
    this.#setAvailable(!this.removed && this.health !== "unhealthy" && !this.ejected && breakerAllows);
  }

  #setAvailable(available: boolean): void {
    if (available !== this.available) this.outSince = available ? 0 : performance.now();
    this.available = available;
  }

  /** Epoch ms from which this endpoint may be picked again, as far as timers know (now if it may be now). */
  availableFrom(now: number, nextHealthCheckAt: number): number {
    // Unhealthy, only a passing health check brings it back — and that check also ends an
    // ejection and closes the breaker (upstream.ts): their own times do not apply.
    if (this.health === "unhealthy") return Math.max(now, nextHealthCheckAt);
    let at = now;
    if (this.ejected) at = Math.max(at, this.ejectedUntil);
    if (this.breaker.state === "open") at = Math.max(at, this.breaker.probeAt);
    // A probe is out: its answer comes within the route timeout; a second is a fair guess.
    if (this.breaker.state === "half-open") at = Math.max(at, now + 1_000);
    return at;
  }

  close(): void {
    this.removed = true;
    this.#setAvailable(false);
    this.breaker.close();
    this.#grpcChannel?.close();
    this.#grpcChannel = undefined;
    this.#httpPool?.close();
  }

  #breakerChanged(): void {
    this.refreshAvailability();
    const state = this.breaker.state;
    if (state !== this.#reportedBreakerState) {
      this.#reportedBreakerState = state;
      this.onBreakerChange(this, state);
    }
  }
}

function isFailedTry(verdict: Verdict): boolean {
  return verdict !== "ok";
}
