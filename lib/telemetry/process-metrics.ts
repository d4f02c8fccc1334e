/**
 * Process metrics that are true under Bun, read when Prometheus scrapes (nothing runs per request):
 *
 *   process_cpu_user_seconds_total / _system_ / process_cpu_seconds_total   process.cpuUsage()
 *   process_resident_memory_bytes                                           process.memoryUsage.rss()
 *   bun_heap_used_bytes                                                     process.memoryUsage().heapUsed
 *   bun_heap_capacity_bytes                                                 bun:jsc heapStats() (cached, see below)
 *   process_open_fds / process_max_fds                                      /proc/self/fd, /proc/self/limits
 *   process_start_time_seconds                                              now − process.uptime()
 *   bun_event_loop_lag_seconds (histogram)                                  a timer that measures its own lateness
 *
 * Not exported, because under Bun they would lie: prom-client's GC durations and active handles
 * (always empty) and `process_heap_bytes` (JSC's reserved address space); `process.memoryUsage()`'s
 * `heapTotal` is not the heap's capacity either (it can be below `heapUsed`). bun:jsc's `heapSize()`
 * is not used for the heap either: it stays at its last GC's figure (0 before the first).
 */
import { heapStats } from "bun:jsc";
import { readdirSync, readFileSync } from "node:fs";
import { Counter, Gauge, Histogram, type Registry } from "prom-client";

export interface ProcessMetricsOptions {
  /** How often the event-loop timer fires; its lateness is the lag. Default 100 ms. */
  lagSampleMs?: number;
}

/** Buckets for event-loop lag: 1 ms (a healthy loop) to 2.5 s (a blocked one). */
const LAG_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

/**
 * heapStats() walks the heap (tens of ms on a large one) and would stall requests if run on every
 * scrape; its capacity figure changes slowly, so it is refreshed at most this often.
 */
const HEAP_CAPACITY_MAX_AGE_MS = 60_000;

function openFds(): number | undefined {
  try {
    // readdir holds one descriptor of its own while listing.
    return readdirSync("/proc/self/fd").length - 1;
  } catch {
    return undefined; // not Linux
  }
}

function maxFds(): number | undefined {
  try {
    const line = readFileSync("/proc/self/limits", "utf8")
      .split("\n")
      .find((l) => l.startsWith("Max open files"));
    const soft = line?.split(/\s+/)[3];
    return soft === undefined || soft === "unlimited" ? undefined : Number(soft);
  } catch {
    return undefined;
  }
}

const lagTimers = new WeakMap<Registry, ReturnType<typeof setInterval>>();

/** Stops the event-loop timer of a registry's process metrics (tests that build many). */
export function stopProcessMetrics(registry: Registry): void {
  clearInterval(lagTimers.get(registry));
  lagTimers.delete(registry);
}

export function registerProcessMetrics(registry: Registry, opts: ProcessMetricsOptions = {}): void {
  const registers = [registry];

  const cpuCounter = (name: string, help: string, read: (usage: NodeJS.CpuUsage) => number) => {
    const counter: Counter = new Counter({
      name,
      help,
      registers,
      collect: () => {
        counter.reset();
        counter.inc(read(process.cpuUsage()) / 1e6);
      },
    });
  };
  cpuCounter("process_cpu_user_seconds_total", "User CPU time spent, in seconds.", (u) => u.user);
  cpuCounter("process_cpu_system_seconds_total", "System CPU time spent, in seconds.", (u) => u.system);
  cpuCounter(
    "process_cpu_seconds_total",
    "Total user and system CPU time spent, in seconds.",
    (u) => u.user + u.system,
  );

  const rss: Gauge = new Gauge({
    name: "process_resident_memory_bytes",
    help: "Resident memory size, in bytes.",
    registers,
    collect: () => rss.set(process.memoryUsage.rss()),
  });

  const heapUsed: Gauge = new Gauge({
    name: "bun_heap_used_bytes",
    help: "Bytes in JavaScriptCore's heap (live objects and garbage not yet collected).",
    registers,
    collect: () => heapUsed.set(process.memoryUsage().heapUsed),
  });

  let capacity = { value: 0, at: -Infinity };
  const heapCapacity: Gauge = new Gauge({
    name: "bun_heap_capacity_bytes",
    help: "Bytes JavaScriptCore's heap can hold before it must grow (refreshed at most once a minute).",
    registers,
    collect: () => {
      const now = performance.now();
      if (now - capacity.at > HEAP_CAPACITY_MAX_AGE_MS) capacity = { value: heapStats().heapCapacity, at: now };
      heapCapacity.set(capacity.value);
    },
  });

  const fds: Gauge = new Gauge({
    name: "process_open_fds",
    help: "Open file descriptors.",
    registers,
    collect: () => {
      const n = openFds();
      if (n !== undefined) fds.set(n);
    },
  });
  const limit = maxFds();
  if (limit !== undefined) {
    new Gauge({ name: "process_max_fds", help: "Maximum number of open file descriptors.", registers }).set(limit);
  }

  new Gauge({
    name: "process_start_time_seconds",
    help: "Start time of the process since the Unix epoch, in seconds.",
    registers,
  }).set(Math.round(Date.now() / 1000 - process.uptime()));

  const lag = new Histogram({
    name: "bun_event_loop_lag_seconds",
    help: "How late a timer fires compared to when it was due: time the event loop was busy, in seconds.",
    buckets: LAG_BUCKETS,
    registers,
  });
  const interval = opts.lagSampleMs ?? 100;
  let due = performance.now() + interval;
  const timer = setInterval(() => {
    const now = performance.now();
    lag.observe(Math.max(0, now - due) / 1000);
    due = now + interval;
  }, interval);
  // Measuring must never keep a process alive that would otherwise exit.
  timer.unref();
  lagTimers.set(registry, timer);
}
