/**
 * Gives memory back when a process goes quiet, without making the next burst of traffic pay for it:
 *
 * - **the first quiet spell after a busy one**: a full garbage collection (`Bun.gc(true)`), at
 *   most once per `minGapMs`. It frees the garbage of the burst; the process's compiled code stays.
 * - **once the process has been quiet for `shrinkAfterMs`** (and at the end of start-up: a first
 *   quiet spell within `startupMs` of the start): `Bun.shrink()` as well, once per busy-then-quiet cycle. That is JavaScriptCore's
 *   "shrink footprint when idle": a full collection that also throws away all compiled code and
 *   returns the allocator's free pages to the system.
 *
 * Why: JavaScriptCore collects as it allocates, so after a burst the heap it grew stays mapped
 * until the next allocations make it worth a collection, which a quiet process never makes. The
 * compiled gateway (bench/README.md, 2026-12-06) sat at 77–81 MiB for as long as we watched after a
 * 64-connection load, against 61 at rest before it. A collection alone brings it to ~70; the
 * shrink to ~63. But the shrink's code deletion sends the next requests back through the
 * interpreter and the JIT's tiers: a 1 s burst of load right after one cost the gateway 62–84 µs
 * of CPU per request against 44–55 (bench/README.md, 2026-12-06 night). So it waits for a long
 * quiet, when the code is cold anyway; start-up's code is not the request path's, so it goes at
 * once. Each step takes 7–15 ms of the main thread, which is why they wait for an idle spell.
 *
 * Busy and idle are read from the process's own CPU time (all threads, `process.cpuUsage()`)
 * every `intervalMs`: a spell at or above `busyShare` of one CPU is busy; one at or below
 * `idleShare` is quiet. Steady load never collects; nor does light traffic between the two.
 * Nothing is done per request. GC_WHEN_IDLE=false turns it off.
 */
import type { Logger } from "./log.ts";

export interface IdleGcOptions {
  intervalMs: number;
  busyShare: number;
  idleShare: number;
  minGapMs: number;
  /** Quiet this long since the last busy spell: the shrink (compiled code included) runs. */
  shrinkAfterMs: number;
  /** A first quiet spell this soon after the collector started is start-up's end: it shrinks at once. */
  startupMs: number;
  /** CPU time of the process in µs (process.cpuUsage's shape). */
  cpuUsage: () => { user: number; system: number };
  /** A full collection. */
  collect: () => void;
  /** A collection that also drops compiled code and returns free pages (Bun.shrink). */
  shrink: () => void;
  now: () => number;
}

export type IdleGcStep = "collect" | "shrink";

export const IDLE_GC_DEFAULTS: IdleGcOptions = {
  intervalMs: 250,
  busyShare: 0.1,
  idleShare: 0.02,
  minGapMs: 5_000,
  shrinkAfterMs: 30_000,
  startupMs: 2_000,
  cpuUsage: () => process.cpuUsage(),
  collect: () => Bun.gc(true),
  shrink: () => {
    Bun.gc(true);
    // Bun 1.4: deprecated in its types, still implemented.
    (Bun as { shrink?: () => void }).shrink?.();
  },
  now: () => performance.now(),
};

export class IdleGc {
  readonly #opts: IdleGcOptions;
  #lastCpuUs: number;
  #lastAt: number;
  /** Busy since the last collection: the next quiet spell collects. Start-up counts as busy. */
  #armed = true;
  /** Busy since the last shrink: a long enough quiet shrinks. */
  #shrinkArmed = true;
  readonly #startedAt: number;
  #lastBusyAt: number;
  #lastCollectAt = Number.NEGATIVE_INFINITY;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** Steps run (a shrink counts as a collection too), and the main-thread time the last took (ms). */
  collections = 0;
  shrinks = 0;
  lastCollectMs = 0;

  constructor(options: Partial<IdleGcOptions> = {}) {
    this.#opts = { ...IDLE_GC_DEFAULTS, ...options };
    this.#lastCpuUs = this.#cpuUs();
    this.#lastAt = this.#opts.now();
    this.#lastBusyAt = this.#startedAt = this.#lastAt;
  }

  #cpuUs(): number {
    const { user, system } = this.#opts.cpuUsage();
    return user + system;
  }

  /** One look at the CPU spent since the last; collects or shrinks when the spell says so. */
  tick(): IdleGcStep | undefined {
    const { busyShare, idleShare, minGapMs, shrinkAfterMs, startupMs, now } = this.#opts;
    const [cpuUs, at] = [this.#cpuUs(), now()];
    const elapsedMs = at - this.#lastAt;
    if (elapsedMs <= 0) return undefined;
    const share = (cpuUs - this.#lastCpuUs) / 1000 / elapsedMs;
    this.#lastCpuUs = cpuUs;
    this.#lastAt = at;
    if (share >= busyShare) {
      this.#armed = this.#shrinkArmed = true;
      this.#lastBusyAt = at;
      return undefined;
    }
    if (share > idleShare) return undefined;
    // Start-up's first quiet spell, within startupMs, shrinks at once: its code is not the request
    // path's. Traffic from the start (a pod in service as soon as it is ready) ends start-up too:
    // that code is the request path's, kept until a long quiet like any other.
    const endOfStartup = this.shrinks === 0 && at - this.#startedAt < startupMs;
    let step: IdleGcStep | undefined;
    if (this.#shrinkArmed && (endOfStartup || at - this.#lastBusyAt >= shrinkAfterMs)) step = "shrink";
    else if (this.#armed && at - this.#lastCollectAt >= minGapMs) step = "collect";
    if (!step) return undefined;
    if (step === "shrink") {
      this.#opts.shrink();
      this.shrinks++;
      this.#shrinkArmed = false;
    } else this.#opts.collect();
    const done = now();
    this.collections++;
    this.lastCollectMs = done - at;
    this.#armed = false;
    this.#lastCollectAt = done;
    // The step's own CPU time is not the next spell's.
    this.#lastCpuUs = this.#cpuUs();
    this.#lastAt = done;
    return step;
  }

  start(onStep?: (step: IdleGcStep, ms: number) => void): this {
    this.#timer ??= setInterval(() => {
      const step = this.tick();
      if (step) onStep?.(step, this.lastCollectMs);
    }, this.#opts.intervalMs);
    this.#timer.unref();
    return this;
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}

/** Starts the collector when `enabled` (GC_WHEN_IDLE, default true); each collection logged at debug. */
export function collectWhenIdle(enabled: boolean, log: Logger): IdleGc | undefined {
  if (!enabled) return undefined;
  return new IdleGc().start((step, ms) =>
    log.debug(
      { gc_ms: Math.round(ms * 10) / 10, step },
      step === "shrink" ? "quiet: collected garbage and dropped compiled code" : "collected garbage after load",
    ),
  );
}
