/**
 * Gives memory back when a process goes quiet: a full garbage collection and a heap shrink once
 * the process has been busy and is idle again — after start-up, and after each burst of load.
 *
 * Why: JavaScriptCore collects as it allocates, so after a burst the heap it grew stays mapped
 * until the next allocations make it worth a collection, which a quiet process never makes. The
 * compiled gateway (bench/README.md, 2026-12-06) sat at 77–81 MiB for as long as we watched after a
 * 64-connection load, against 61 at rest before it; with this, 58 at rest (the start-up's garbage
 * goes too) and 64–66 within 2 s of the load's end. `Bun.gc(true)` alone brought it to 70–71:
 * `Bun.shrink()` (Bun 1.4: deprecated in its types, still implemented; asks JavaScriptCore to
 * release unused heap blocks) does the rest. The collection takes 7–15 ms of the main thread,
 * which is why it waits for an idle spell and runs at most once per `minGapMs`.
 *
 * Busy and idle are read from the process's own CPU time (all threads, `process.cpuUsage()`)
 * every `intervalMs`: a spell at or above `busyShare` of one CPU arms the collector; the first
 * spell at or below `idleShare` after that collects, unless one ran less than `minGapMs` ago (then
 * the next idle spell after the gap does). Steady load never collects; nor does a quiet process
 * between collections. Nothing is done per request. GC_WHEN_IDLE=false turns it off.
 */
import type { Logger } from "./log.ts";

export interface IdleGcOptions {
  intervalMs: number;
  busyShare: number;
  idleShare: number;
  minGapMs: number;
  /** CPU time of the process in µs (process.cpuUsage's shape). */
  cpuUsage: () => { user: number; system: number };
  /** The collection itself. */
  collect: () => void;
  now: () => number;
}

export const IDLE_GC_DEFAULTS: IdleGcOptions = {
  intervalMs: 250,
  busyShare: 0.1,
  idleShare: 0.02,
  minGapMs: 5_000,
  cpuUsage: () => process.cpuUsage(),
  collect: () => {
    Bun.gc(true);
    (Bun as { shrink?: () => void }).shrink?.();
  },
  now: () => performance.now(),
};

export class IdleGc {
  readonly #opts: IdleGcOptions;
  #lastCpuUs: number;
  #lastAt: number;
  /** Busy since the last collection: the next idle spell collects. Start-up counts as busy. */
  #armed = true;
  #lastCollectAt = Number.NEGATIVE_INFINITY;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** Collections run, and the main-thread time they took (ms). */
  collections = 0;
  lastCollectMs = 0;

  constructor(options: Partial<IdleGcOptions> = {}) {
    this.#opts = { ...IDLE_GC_DEFAULTS, ...options };
    this.#lastCpuUs = this.#cpuUs();
    this.#lastAt = this.#opts.now();
  }

  #cpuUs(): number {
    const { user, system } = this.#opts.cpuUsage();
    return user + system;
  }

  /** One look at the CPU spent since the last; collects when the spell says so. True when it did. */
  tick(): boolean {
    const { busyShare, idleShare, minGapMs, now } = this.#opts;
    const [cpuUs, at] = [this.#cpuUs(), now()];
    const elapsedMs = at - this.#lastAt;
    if (elapsedMs <= 0) return false;
    const share = (cpuUs - this.#lastCpuUs) / 1000 / elapsedMs;
    this.#lastCpuUs = cpuUs;
    this.#lastAt = at;
    if (share >= busyShare) {
      this.#armed = true;
      return false;
    }
    if (!this.#armed || share > idleShare || at - this.#lastCollectAt < minGapMs) return false;
    this.#opts.collect();
    const done = now();
    this.collections++;
    this.lastCollectMs = done - at;
    this.#armed = false;
    this.#lastCollectAt = done;
    // The collection's own CPU time is not the next spell's.
    this.#lastCpuUs = this.#cpuUs();
    this.#lastAt = done;
    return true;
  }

  start(onCollect?: (ms: number) => void): this {
    this.#timer ??= setInterval(() => {
      if (this.tick()) onCollect?.(this.lastCollectMs);
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
  return new IdleGc().start((ms) => log.debug({ gc_ms: Math.round(ms * 10) / 10 }, "collected garbage after load"));
}
