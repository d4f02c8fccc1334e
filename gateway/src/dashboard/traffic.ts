/**
 * What each route served, second by second, for the dashboard: requests, server errors (5xx),
 * rate-limit denials and a latency histogram per second, in a ring of the last WINDOW_SECONDS.
 *
 * `record` runs once per request (../telemetry/index.ts), so it only indexes typed arrays: no
 * allocation after a route's first request, no timer, the wall clock read once a second. A slot
 * is reset lazily by the first request of a new second; a quiet second costs nothing.
 */
import { LATENCY_BUCKETS, latencyBucket, sparse } from "./latency-buckets.ts";

/** History kept per route: the dashboard's charts span 5 minutes. */
export const WINDOW_SECONDS = 300;

/** One route's completed seconds `from`, `from + 1`, … (arrays of equal length). */
export interface RouteSeries {
  from: number;
  requests: number[];
  errors: number[];
  denied: number[];
  /** Per second, the sparse latency histogram ([bucket, count, …], see latency-buckets.ts). */
  latency: number[][];
}

class RouteRing {
  /** The epoch second each slot holds (-1: never used). */
  readonly #second = new Float64Array(WINDOW_SECONDS).fill(-1);
  readonly #requests = new Uint32Array(WINDOW_SECONDS);
  readonly #errors = new Uint32Array(WINDOW_SECONDS);
  readonly #denied = new Uint32Array(WINDOW_SECONDS);
  readonly #latency = new Uint32Array(WINDOW_SECONDS * LATENCY_BUCKETS);

  #slot(second: number): number {
    const slot = second % WINDOW_SECONDS;
    if (this.#second[slot] !== second) {
      this.#second[slot] = second;
      this.#requests[slot] = 0;
      this.#errors[slot] = 0;
      this.#denied[slot] = 0;
      this.#latency.fill(0, slot * LATENCY_BUCKETS, (slot + 1) * LATENCY_BUCKETS);
    }
    return slot;
  }

  record(second: number, status: number, ms: number): void {
    const slot = this.#slot(second);
    this.#requests[slot]!++;
    if (status >= 500) this.#errors[slot]!++;
    this.#latency[slot * LATENCY_BUCKETS + latencyBucket(ms)]!++;
  }

  deny(second: number): void {
    this.#denied[this.#slot(second)]!++;
  }

  series(from: number, to: number): RouteSeries {
    const out: RouteSeries = { from, requests: [], errors: [], denied: [], latency: [] };
    for (let second = from; second < to; second++) {
      const slot = second % WINDOW_SECONDS;
      if (this.#second[slot] !== second) {
        out.requests.push(0);
        out.errors.push(0);
        out.denied.push(0);
        out.latency.push([]);
        continue;
      }
      out.requests.push(this.#requests[slot]!);
      out.errors.push(this.#errors[slot]!);
      out.denied.push(this.#denied[slot]!);
      out.latency.push(sparse(this.#latency, slot * LATENCY_BUCKETS, LATENCY_BUCKETS));
    }
    return out;
  }
}

export class TrafficRecorder {
  readonly #routes = new Map<string, RouteRing>();
  /** The epoch second requests are counted in, and when it began and ends on performance.now()'s clock. */
  #second = 0;
  #secondStart = 0;
  #secondEnd = -1;

  /** `clock`: epoch ms (tests pass their own). */
  constructor(private readonly clock: () => number = Date.now) {}

  /**
   * One request answered on `route` with `status` after `ms`; `now` is performance.now() at the
   * answer, which the caller has at hand (a clock read costs ~50 ns here, as much as the rest).
   */
  record(route: string, status: number, ms: number, now: number = performance.now()): void {
    this.#ring(route).record(this.#secondAt(now), status, ms);
  }

  /** One request to `route` refused by the rate limiter (it is also recorded as answered, 429). */
  deny(route: string, now: number = performance.now()): void {
    this.#ring(route).deny(this.#secondAt(now));
  }

  /**
   * The epoch second at `now`, reading the wall clock once per second: seconds must match across
   * gateways (they are merged by number), and the monotonic clock drifts from the wall clock.
   */
  #secondAt(now: number): number {
    if (now >= this.#secondEnd || now < this.#secondStart) {
      const wall = this.clock();
      const into = wall % 1000;
      this.#second = (wall - into) / 1000;
      this.#secondStart = now - into;
      this.#secondEnd = now + (1000 - into);
    }
    return this.#second;
  }

  /**
   * The last `seconds` completed seconds of `route` (the current one is still filling up and is
   * left out), at most WINDOW_SECONDS; zeros for a route that has served nothing.
   */
  series(route: string, seconds: number = WINDOW_SECONDS): RouteSeries {
    const to = Math.floor(this.clock() / 1000);
    const from = to - Math.max(0, Math.min(WINDOW_SECONDS - 1, Math.floor(seconds)));
    const ring = this.#routes.get(route);
    if (ring) return ring.series(from, to);
    const zeros = () => new Array<number>(to - from).fill(0);
    return {
      from,
      requests: zeros(),
      errors: zeros(),
      denied: zeros(),
      latency: Array.from({ length: to - from }, () => []),
    };
  }

  /** Forgets routes a reload removed (their names are not in `names`). */
  retain(names: ReadonlySet<string>): void {
    for (const name of this.#routes.keys()) if (!names.has(name)) this.#routes.delete(name);
  }

  #ring(route: string): RouteRing {
    let ring = this.#routes.get(route);
    if (ring === undefined) this.#routes.set(route, (ring = new RouteRing()));
    return ring;
  }
}
