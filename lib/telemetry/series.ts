/**
 * Request metrics that cost nothing to observe: each label set is bound once to a `Series` (a
 * count, a sum and per-bucket counts in a typed array), and observing a request is a few array
 * increments — no label object, no hash string, no closure. prom-client's own `observe` builds all
 * three on every call (0.35 µs with three labels, docs/design.md, "Hot-path costs"); on the request path that is the
 * largest cost metrics add, so the hot series live here and prom-client only formats them.
 *
 * A `SeriesSet` is exposed to a prom-client Registry through `histogramView` / `counterView`,
 * objects with the shape the Registry serialises (`name`, `help`, `type`, `get()`).
 */
import type { Registry } from "prom-client";

/** Upper bounds (seconds) for request latencies: 1 ms to 10 s. */
export const LATENCY_BUCKETS: readonly number[] = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

export class Series {
  count = 0;
  sum = 0;
  /** Observations per bucket, not cumulative; the last slot is +Inf. Empty for a plain counter. */
  readonly buckets: Float64Array;

  constructor(
    readonly labels: Readonly<Record<string, string>>,
    private readonly bounds: readonly number[],
  ) {
    this.buckets = new Float64Array(bounds.length === 0 ? 0 : bounds.length + 1);
  }

  /** Counts one event (a counter series). */
  inc(): void {
    this.count++;
  }

  /** Counts one event of `value` (seconds, bytes…) into its bucket. */
  observe(value: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.buckets[i]!++;
    this.count++;
    this.sum += value;
  }
}

type Level<T> = Map<string, T>;

/**
 * Series keyed by up to three label values, looked up through nested Maps: after the first
 * request with a given label set, `get` finds it without allocating.
 */
export class SeriesSet {
  readonly #tree: Level<Level<Level<Series>>> = new Map();

  constructor(
    readonly labelNames: readonly string[],
    readonly bounds: readonly number[] = [],
  ) {
    if (labelNames.length > 3) throw new Error(`SeriesSet supports at most 3 labels, got ${labelNames.join(", ")}`);
  }

  get(a = "", b = "", c = ""): Series {
    let level1 = this.#tree.get(a);
    if (level1 === undefined) this.#tree.set(a, (level1 = new Map()));
    let level2 = level1.get(b);
    if (level2 === undefined) level1.set(b, (level2 = new Map()));
    let series = level2.get(c);
    if (series === undefined) level2.set(c, (series = this.#create(a, b, c)));
    return series;
  }

  *[Symbol.iterator](): IterableIterator<Series> {
    for (const level1 of this.#tree.values()) for (const level2 of level1.values()) yield* level2.values();
  }

  /** Drops every series for which `keep` is false (e.g. endpoints that no longer exist). */
  retain(keep: (labels: Readonly<Record<string, string>>) => boolean): void {
    for (const [a, level1] of this.#tree) {
      for (const [b, level2] of level1) {
        for (const [c, series] of level2) if (!keep(series.labels)) level2.delete(c);
        if (level2.size === 0) level1.delete(b);
      }
      if (level1.size === 0) this.#tree.delete(a);
    }
  }

  #create(a: string, b: string, c: string): Series {
    const values = [a, b, c];
    const labels: Record<string, string> = {};
    this.labelNames.forEach((name, i) => {
      labels[name] = values[i]!;
    });
    return new Series(labels, this.bounds);
  }
}

interface MetricValue {
  value: number;
  labels: Record<string, string | number>;
  metricName?: string;
}

/** What prom-client's Registry reads from a metric (see `Registry.getMetricsAsString`). */
interface RegistryMetric {
  name: string;
  help: string;
  type: "counter" | "gauge" | "histogram";
  aggregator: "sum";
  get(): Promise<{ name: string; help: string; type: string; aggregator: string; values: MetricValue[] }>;
  reset(): void;
}

function register(registry: Registry, metric: RegistryMetric): void {
  // The Registry only calls name/type/get()/reset(); it is typed for its own Metric classes.
  registry.registerMetric(metric as unknown as Parameters<Registry["registerMetric"]>[0]);
}

/** Exposes the sets' series as one Prometheus histogram (`<name>_bucket/_sum/_count`). */
export function histogramView(
  registry: Registry,
  name: string,
  help: string,
  set: SeriesSet,
  beforeCollect?: () => void,
): void {
  const bounds = set.bounds;
  register(registry, {
    name,
    help,
    type: "histogram",
    aggregator: "sum",
    async get() {
      beforeCollect?.();
      const values: MetricValue[] = [];
      for (const series of set)
        values.push(...histogramValues(name, series.labels, bounds, series.buckets, series.sum, series.count));
      return { name, help, type: "histogram", aggregator: "sum", values };
    },
    reset: () => set.retain(() => false),
  });
}

/** Exposes the sets' series counts as one Prometheus counter (`name` should end in `_total`). */
export function counterView(
  registry: Registry,
  name: string,
  help: string,
  set: SeriesSet,
  beforeCollect?: () => void,
): void {
  register(registry, {
    name,
    help,
    type: "counter",
    aggregator: "sum",
    async get() {
      beforeCollect?.();
      const values: MetricValue[] = [];
      for (const series of set) values.push({ labels: { ...series.labels }, value: series.count });
      return { name, help, type: "counter", aggregator: "sum", values };
    },
    reset: () => set.retain(() => false),
  });
}

/** One sample of a collected metric; `metricName` for histogram parts (`<name>_bucket`…). */
export type CollectedValue = MetricValue;

/**
 * A metric whose samples are read from somewhere else when Prometheus scrapes — figures another
 * module keeps in plain numbers (counters, bucket arrays). Nothing is recorded in between.
 */
export function collectedMetric(
  registry: Registry,
  name: string,
  help: string,
  type: "counter" | "gauge" | "histogram",
  collect: () => CollectedValue[],
): void {
  register(registry, {
    name,
    help,
    type,
    aggregator: "sum",
    async get() {
      return { name, help, type, aggregator: "sum", values: collect() };
    },
    reset: () => {},
  });
}

/** The samples of a histogram from raw, non-cumulative bucket counts (the last one is +Inf). */
export function histogramValues(
  name: string,
  labels: Record<string, string>,
  bounds: readonly number[],
  buckets: ArrayLike<number>,
  sum: number,
  count: number,
): CollectedValue[] {
  const values: CollectedValue[] = [];
  let cumulative = 0;
  for (let i = 0; i < bounds.length; i++) {
    cumulative += buckets[i] ?? 0;
    values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: bounds[i]! }, value: cumulative });
  }
  values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: "+Inf" }, value: count });
  values.push({ metricName: `${name}_sum`, labels, value: sum });
  values.push({ metricName: `${name}_count`, labels, value: count });
  return values;
}
