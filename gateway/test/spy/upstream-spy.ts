/**
 * An upstream that tells the truth about the wire: a raw TCP server (Bun.listen) that records
 * every byte each connection received and answers with scripted bytes. A real HTTP server would
 * parse (and normalise, or refuse) what the gateway sends before a test could look at it; this
 * one keeps the bytes, so a test can check what actually reached the service — one well-framed
 * request, or a smuggled second one — and can answer with bytes no HTTP library would produce
 * (a bad status line, conflicting lengths, a truncated chunked body, an early close).
 *
 * How a connection is answered, in order:
 *   1. a script queued with `nextConnection(script)` (one per new connection, first in first out);
 *   2. otherwise the default loop: frame each request (strictly, see `frameRequests`) and hand it
 *      to `respond` — by default a well-formed 200 whose JSON body echoes the request head.
 * A script (or responder) is an async function given a `SpyConnection`: wait for requests, write
 * (awaiting back-pressure, so a loop of writes streams as fast as the reader reads), delay with
 * `await Bun.sleep`, half-close or reset. Every connection stays in `connections` with its bytes
 * and timings.
 */
import type { Socket, TCPSocketListener } from "bun";
import { freePort } from "../../../scripts/stack/testing/ports.ts";

/** One request as framed from the bytes a connection received. */
export interface SpyRequest {
  method: string;
  target: string;
  version: string;
  /** Header fields in arrival order, names as sent (case kept). */
  headers: [name: string, value: string][];
  body: Uint8Array;
  /** The request's exact bytes (head and body, with chunked framing as sent). */
  raw: Uint8Array;
}

/** The framing of a byte stream into requests, the way a strict RFC 9112 server would read it. */
export interface Framed {
  requests: SpyRequest[];
  /** Bytes after the last complete request (a request still arriving, or garbage). */
  rest: Uint8Array;
  /** Why framing stopped before `rest`, when the bytes are not valid HTTP/1.1 (rest is then never a request). */
  error?: string;
}

export interface SpyConnection {
  readonly id: number;
  /** performance.now() when accepted, and when closed (either side). */
  readonly openedAt: number;
  readonly closedAt: number | undefined;
  /** Every byte received so far. */
  received(): Uint8Array;
  /** The bytes received since the spy was last cleared (UpstreamSpy.clear), as a strict server frames them. */
  framed(): Framed;
  /** Resolves with the next complete request on this connection; rejects on close or after `timeoutMs`. */
  nextRequest(timeoutMs?: number): Promise<SpyRequest>;
  /** Writes everything, waiting for the socket to drain (back-pressure); rejects if the connection closes first. */
  write(data: string | Uint8Array): Promise<void>;
  /** Bytes handed to the kernel so far, and when each write call completed (performance.now()). */
  readonly bytesWritten: number;
  readonly writeTimes: number[];
  /** Half-close (FIN) after what was written. */
  end(): void;
  /** Close at once, dropping unsent bytes. */
  reset(): void;
  /** Resolves when the connection is closed by either side. */
  readonly closed: Promise<void>;
}

export type Script = (conn: SpyConnection) => Promise<void> | void;
export type Responder = (req: SpyRequest, conn: SpyConnection) => Promise<void> | void;

const enc = new TextEncoder();
const latin1 = new TextDecoder("latin1");

/** A well-formed HTTP/1.1 response with Content-Length; `headers` are added as given. */
export function httpResponse(
  status: number,
  body: string | Uint8Array = "",
  headers: [string, string][] = [],
  reason = "OK",
): Uint8Array {
  const bytes = typeof body === "string" ? enc.encode(body) : body;
  const head = [`HTTP/1.1 ${status} ${reason}`, ...headers.map(([n, v]) => `${n}: ${v}`)];
  if (!headers.some(([n]) => n.toLowerCase() === "content-length" || n.toLowerCase() === "transfer-encoding"))
    head.push(`Content-Length: ${bytes.length}`);
  return concat(enc.encode(`${head.join("\r\n")}\r\n\r\n`), bytes);
}

/** The default answer: 200, JSON echo of the request head (what the upstream saw, parsed). */
export const echoResponder: Responder = (req, conn) =>
  conn.write(
    httpResponse(
      200,
      JSON.stringify({ method: req.method, target: req.target, headers: req.headers, bodyBytes: req.body.length }),
      [["Content-Type", "application/json"]],
    ),
  );

export class UpstreamSpy {
  readonly connections: SpyConnection[] = [];
  /** How the default loop answers each request (replace per test). */
  respond: Responder = echoResponder;
  readonly #scripts: Script[] = [];
  #listener: TCPSocketListener<ConnState> | undefined;
  #nextId = 1;

  private constructor(readonly port: number) {}

  static async start(): Promise<UpstreamSpy> {
    for (let attempt = 0; ; attempt++) {
      const spy = new UpstreamSpy(await freePort());
      try {
        spy.#listen();
        return spy;
      } catch (err) {
        if (attempt >= 5) throw err;
      }
    }
  }

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** The script for the next new connection (queued: one per connection, in order). */
  nextConnection(script: Script): void {
    this.#scripts.push(script);
  }

  /** Every request every connection received, framed strictly, in connection order. */
  allRequests(): SpyRequest[] {
    return this.connections.flatMap((c) => c.framed().requests);
  }

  /**
   * Starts a new recording: closed connections are dropped, open ones (the gateway's pooled
   * keep-alive connections) stay but only what they receive from now on counts. Queued scripts
   * and the responder are reset.
   */
  clear(): void {
    const open = this.connections.filter((c) => c.closedAt === undefined);
    this.connections.length = 0;
    for (const c of open) {
      (c as ConnState).markNow();
      this.connections.push(c);
    }
    this.#scripts.length = 0;
    this.respond = echoResponder;
  }

  stop(): void {
    this.#listener?.stop(true);
  }

  #listen(): void {
    this.#listener = Bun.listen<ConnState>({
      hostname: "127.0.0.1",
      port: this.port,
      socket: {
        open: (socket) => {
          const state = new ConnState(this.#nextId++, socket);
          socket.data = state;
          this.connections.push(state);
          const script = this.#scripts.shift() ?? ((conn: SpyConnection) => this.#serve(conn));
          // A script that returns without closing leaves the connection open, to the peer's choice.
          void Promise.resolve()
            .then(() => script(state))
            .catch(() => {});
        },
        data: (socket, chunk) => socket.data.onData(chunk),
        drain: (socket) => socket.data.onDrain(),
        close: (socket) => socket.data.onClose(),
        error: (socket) => socket.data.onClose(),
      },
    });
  }

  /** The default loop: answer each request with `respond` until the peer closes. */
  async #serve(conn: SpyConnection): Promise<void> {
    for (;;) {
      let req: SpyRequest;
      try {
        req = await conn.nextRequest(60_000);
      } catch {
        return;
      }
      await this.respond(req, conn);
    }
  }
}

class ConnState implements SpyConnection {
  readonly openedAt = performance.now();
  closedAt: number | undefined;
  bytesWritten = 0;
  readonly writeTimes: number[] = [];
  readonly closed: Promise<void>;
  #chunks: Uint8Array[] = [];
  #size = 0;
  #consumed = 0;
  #mark = 0;
  #waiters: (() => void)[] = [];
  #pending: { data: Uint8Array; resolve: () => void; reject: (e: Error) => void }[] = [];
  #resolveClosed!: () => void;

  constructor(
    readonly id: number,
    private readonly socket: Socket<ConnState>,
  ) {
    this.closed = new Promise((r) => (this.#resolveClosed = r));
  }

  received(): Uint8Array {
    if (this.#chunks.length !== 1) this.#chunks = [concat(...this.#chunks)];
    return this.#chunks[0] ?? new Uint8Array(0);
  }

  framed(): Framed {
    return frameRequests(this.received().subarray(this.#mark));
  }

  markNow(): void {
    this.#mark = this.received().length;
  }

  onData(chunk: Uint8Array): void {
    this.#chunks.push(new Uint8Array(chunk));
    this.#size += chunk.length;
    this.#wake();
  }

  onDrain(): void {
    this.#flush();
  }

  onClose(): void {
    if (this.closedAt !== undefined) return;
    this.closedAt = performance.now();
    for (const p of this.#pending.splice(0)) p.reject(new Error("connection closed before the write completed"));
    this.#resolveClosed();
    this.#wake();
  }

  async nextRequest(timeoutMs = 10_000): Promise<SpyRequest> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const all = this.received();
      const framed = frameRequests(all.subarray(this.#consumed));
      const first = framed.requests[0];
      if (first) {
        this.#consumed += first.raw.length;
        return first;
      }
      if (framed.error) throw new Error(`unframeable request bytes: ${framed.error}`);
      if (this.closedAt !== undefined) throw new Error("connection closed");
      const left = deadline - performance.now();
      if (left <= 0) throw new Error(`no complete request within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }

  write(data: string | Uint8Array): Promise<void> {
    if (this.closedAt !== undefined) return Promise.reject(new Error("connection closed"));
    const bytes = typeof data === "string" ? enc.encode(data) : data;
    return new Promise((resolve, reject) => {
      this.#pending.push({ data: bytes, resolve, reject });
      if (this.#pending.length === 1) this.#flush();
    });
  }

  end(): void {
    if (this.closedAt === undefined) this.socket.end();
  }

  reset(): void {
    if (this.closedAt === undefined) this.socket.terminate();
  }

  #flush(): void {
    while (this.#pending.length > 0 && this.closedAt === undefined) {
      const head = this.#pending[0]!;
      const n = this.socket.write(head.data);
      if (n > 0) this.bytesWritten += n;
      if (n < head.data.length) {
        // The socket buffer is full: the rest goes out on the next drain.
        head.data = head.data.subarray(Math.max(0, n));
        return;
      }
      this.#pending.shift();
      this.writeTimes.push(performance.now());
      head.resolve();
    }
  }

  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }
}

/**
 * Frames bytes into HTTP/1.1 requests as a strict server does (RFC 9112): a head ending in CRLF
 * CRLF, a body of Content-Length bytes or chunked. What no strict server would accept — bare CR
 * or LF, obs-fold, both Content-Length and Transfer-Encoding, differing or non-numeric lengths, a
 * bad chunk size — stops framing with `error`: a gateway must never send such bytes upstream.
 */
export function frameRequests(bytes: Uint8Array): Framed {
  const requests: SpyRequest[] = [];
  let offset = 0;
  const text = latin1.decode(bytes);
  for (;;) {
    if (offset >= bytes.length) return { requests, rest: bytes.subarray(offset) };
    const headEnd = text.indexOf("\r\n\r\n", offset);
    if (headEnd < 0) {
      // A head still arriving may end in the CR of its next CRLF.
      const error = lineError(text.slice(offset).replace(/\r$/, ""));
      return { requests, rest: bytes.subarray(offset), ...(error ? { error } : {}) };
    }
    const head = text.slice(offset, headEnd);
    const fail = (error: string): Framed => ({ requests, rest: bytes.subarray(offset), error });
    const bad = lineError(head);
    if (bad) return fail(bad);
    const [requestLine = "", ...fieldLines] = head.split("\r\n");
    const line = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) (HTTP\/1\.[01])$/.exec(requestLine);
    if (!line) return fail(`bad request line ${JSON.stringify(requestLine)}`);
    const headers: [string, string][] = [];
    for (const field of fieldLines) {
      if (/^[ \t]/.test(field)) return fail(`obs-fold in ${JSON.stringify(field)}`);
      const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/.exec(field);
      if (!m) return fail(`bad header line ${JSON.stringify(field)}`);
      headers.push([m[1]!, m[2]!]);
    }
    const values = (name: string) => headers.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v);
    const lengths = values("content-length").flatMap((v) => v.split(",").map((s) => s.trim()));
    const codings = values("transfer-encoding");
    let bodyStart = headEnd + 4;
    let body: Uint8Array;
    let end: number;
    if (codings.length > 0) {
      if (lengths.length > 0) return fail("both Content-Length and Transfer-Encoding");
      if (codings.join(",").toLowerCase().replace(/\s/g, "") !== "chunked")
        return fail(`Transfer-Encoding ${JSON.stringify(codings.join(", "))}`);
      const parts: Uint8Array[] = [];
      for (;;) {
        const sizeEnd = text.indexOf("\r\n", bodyStart);
        if (sizeEnd < 0) return { requests, rest: bytes.subarray(offset) };
        const sizeText = text.slice(bodyStart, sizeEnd).split(";")[0]!;
        if (!/^[0-9A-Fa-f]{1,8}$/.test(sizeText)) return fail(`bad chunk size ${JSON.stringify(sizeText)}`);
        const size = Number.parseInt(sizeText, 16);
        if (size === 0) {
          const trailerEnd = text.indexOf("\r\n\r\n", sizeEnd);
          if (text.startsWith("\r\n", sizeEnd + 2)) end = sizeEnd + 4;
          else if (trailerEnd >= 0) end = trailerEnd + 4;
          else return { requests, rest: bytes.subarray(offset) };
          break;
        }
        if (sizeEnd + 2 + size + 2 > bytes.length) return { requests, rest: bytes.subarray(offset) };
        if (text.slice(sizeEnd + 2 + size, sizeEnd + 4 + size) !== "\r\n")
          return fail("chunk data longer than its size");
        parts.push(bytes.subarray(sizeEnd + 2, sizeEnd + 2 + size));
        bodyStart = sizeEnd + 4 + size;
      }
      body = concat(...parts);
    } else {
      if (lengths.some((l) => !/^\d+$/.test(l))) return fail(`bad Content-Length ${JSON.stringify(lengths)}`);
      if (new Set(lengths).size > 1) return fail(`differing Content-Lengths ${JSON.stringify(lengths)}`);
      const length = lengths.length ? Number(lengths[0]) : 0;
      if (bodyStart + length > bytes.length) return { requests, rest: bytes.subarray(offset) };
      body = bytes.subarray(bodyStart, bodyStart + length);
      end = bodyStart + length;
    }
    requests.push({
      method: line[1]!,
      target: line[2]!,
      version: line[3]!,
      headers,
      body,
      raw: bytes.subarray(offset, end),
    });
    offset = end;
  }
}

/** Why a head's text is not CRLF-delimited HTTP (a bare CR or LF, a NUL), or undefined. */
function lineError(head: string): string | undefined {
  const bareCr = /\r(?!\n)/.exec(head);
  if (bareCr) return `bare CR at ${bareCr.index}`;
  const bareLf = /(?<!\r)\n/.exec(head);
  if (bareLf) return `bare LF at ${bareLf.index}`;
  if (head.includes("\0")) return "NUL in the head";
  return undefined;
}

/** The value of a header (case-insensitive), all occurrences joined with ", "; null when absent. */
export function headerOf(req: Pick<SpyRequest, "headers">, name: string): string | null {
  const found = req.headers.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);
  return found.length ? found.join(", ") : null;
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}
