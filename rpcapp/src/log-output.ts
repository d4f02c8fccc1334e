/**
 * Where rpcapp's log lines go: stdout, with the lines written during one turn of the event loop
 * gathered into one write(2).
 *
 * lib/log.ts writes each line with its own synchronous write; at one access line per RPC that
 * write was the largest single cost of a call (measured with rpcapp/scripts/cost.ts). Under load many calls end in the same turn, so one write carries all their lines. Lines
 * keep their order, and leave at the end of the turn they were logged in — not after a timer —
 * so a quiet server's line is out at once. Writing stays synchronous (pino's SonicBoom, which
 * retries EAGAIN on a full pipe and stops on EPIPE), and whatever is pending when the process
 * exits is written by an `exit` hook, so `process.exit` after a fatal line loses nothing.
 *
 * SonicBoom is given bytes, not a string: with a string it measures it twice and encodes it twice
 * per write (Buffer.byteLength, then Buffer.from after the write), which showed in the profile.
 */
import pino from "pino";

export function batchedStdout(): pino.DestinationStream {
  const stdout = pino.destination({ fd: 1, sync: true, contentMode: "buffer" });
  let pending = "";
  const flush = () => {
    if (pending === "") return;
    const chunk = pending;
    pending = "";
    // Typed for strings only; in buffer mode SonicBoom takes bytes.
    stdout.write(Buffer.from(chunk) as unknown as string);
  };
  process.on("exit", flush);
  return {
    write(line: string) {
      if (pending === "") setImmediate(flush);
      pending += line;
    },
  };
}
