/**
 * A canary release of one upstream, run by the gateway itself: the endpoints whose replicas report
 * the canary's version (`x-service-version`, learned from health checks and answers) get `weight`
 * percent of the requests, the others (the stable version) the rest. The weight rises through the
 * policy's steps (routes.yaml `upstreams.<name>.canary`); each step is judged on what this gateway
 * saw in it — the canary against the stable version over the same window:
 *
 *   start(v2) ──▶ step 1 (5 %) ──judged──▶ step 2 (25 %) ──▶ … ──▶ 100 %: promoted
 *                     │ errors > stable + maxErrorRateIncrease points   (checked from minRequests on)
 *                     │ p99 > max(stable p99 × maxP99Ratio, stable p99 + p99SlackMs)   (at the step's end)
 *                     ▼
 *                 aborted: weight 0 at once, logged, counted, on /canary and the dashboard
 *
 * - A step is judged once the canary answered `minRequests` requests in it and `minStepMs` passed;
 *   the error check runs as soon as `minRequests` is reached, so a failing canary is stopped
 *   without waiting for the step's time — and before it, as soon as the canary's errors alone
 *   exceed what `minRequests` answers may hold at the stable side's rate: a canary failing every
 *   request is ejected by outlier detection after a few, and would otherwise never reach
 *   `minRequests`. Latency is judged at the step's end only (a p99 needs the whole window). A
 *   window's p99 rests on its slowest 1 %: with fewer than 200 answers that is its one or two
 *   slowest, where a single GC pause or the canary's first, cold connection lands. So both sides
 *   are compared at the quantile that leaves at least two answers of the canary's above it (p95
 *   at 40 answers, p99 from 200 on; the median at least), and the report names which. Each
 *   endpoint's first answers (COLD_ANSWERS, upstream.ts) count for errors but not for latency:
 *   a replica just started runs its first requests on cold code and new connections, and two
 *   new canary replicas made enough slow answers to fail a good release's p98 on a busy machine.
 * - Paused (a weight set by hand, or the last step passed below 100 %), the weight holds and the
 *   judging goes on: a window that fails aborts the canary, one that passes starts the next window.
 * - The split is exact, not random: an accumulator sends the canary its share request by request
 *   (5 % is one request in twenty, in every window), so a short step's measured share is its
 *   weight. With `stickyHeader`, a request carrying that header goes where its value hashes
 *   (FNV-1a against the weight), so one client stays on one version while the weight stays.
 * - Each gateway replica runs its own controller on its own traffic; `make canary` and
 *   `scripts/cluster/canary.ts` start and watch it on every replica through the admin API.
 */
import { LatencyWindow } from "./latency.ts";

export type CanaryState = "idle" | "running" | "paused" | "promoted" | "aborted";

export interface CanaryPolicyView {
  steps: number[];
  minRequests: number;
  minStepMs: number;
  maxErrorRateIncrease: number;
  maxP99Ratio: number;
  p99SlackMs: number;
  stickyHeader?: string;
}

/** One side's figures in one step's window. */
export interface SideFigures {
  requests: number;
  errors: number;
  /** Percent. */
  errorRate: number;
  p99Ms: number;
}

/** What happened at one step: its window's figures and the verdict. */
export interface StepReport {
  step: number;
  weight: number;
  startedAt: string;
  durationMs: number;
  canary: SideFigures;
  stable: SideFigures;
  /** The canary's measured share of the requests in the window, percent. */
  measuredShare: number;
  verdict: "passed" | "failed" | "ended";
  reason: string;
}

export type CanaryEvent =
  | { type: "started"; version: string; weight: number }
  | { type: "step"; report: StepReport; weight: number }
  | { type: "promoted"; version: string; reason: string }
  | { type: "aborted"; version: string; reason: string; report?: StepReport }
  | { type: "paused" | "resumed" | "reset"; version: string | undefined }
  | { type: "weight"; version: string; weight: number };

export class CanaryError extends Error {
  override name = "CanaryError";
}

class Side {
  requests = 0;
  errors = 0;
  readonly latency = new LatencyWindow();

  figures(): SideFigures {
    return {
      requests: this.requests,
      errors: this.errors,
      errorRate: this.requests ? round2((this.errors / this.requests) * 100) : 0,
      p99Ms: round2(this.latency.percentile(0.99)),
    };
  }
}

const round2 = (n: number) => Math.round(n * 100) / 100;

/** FNV-1a, 32 bits: a stable bucket 0–99 for a sticky key. */
function bucketOf(key: string): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) hash = Math.imul(hash ^ key.charCodeAt(i), 0x01000193);
  return (hash >>> 0) % 100;
}

export class Canary {
  state: CanaryState = "idle";
  /** The version under test; undefined while idle. */
  version: string | undefined;
  /** Percent of requests sent to the canary now. */
  weight = 0;
  /** Index into the policy's steps; -1 before the first. */
  step = -1;
  readonly history: StepReport[] = [];
  /** Judgements so far, by outcome (metrics). */
  readonly judged = { passed: 0, failed: 0 };
  startedAt: number | undefined;
  #accumulator = 0;
  #window = { startedAt: 0, canary: new Side(), stable: new Side() };

  constructor(
    readonly upstream: string,
    public policy: CanaryPolicyView,
    private readonly onEvent: (event: CanaryEvent) => void = () => {},
    private readonly now: () => number = Date.now,
  ) {}

  /** Starts a canary of `version` at the first step; a running one must be ended first. */
  start(version: string): void {
    if (this.state === "running" || this.state === "paused")
      throw new CanaryError(
        `a canary of ${this.upstream} (version ${this.version}) is ${this.state}: promote, abort or reset it first`,
      );
    this.version = version;
    this.history.length = 0;
    this.startedAt = this.now();
    this.state = "running";
    this.#enterStep(0);
    this.onEvent({ type: "started", version, weight: this.weight });
  }

  pause(): void {
    this.#expect(["running"], "pause");
    this.state = "paused";
    this.onEvent({ type: "paused", version: this.version });
  }

  resume(): void {
    this.#expect(["paused"], "resume");
    this.state = "running";
    this.#resetWindow();
    this.onEvent({ type: "resumed", version: this.version });
  }

  /** Sends every request to the canary now (an operator's decision, or the last step passed). */
  promote(reason = "promoted by the admin API"): void {
    this.#expect(["running", "paused"], "promote");
    this.weight = 100;
    this.state = "promoted";
    this.onEvent({ type: "promoted", version: this.version!, reason });
  }

  /** Sends the canary nothing from now on. */
  abort(reason = "aborted by the admin API", report?: StepReport): void {
    this.#expect(["running", "paused", "promoted"], "abort");
    this.weight = 0;
    this.state = "aborted";
    this.onEvent({ type: "aborted", version: this.version!, reason, ...(report ? { report } : {}) });
  }

  /** A fixed weight set by hand: the automatic steps pause until resume(). */
  setWeight(weight: number): void {
    this.#expect(["running", "paused"], "set the weight of");
    if (!Number.isInteger(weight) || weight < 0 || weight > 100)
      throw new CanaryError(`weight must be an integer from 0 to 100, not ${weight}`);
    this.weight = weight;
    this.state = "paused";
    this.#resetWindow();
    this.onEvent({ type: "weight", version: this.version!, weight });
  }

  /** Back to no canary: traffic spread over every endpoint, whatever its version. */
  reset(): void {
    const version = this.version;
    this.state = "idle";
    this.version = undefined;
    this.weight = 0;
    this.step = -1;
    this.history.length = 0;
    this.onEvent({ type: "reset", version });
  }

  /** Whether a canary decides where requests go (a weight is in force, 0 included). */
  get active(): boolean {
    return this.state !== "idle";
  }

  /** Whether this request goes to the canary version. `key`: the sticky header's value, if any. */
  chooseCanary(key: string | null): boolean {
    const weight = this.weight;
    if (weight <= 0) return false;
    if (weight >= 100) return true;
    if (key) return bucketOf(key) < weight;
    this.#accumulator += weight;
    if (this.#accumulator >= 100) {
      this.#accumulator -= 100;
      return true;
    }
    return false;
  }

  /**
   * One try's result on an endpoint of `version`; judges the step when it is due. `cold`: one of
   * the endpoint's first answers (a replica just started: its code not yet compiled, its
   * connections new) — counted for errors, left out of the latency comparison, which judges the
   * release and not its start-up.
   */
  record(version: string | undefined, failed: boolean, latencyMs: number, cold = false): void {
    if (this.state !== "running" && this.state !== "paused") return;
    const { canary, stable } = this.#window;
    const side = version === this.version ? canary : stable;
    side.requests++;
    if (failed) side.errors++;
    if (!cold) side.latency.add(latencyMs);
    const p = this.policy;
    if (canary.requests >= p.minRequests) this.#judge();
    // Already more errors than minRequests answers may hold at the stable side's rate: the step
    // cannot pass, and a canary failing every request would not live to minRequests (ejected).
    else if (failed && side === canary) {
      const stableRate = stable.requests ? (stable.errors / stable.requests) * 100 : 0;
      if (canary.errors > (p.minRequests * (stableRate + p.maxErrorRateIncrease)) / 100) this.#judge();
    }
  }

  /** The state for the admin API and the dashboard. */
  view() {
    return {
      upstream: this.upstream,
      state: this.state,
      version: this.version ?? null,
      weight: this.weight,
      step: this.step >= 0 ? this.step + 1 : null,
      steps: this.policy.steps,
      startedAt: this.startedAt && this.state !== "idle" ? new Date(this.startedAt).toISOString() : null,
      current:
        this.state === "running" || this.state === "paused"
          ? {
              durationMs: this.now() - this.#window.startedAt,
              canary: this.#window.canary.figures(),
              stable: this.#window.stable.figures(),
            }
          : null,
      history: this.history,
      policy: this.policy,
    };
  }

  #judge(): void {
    const { canary, stable, startedAt } = this.#window;
    const p = this.policy;
    // The error check on counts alone, on every answer from minRequests on: cheap, and it stops a
    // failing canary without waiting for the step's time.
    const rate = (side: Side) => (side.requests ? (side.errors / side.requests) * 100 : 0);
    const elapsed = this.now() - startedAt;
    if (rate(canary) <= rate(stable) + p.maxErrorRateIncrease && elapsed < p.minStepMs) return;
    const c = canary.figures();
    const s = stable.figures();
    const report = (verdict: StepReport["verdict"], reason: string): StepReport => ({
      step: this.step + 1,
      weight: this.weight,
      startedAt: new Date(startedAt).toISOString(),
      durationMs: elapsed,
      canary: c,
      stable: s,
      measuredShare: round2((canary.requests / Math.max(1, canary.requests + stable.requests)) * 100),
      verdict,
      reason,
    });
    const errorLimit = s.errorRate + p.maxErrorRateIncrease;
    if (c.errorRate > errorLimit) {
      const failed = report(
        "failed",
        `error rate ${c.errorRate}% > stable ${s.errorRate}% + ${p.maxErrorRateIncrease} points`,
      );
      this.#close(failed);
      this.judged.failed++;
      this.abort(`analysis failed at step ${failed.step} (${failed.weight}%): ${failed.reason}`, failed);
      return;
    }
    if (elapsed < p.minStepMs || canary.requests < p.minRequests) return;
    // Over the answers the latency window holds (a replica's cold first answers are not in it).
    const q = Math.max(0.5, Math.min(0.99, 1 - 2 / Math.max(1, canary.latency.count)));
    const name = `p${Math.round(q * 1000) / 10}`;
    const canaryMs = round2(canary.latency.percentile(q));
    const stableMs = round2(stable.latency.percentile(q));
    const p99Limit = Math.max(stableMs * p.maxP99Ratio, stableMs + p.p99SlackMs);
    if (stable.latency.count > 0 && canary.latency.count > 0 && canaryMs > p99Limit) {
      const failed = report(
        "failed",
        `${name} ${canaryMs} ms > ${round2(p99Limit)} ms (stable ${name} ${stableMs} ms × ${p.maxP99Ratio}, or + ${p.p99SlackMs} ms)`,
      );
      this.#close(failed);
      this.judged.failed++;
      this.abort(`analysis failed at step ${failed.step} (${failed.weight}%): ${failed.reason}`, failed);
      return;
    }
    // Paused: the weight holds; a window that passes starts the next one.
    if (this.state === "paused") {
      this.#resetWindow();
      return;
    }
    const passed = report(
      "passed",
      `error rate ${c.errorRate}% ≤ ${round2(errorLimit)}%, ${name} ${canaryMs} ms ≤ ${round2(p99Limit)} ms`,
    );
    this.#close(passed);
    this.judged.passed++;
    const next = this.step + 1;
    if (next >= p.steps.length) {
      // The last step passed below 100 %: it stays there until an operator promotes or aborts.
      this.state = "paused";
      this.onEvent({ type: "step", report: passed, weight: this.weight });
      return;
    }
    this.#enterStep(next);
    this.onEvent({ type: "step", report: passed, weight: this.weight });
    if (this.weight >= 100) this.promote(`every step passed; ${this.weight}% reached`);
  }

  #close(report: StepReport): void {
    this.history.push(report);
  }

  #enterStep(index: number): void {
    this.step = index;
    this.weight = this.policy.steps[index]!;
    this.#resetWindow();
  }

  #resetWindow(): void {
    this.#window = { startedAt: this.now(), canary: new Side(), stable: new Side() };
    this.#accumulator = 0;
  }

  #expect(states: CanaryState[], what: string): void {
    if (!states.includes(this.state))
      throw new CanaryError(`cannot ${what} the canary of ${this.upstream}: it is ${this.state}`);
  }
}
