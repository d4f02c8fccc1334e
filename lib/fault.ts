/**
 * Fault injection for release drills: a replica started with FAULT_ERROR_PERCENT and/or
 * FAULT_DELAY_MS answers that share of its API requests with an error (500, gRPC INTERNAL) and/or
 * that much later — what `make canary CANARY_FAULT=errors|latency` gives its canary, to show the
 * gateway stopping a bad version. Off (both 0) by default; probes, /metrics and health checks are
 * never affected, so a faulty replica stays in rotation like a real bad release.
 *
 * The errors are spread exactly, not at random: with 5, one request in twenty fails, in every
 * window, so a drill's outcome does not depend on luck — and, given a caller (rpcapp passes the
 * peer of the call: one HTTP/2 connection per gateway), one in twenty of each caller's requests.
 * With one count for all callers, the order in which their requests interleave decides who gets
 * the failures: in the canary drill test one gateway judged 100 canary answers without a failure
 * while another got every one of them. A caller's first request fails, then one in every twenty
 * after it: a connection lives only so long (rpcapp recycles them every
 * GRPC_MAX_CONNECTION_AGE_MS), and a caller that started at zero and made fewer than twenty
 * requests on it would never see one — so a caller sees at least the share, never less.
 */
import { envInt } from "./env.ts";

type Env = Record<string, string | undefined>;

/** Callers remembered at once; past it they start afresh (a drill has a handful: the gateways). */
const MAX_CALLERS = 256;

export class Fault {
  #accumulator = 0;
  readonly #byCaller = new Map<string, number>();

  constructor(
    readonly errorPercent: number,
    readonly delayMs: number,
  ) {}

  get enabled(): boolean {
    return this.errorPercent > 0 || this.delayMs > 0;
  }

  /** Whether this request gets the injected error; with `caller`, counted among that caller's requests. */
  fails(caller?: string): boolean {
    if (this.errorPercent <= 0) return false;
    if (caller === undefined) {
      this.#accumulator += this.errorPercent;
      if (this.#accumulator < 100) return false;
      this.#accumulator -= 100;
      return true;
    }
    if (!this.#byCaller.has(caller) && this.#byCaller.size >= MAX_CALLERS) this.#byCaller.clear();
    // A new caller starts one step short of a failure (see the file comment).
    let accumulator = (this.#byCaller.get(caller) ?? 100 - this.errorPercent) + this.errorPercent;
    const fails = accumulator >= 100;
    if (fails) accumulator -= 100;
    this.#byCaller.set(caller, accumulator);
    return fails;
  }
}

/** FAULT_ERROR_PERCENT (0–100) and FAULT_DELAY_MS (0–60000); both 0 unless set. */
export function faultFromEnv(env: Env = process.env): Fault {
  return new Fault(
    envInt("FAULT_ERROR_PERCENT", 0, { min: 0, max: 100 }, env),
    envInt("FAULT_DELAY_MS", 0, { min: 0, max: 60_000 }, env),
  );
}
