/**
 * A retry budget (as in Finagle and Linkerd): over a sliding 10 s window, retries may add at most
 * `budgetPercent` of the requests, plus `minRetriesPerSecond` so a quiet route can still retry.
 * When an upstream fails as a whole, retries then add at most that share of load instead of
 * multiplying it by the number of attempts.
 *
 * Ten one-second buckets with running sums: recording and asking are O(1), allocation-free.
 */
const BUCKETS = 10;
const BUCKET_MS = 1_000;

export class RetryBudget {
  readonly #requests = new Float64Array(BUCKETS);
  readonly #retries = new Float64Array(BUCKETS);
  #requestSum = 0;
  #retrySum = 0;
  #bucket = 0;
  #bucketStart: number;
  readonly #ratio: number;
  readonly #floor: number;

  constructor(budgetPercent: number, minRetriesPerSecond: number, now = performance.now()) {
    this.#ratio = budgetPercent / 100;
    this.#floor = (minRetriesPerSecond * (BUCKETS * BUCKET_MS)) / 1000;
    this.#bucketStart = now;
  }

  /** Counts one request (its first try). */
  recordRequest(now: number): void {
    this.#advance(now);
    this.#requests[this.#bucket]!++;
    this.#requestSum++;
  }

  /** Takes one retry from the budget if there is one left. */
  tryRetry(now: number): boolean {
    this.#advance(now);
    if (this.#retrySum + 1 > this.#ratio * this.#requestSum + this.#floor) return false;
    this.#retries[this.#bucket]!++;
    this.#retrySum++;
    return true;
  }

  #advance(now: number): void {
    const elapsed = now - this.#bucketStart;
    if (elapsed < BUCKET_MS) return;
    const passed = Math.floor(elapsed / BUCKET_MS);
    this.#bucketStart += passed * BUCKET_MS;
    // After a long quiet spell every bucket has expired: clear each at most once.
    let steps = Math.min(passed, BUCKETS);
    while (steps-- > 0) {
      this.#bucket = (this.#bucket + 1) % BUCKETS;
      this.#requestSum -= this.#requests[this.#bucket]!;
      this.#retrySum -= this.#retries[this.#bucket]!;
      this.#requests[this.#bucket] = 0;
      this.#retries[this.#bucket] = 0;
    }
  }
}
