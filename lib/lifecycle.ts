/**
 * The graceful lifecycle every service shares: liveness, readiness, and a bounded drain on
 * SIGTERM/SIGINT.
 *
 * Why the drain: when Kubernetes deletes a pod it sends SIGTERM at the same time as it removes
 * the pod from the Service's endpoints, and the two race
 * (https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination).
 * So on SIGTERM we first report not-ready and keep serving for `drainDelayMs`, long enough for
 * kube-proxy, the endpoints controller and the gateway's own health checks to stop sending new
 * requests here; only then do we stop accepting and wait for in-flight requests, bounded by
 * `shutdownTimeoutMs`, which must stay below the pod's `terminationGracePeriodSeconds`.
 */
import type { Logger } from "./log.ts";

export interface LifecycleOptions {
  /** How long to keep serving after turning not-ready, before closing listeners. */
  drainDelayMs: number;
  /** Upper bound on the whole shutdown, drain included; the process exits when it passes. */
  shutdownTimeoutMs: number;
  log: Logger;
  /** Called once when the process should exit (tests replace process.exit). */
  exit?: (code: number) => void;
}

export type StopHook = () => Promise<void> | void;

export class Lifecycle {
  #ready = false;
  #shuttingDown = false;
  #stopHooks: { name: string; stop: StopHook }[] = [];
  #readinessListeners: ((ready: boolean) => void)[] = [];
  readonly startedAt = Date.now();

  constructor(private readonly opts: LifecycleOptions) {}

  /** Live: the process is not wedged. Stays true during the drain so nothing restarts it. */
  isLive(): boolean {
    return true;
  }

  /** Ready: new requests are welcome. False before start-up completes and once draining begins. */
  isReady(): boolean {
    return this.#ready && !this.#shuttingDown;
  }

  isShuttingDown(): boolean {
    return this.#shuttingDown;
  }

  markReady(): void {
    this.#ready = true;
    this.#emitReadiness();
  }

  /** Runs when readiness changes (gRPC health uses it to flip SERVING/NOT_SERVING). */
  onReadinessChange(listener: (ready: boolean) => void): void {
    this.#readinessListeners.push(listener);
  }

  /** Registers something to stop, in order, after the drain delay (listeners first, then exporters). */
  onStop(name: string, stop: StopHook): void {
    this.#stopHooks.push({ name, stop });
  }

  /** Installs SIGTERM and SIGINT handlers that run `shutdown`. */
  handleSignals(): void {
    for (const signal of ["SIGTERM", "SIGINT"] as const) {
      process.on(signal, () => {
        this.opts.log.info({ signal }, "shutdown requested");
        void this.shutdown();
      });
    }
  }

  async shutdown(): Promise<void> {
    if (this.#shuttingDown) return;
    this.#shuttingDown = true;
    this.#emitReadiness();
    const exit = this.opts.exit ?? ((code: number) => process.exit(code));
    const deadline = setTimeout(() => {
      this.opts.log.error({ timeout_ms: this.opts.shutdownTimeoutMs }, "shutdown timed out; exiting");
      exit(1);
    }, this.opts.shutdownTimeoutMs);
    deadline.unref?.();
    await Bun.sleep(this.opts.drainDelayMs);
    let code = 0;
    for (const hook of this.#stopHooks) {
      try {
        await hook.stop();
      } catch (err) {
        code = 1;
        this.opts.log.error({ err, hook: hook.name }, "stop hook failed");
      }
    }
    clearTimeout(deadline);
    this.opts.log.info({ uptime_ms: Date.now() - this.startedAt }, "stopped");
    exit(code);
  }

  #emitReadiness(): void {
    const ready = this.isReady();
    for (const listener of this.#readinessListeners) listener(ready);
  }
}
