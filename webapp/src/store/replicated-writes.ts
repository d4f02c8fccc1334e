/**
 * Writes that are answered only once replicas have them: each batch of writes is sent followed by
 * one `WAIT <replicas> <timeoutMs>` (https://redis.io/docs/latest/commands/wait/), which blocks
 * until that many replicas acknowledged everything this connection wrote.
 *
 * Batches, rather than a WAIT behind every write, because a WAIT blocks the whole connection
 * (every webapp request shares one) until it returns: with the replicas gone, WAITs queued one
 * behind another would hold a read sent after them for their sum, past the call timeout. Here at
 * most one WAIT is in flight; writes arriving meanwhile wait in memory and go out together, with
 * one WAIT, when it returns. A batch's writes and its WAIT are sent in the same turn, so they
 * travel on the same connection even if a failover swaps it right after: a WAIT on another
 * connection would count replicas that never saw the writes.
 */
export interface ReplicatedReply {
  reply: unknown;
  /** Replicas that acknowledged the write (WAIT's answer), at most `replicas`. */
  acked: number;
}

type Send = (command: string, args: string[]) => Promise<unknown>;

interface Pending {
  command: string;
  args: string[];
  resolve: (value: ReplicatedReply) => void;
  reject: (err: unknown) => void;
}

export class ReplicatedWrites {
  #queue: Pending[] = [];
  #inFlight = false;

  constructor(
    private readonly send: Send,
    /** Replicas each write must reach before it is answered (REDIS_WAIT_REPLICAS, ≥ 1). */
    readonly replicas: number,
    /** How long WAIT blocks at most (REDIS_WAIT_TIMEOUT_MS). */
    readonly timeoutMs: number,
  ) {}

  /** Sends the write and resolves with its reply and how many replicas have it; rejects with the write's error, or WAIT's. */
  write(command: string, args: string[]): Promise<ReplicatedReply> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ command, args, resolve, reject });
      this.#flush();
    });
  }

  #flush(): void {
    if (this.#inFlight || this.#queue.length === 0) return;
    this.#inFlight = true;
    const batch = this.#queue;
    this.#queue = [];
    const writes = batch.map((w) => this.send(w.command, w.args));
    const waited = this.send("WAIT", [String(this.replicas), String(this.timeoutMs)]);
    void Promise.allSettled([waited, ...writes]).then(([wait, ...replies]) => {
      this.#inFlight = false;
      this.#flush();
      batch.forEach((w, i) => {
        const reply = replies[i]!;
        if (reply.status === "rejected") w.reject(reply.reason);
        else if (wait!.status === "rejected") w.reject(wait!.reason);
        else w.resolve({ reply: reply.value, acked: typeof wait!.value === "number" ? wait!.value : 0 });
      });
    });
  }
}
