/**
 * One endpoint's circuit breaker, on cockatiel's CircuitBreakerPolicy: `consecutiveFailures`
 * failed requests in a row open it; while open the balancer skips the endpoint; after
 * `halfOpenAfterMs` one real request goes through as the probe (half-open) and its result closes
 * the breaker or opens it again for twice as long, up to `maxHalfOpenAfterMs`.
 *
 * cockatiel keeps the state machine; this wrapper adds what the balancer needs without asking
 * cockatiel on every pick: the state as a string, the time the next probe is due (cockatiel
 * keeps it private, so the backoff below reports each wait it hands out), and `probeReady`,
 * set by a timer when that time comes. Requests never queue on a half-open breaker: cockatiel
 * would hold them until the probe answers, so the balancer does not pick a half-open endpoint.
 */
import {
  BrokenCircuitError,
  type CircuitBreakerPolicy,
  CircuitState,
  circuitBreaker,
  ConsecutiveBreaker,
  handleWhenResult,
  type IBackoff,
  type IHalfOpenAfterBackoffContext,
} from "cockatiel";

export type BreakerState = "closed" | "open" | "half-open";

export interface BreakerSettings {
  consecutiveFailures: number;
  halfOpenAfterMs: number;
  maxHalfOpenAfterMs: number;
}

/** Doubles the open time after each failed probe, capped; tells its owner every wait it picks. */
class HalfOpenBackoff implements IBackoff<IHalfOpenAfterBackoffContext> {
  constructor(
    readonly duration: number,
    private readonly settings: BreakerSettings,
    private readonly onWait: (ms: number) => void,
  ) {}

  next(context: IHalfOpenAfterBackoffContext): IBackoff<IHalfOpenAfterBackoffContext> {
    const ms = Math.min(
      this.settings.halfOpenAfterMs * 2 ** Math.min(context.attempt - 1, 30),
      this.settings.maxHalfOpenAfterMs,
    );
    this.onWait(ms);
    return new HalfOpenBackoff(ms, this.settings, this.onWait);
  }
}

const STATE_NAMES: Record<CircuitState, BreakerState> = {
  [CircuitState.Closed]: "closed",
  [CircuitState.Open]: "open",
  [CircuitState.HalfOpen]: "half-open",
  // Never used here (no isolate()); an isolated breaker rejects calls like an open one.
  [CircuitState.Isolated]: "open",
};

/** Thrown by cockatiel when the breaker refused the call: nothing was sent. */
export function isBreakerRejection(err: unknown): boolean {
  return err instanceof BrokenCircuitError;
}

export class EndpointBreaker<T> {
  state: BreakerState = "closed";
  /** Epoch ms at which an open breaker admits its probe. */
  probeAt = 0;
  /** Open, and the probe is due: the next request to this endpoint is the probe. */
  probeReady = false;
  #policy: CircuitBreakerPolicy;
  #nextWaitMs = 0;
  #probeTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly settings: BreakerSettings,
    private readonly isFailure: (result: T) => boolean,
    private readonly onChange: (state: BreakerState) => void,
  ) {
    this.#policy = this.#createPolicy();
  }

  /** Runs `fn` through the breaker; rejects with BrokenCircuitError if it is open (see isBreakerRejection). */
  execute(fn: () => Promise<T>): Promise<T> {
    return this.#policy.execute(fn);
  }

  /** Back to closed at once, forgetting past failures (the endpoint was seen healthy again). */
  reset(): void {
    this.#clearTimer();
    this.#policy = this.#createPolicy();
    this.probeReady = false;
    if (this.state !== "closed") {
      this.state = "closed";
      this.onChange("closed");
    }
  }

  close(): void {
    this.#clearTimer();
  }

  #createPolicy(): CircuitBreakerPolicy {
    const policy = circuitBreaker(
      handleWhenResult((result) => this.isFailure(result as T)),
      {
        breaker: new ConsecutiveBreaker(this.settings.consecutiveFailures),
        halfOpenAfter: new HalfOpenBackoff(
          this.settings.halfOpenAfterMs,
          this.settings,
          (ms) => (this.#nextWaitMs = ms),
        ),
      },
    );
    policy.onStateChange((state) => {
      // A policy replaced by reset() may still finish a call in flight: it no longer speaks for us.
      if (policy === this.#policy) this.#onStateChange(STATE_NAMES[state]);
    });
    return policy;
  }

  #onStateChange(state: BreakerState): void {
    this.#clearTimer();
    this.probeReady = false;
    if (state === "open") {
      // cockatiel compares Date.now() with openedAt + wait; a timer 1 ms later never fires early.
      this.probeAt = Date.now() + this.#nextWaitMs;
      this.#probeTimer = setTimeout(() => {
        this.#probeTimer = undefined;
        this.probeReady = true;
        this.onChange(this.state);
      }, this.#nextWaitMs + 1);
      this.#probeTimer.unref?.();
    }
    this.state = state;
    this.onChange(state);
  }

  #clearTimer(): void {
    if (this.#probeTimer) clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
  }
}
