/**
 * Where rpcapp's log lines go: stdout, with the lines written during one turn of the event loop
 * gathered into one write(2).
 *
 * lib/log.ts writes each line with its own synchronous write; at one access line per RPC that
 * write was the largest single cost of a call (measured with rpcapp/scripts/cost.ts). Under load
 * many calls end in the same turn, so one write carries all their lines. Lines keep their order
 * and leave at the end of the turn they were logged in — not after a timer — so a quiet server's
 * line is out at once. Whatever is pending when the process exits is written by an `exit` hook,
 * so `process.exit` right after a fatal line loses nothing.
 *
 * Lines are encoded as they arrive into one reused buffer, which is written as is: handing the
 * joined string to pino's SonicBoom instead cost more than the write itself (it measures and
 * encodes the string twice, and a string built by appending must be flattened first).
 */
import { writeSync } from "node:fs";
import type { DestinationStream } from "pino";

const INITIAL_BYTES = 64 * 1024;
/** Lines beyond this are written at once rather than held: bounds the memory one turn can take. */
const MAX_BUFFERED_BYTES = 1024 * 1024;

export class BatchedOutput implements DestinationStream {
  readonly #fd: number;
  #buffer = new Uint8Array(INITIAL_BYTES);
  #length = 0;
  #isScheduled = false;
  /** Set once the reader is gone (EPIPE): later lines are dropped, as pino's own stdout does. */
  #isClosed = false;
  readonly #encoder = new TextEncoder();
  readonly #flush = () => this.flush();
  readonly #endOfTurn = () => {
    this.#isScheduled = false;
    this.flush();
  };

  constructor(fd = 1) {
    this.#fd = fd;
    process.on("exit", this.#flush);
  }

  write(line: string): void {
    if (this.#isClosed) return;
    // Room for the worst case, 3 bytes per UTF-16 unit, so encodeInto never cuts a line short.
    const room = line.length * 3;
    if (this.#length + room > this.#buffer.length && !this.#grow(room)) {
      this.flush();
      if (room > this.#buffer.length) {
        this.#writeAll(this.#encoder.encode(line));
        return;
      }
    }
    this.#length += this.#encoder.encodeInto(line, this.#buffer.subarray(this.#length)).written;
    if (!this.#isScheduled) {
      this.#isScheduled = true;
      setImmediate(this.#endOfTurn);
    }
  }

  /** Writes what is buffered now. */
  flush(): void {
    if (this.#length === 0) return;
    const length = this.#length;
    this.#length = 0;
    this.#writeAll(this.#buffer.subarray(0, length));
  }

  /** Makes room for `bytes` more; false when that would pass MAX_BUFFERED_BYTES. */
  #grow(bytes: number): boolean {
    const needed = this.#length + bytes;
    if (needed > MAX_BUFFERED_BYTES) return false;
    const grown = new Uint8Array(Math.min(MAX_BUFFERED_BYTES, Math.max(needed, this.#buffer.length * 2)));
    grown.set(this.#buffer.subarray(0, this.#length));
    this.#buffer = grown;
    return true;
  }

  #writeAll(bytes: Uint8Array): void {
    let offset = 0;
    while (offset < bytes.length && !this.#isClosed) {
      try {
        offset += writeSync(this.#fd, bytes, offset, bytes.length - offset);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // A non-blocking pipe whose reader is behind: wait for it, as a synchronous logger must.
        if (code === "EAGAIN") Atomics.wait(PAUSE, 0, 0, 1);
        else if (code === "EPIPE") this.#isClosed = true;
        else throw err;
      }
    }
  }
}

const PAUSE = new Int32Array(new SharedArrayBuffer(4));

/** rpcapp's stdout (see above), for lib/log.ts `createLogger`'s `destination`. */
export function batchedStdout(): BatchedOutput {
  return new BatchedOutput(1);
}
