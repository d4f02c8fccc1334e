/**
 * A real redis-server for tests, on a free port below 32768: stoppable (SIGSTOP: it keeps its
 * connections open and stops answering, as behind a network partition), killable (SIGKILL:
 * connections reset, as when its pod is deleted) and restartable on the same port, empty.
 * Cleaned up by PID with the test file's other processes (afterAll → stopAll()).
 */
import { isListening, redisServerArgv } from "../redis.ts";
import { freePort } from "./ports.ts";
import { type Spawned, spawnProcess, stopProcess, waitFor } from "./processes.ts";

export class TestRedis {
  proc!: Spawned;
  private constructor(readonly port: number) {}

  static async start(port?: number): Promise<TestRedis> {
    const redis = new TestRedis(port ?? (await freePort()));
    await redis.restart();
    return redis;
  }

  /** Whether redis-server is running (a stopped one counts as running). */
  get isRunning(): boolean {
    return this.proc.proc.exitCode === null && this.proc.proc.signalCode === null;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** (Re)starts redis-server on the same port, empty, and waits until it accepts connections. */
  async restart(): Promise<void> {
    this.proc = spawnProcess(`redis-${this.port}`, redisServerArgv(this.port));
    await waitFor(`redis on port ${this.port}`, () => isListening(this.port), { proc: this.proc, timeoutMs: 5000 });
  }

  async kill(): Promise<void> {
    await stopProcess(this.proc, "SIGKILL");
  }

  pause(): void {
    this.proc.proc.kill("SIGSTOP");
  }

  resume(): void {
    this.proc.proc.kill("SIGCONT");
  }
}
