/**
 * Passive outlier ejection (as Envoy's consecutive-failure detection): `consecutiveFailures`
 * failed requests in a row, or one refused connection, take an endpoint out of the balancer's
 * set for `baseEjectionMs`, doubled for each ejection in a row up to `maxEjectionMs`. At most
 * `maxEjectedPercent` of the endpoints (at least one) are ejected at once: when failures are
 * everywhere the cause is rarely every replica at once, and ejecting them all would turn a
 * partial outage into a full one.
 * The per-endpoint breaker has no such cap; it is what stops traffic to replicas beyond it.
 *
 * An ejection streak is forgiven once the endpoint has stayed in for `maxEjectionMs`.
 */
import type { UpstreamConfig } from "../config/load.ts";
import type { Endpoint } from "./endpoint.ts";

export type OutlierSettings = UpstreamConfig["outlierDetection"];

export class OutlierDetector {
  readonly #timers = new Map<Endpoint, ReturnType<typeof setTimeout>>();

  constructor(
    private readonly settings: OutlierSettings,
    private readonly endpoints: () => readonly Endpoint[],
    private readonly onEject: (endpoint: Endpoint, durationMs: number) => void,
    private readonly onReadmit: (endpoint: Endpoint) => void,
  ) {}

  onSuccess(endpoint: Endpoint): void {
    endpoint.consecutiveFailures = 0;
  }

  /**
   * A refused connection counts as the whole run of failures: nothing listens there (the replica
   * is gone or restarting), and waiting for more refusals only delays the ejection.
   */
  onFailure(endpoint: Endpoint, refused = false): void {
    endpoint.consecutiveFailures = refused ? this.settings.consecutiveFailures : endpoint.consecutiveFailures + 1;
    if (endpoint.consecutiveFailures < this.settings.consecutiveFailures || endpoint.ejected) return;
    if (this.#ejectedCount() >= this.#cap()) return;
    this.eject(endpoint);
  }

  eject(endpoint: Endpoint): void {
    const now = Date.now();
    const { baseEjectionMs, maxEjectionMs } = this.settings;
    if (endpoint.lastReadmittedAt !== null && now - endpoint.lastReadmittedAt >= maxEjectionMs)
      endpoint.ejectionStreak = 0;
    endpoint.ejectionStreak++;
    const durationMs = Math.min(baseEjectionMs * 2 ** Math.min(endpoint.ejectionStreak - 1, 30), maxEjectionMs);
    endpoint.ejected = true;
    endpoint.ejectedUntil = now + durationMs;
    endpoint.ejections++;
    endpoint.lastEjectedAt = now;
    endpoint.consecutiveFailures = 0;
    endpoint.refreshAvailability();
    const timer = setTimeout(() => this.readmit(endpoint), durationMs);
    timer.unref?.();
    this.#timers.set(endpoint, timer);
    this.onEject(endpoint, durationMs);
  }

  /** Ends an ejection (its time is up, or a health check saw the endpoint recover). */
  readmit(endpoint: Endpoint): void {
    this.forget(endpoint);
    if (!endpoint.ejected) return;
    endpoint.ejected = false;
    // Requests that were in flight when it was ejected may have failed since: start counting afresh.
    endpoint.consecutiveFailures = 0;
    endpoint.lastReadmittedAt = Date.now();
    endpoint.refreshAvailability();
    // Still out (failing its health checks, or its breaker open): no "readmitted" to report yet;
    // the health check or the breaker that lets it back says so then.
    if (endpoint.available) this.onReadmit(endpoint);
  }

  /** Drops the endpoint's timer (readmitted, removed, or shutting down). */
  forget(endpoint: Endpoint): void {
    const timer = this.#timers.get(endpoint);
    if (timer) clearTimeout(timer);
    this.#timers.delete(endpoint);
  }

  stop(): void {
    for (const timer of this.#timers.values()) clearTimeout(timer);
    this.#timers.clear();
  }

  #cap(): number {
    const n = this.endpoints().length;
    if (this.settings.maxEjectedPercent <= 0) return 0;
    return Math.max(1, Math.floor((n * this.settings.maxEjectedPercent) / 100));
  }

  #ejectedCount(): number {
    let count = 0;
    for (const e of this.endpoints()) if (e.ejected) count++;
    return count;
  }
}
