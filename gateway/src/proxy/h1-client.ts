/**
 * The gateway's HTTP/1.1 client for one upstream endpoint: a pool of keep-alive connections on
 * `Bun.connect`, each reading its answers with llhttp — Node's HTTP parser, which Bun ships
 * natively as `node:_http_common`'s HTTPParser — in strict mode. It replaced Bun's `fetch` on the data
 * path (bench/README.md, "2026-12-05 — an HTTP/1.1 client of our own"): 13 µs less CPU per
 * proxied request, a pool as large as the load needs (fetch keeps at most 64 idle sockets per
 * process and reopened ~1,000 upstream connections per benchmark run), and a connection whose
 * answer is refused can be closed — fetch had already pooled it by the time JavaScript saw the
 * answer.
 *
 * What the parser refuses, each as an `invalid` outcome (a 502 of the gateway's own) with the
 * connection closed: Content-Length with Transfer-Encoding, repeated Content-Length, a
 * Transfer-Encoding other than `chunked` or `chunked` twice, obs-fold, bare CR or LF, invalid
 * header tokens, a malformed status line or chunk size, a version other than HTTP/1.x, a head over
 * limits.maxHeaderBytes. Interim answers (1xx) are skipped, whatever framing headers they carry
 * (RFC 9112 §6.3: a 1xx ends at its empty line); a 101 is refused (the gateway never asks for an
 * upgrade). An HTTP/1.0 answer in chunks is read, and its connection closed after it (RFC 9112
 * §6.1). `Connection` cannot name Content-Length or Content-Type away: they frame and describe the
 * body whatever it says.
 *
 * A request written onto a pooled connection that the upstream closes or resets before a byte of
 * the answer arrives (it closed the idle connection as the request went out) is sent once more on
 * a new connection, within the same timeout, when its method is idempotent (RFC 9110 §9.2.2), as
 * Go's and nginx's clients do; other requests fail as before (the upstream may have acted on them).
 *
 * One request per connection at a time (no pipelining). A try's outcome settles once the answer
 * is known to be usable:
 *   - a body with a Content-Length up to SMALL_BODY_BYTES is read whole first (one Response from
 *     memory: the common API answer);
 *   - any other body streams through once its first chunk has arrived (a failure before it is an
 *     error outcome, never a response cut after its head), then with back-pressure: the socket is
 *     paused while the client's side of the stream is full;
 *   - no body (HEAD, 204, 304, an empty chunked body): at the end of the message.
 * The try's timeout covers that; a streaming body then gets the same span of silence between
 * chunks before it is cut (time the client's side spent full, with the socket paused, not counted).
 *
 * Idle connections are kept (most recently used first, up to MAX_IDLE) and closed after
 * IDLE_TIMEOUT_MS without use (a sweep every SWEEP_MS; uSockets' own socket timeouts tick in 4 s
 * steps, too coarse here) — shorter than common servers' keep-alive timeouts (Node 5 s,
 * Bun.serve 10 s), so the gateway, not the upstream, ends an idle connection and a request is
 * rarely written onto one the upstream is closing.
 */
import type { Socket } from "bun";
import { HTTPParser } from "node:_http_common";
import {
  CLIENT_CERT_MISSING,
  clientCertRefused,
  handshakeFailure,
  isCertificateRequired,
  errorText,
} from "../upstream/tls-failure.ts";
import { HTTP_TOKEN } from "../../../lib/http-token.ts";
import { promiseResolvedBy } from "../settled.ts";
import {
  CANCELLED,
  CLIENT_WATCH_MS,
  type ClientWatch,
  clientGone,
  lookAtClient,
  watchesClient,
} from "../upstream/client-watch.ts";
import { isIdempotentMethod } from "../upstream/outcome.ts";
import { isEndToEnd, isHopByHop } from "./headers.ts";
import {
  type HeaderPairs,
  type HttpOutcome,
  InvalidUpstreamResponse,
  type ResponseLimits,
  SMALL_BODY_BYTES,
} from "./http.ts";

/** TLS to an https endpoint (upstream/tls.ts builds it; the endpoint is dialled by address). */
export interface ClientTls {
  ca: string;
  cert?: string;
  key?: string;
  /** The name the endpoint's certificate must carry, and the SNI sent. */
  serverName: string;
}

/** What a request adds to `H1Pool.send`'s plain exchange. */
export interface SendOptions {
  /**
   * Whoever asked for the answer: when found gone before its head (looked at from CLIENT_WATCH_MS
   * into the try on, and after a connect: client-watch.ts), the try is cancelled.
   */
  client?: ClientWatch;
  /**
   * Lines written after `headers` (the gateway's own: X-Forwarded-*, X-Request-Id, Via). The
   * caller has removed those names from `headers`: writing them here costs no native set each.
   */
  extraHeaders?: HeaderPairs;
  /** Headers the answer carries in place of any the upstream sent under the same names. */
  stamp?: HeaderPairs;
}

/** Idle connections kept per endpoint; one released beyond this is closed. */
export const MAX_IDLE = 256;
/** An idle connection unused this long is closed (within SWEEP_MS more). */
export const IDLE_TIMEOUT_MS = 3_000;
const SWEEP_MS = 1_000;
/** llhttp's own ceiling on a head; limits.maxHeaderBytes (≤ 1 MiB, schema) is checked exactly below it. */
const PARSER_MAX_HEAD_BYTES = 2 * 1024 * 1024;

const { kOnMessageBegin, kOnHeaders, kOnHeadersComplete, kOnBody, kOnMessageComplete } = HTTPParser;

/**
 * Where a socket read is copied for the parser. The parser reaches a buffer's bytes through its
 * ArrayBuffer, which a fresh buffer (every socket read is one) has yet to get: JavaScriptCore
 * makes one for it then, ~0.4 µs per read, and a collection that finds many such buffers dead
 * stops the process longer — the young-generation pauses that set the p99 at 8 connections
 * (bench/README.md, 2026-12-08 second stop). The parser keeps nothing of its input (a body comes
 * out as a copy), and parses run one at a time, so one buffer serves every connection.
 */
const parseBuffer = Buffer.allocUnsafeSlow(64 * 1024);

/** `chunk` as the parser's input: its bytes in parseBuffer, unless it is larger (then itself). */
function parserInput(chunk: Uint8Array): Uint8Array {
  if (chunk.byteLength > parseBuffer.byteLength) return chunk;
  parseBuffer.set(chunk);
  return parseBuffer.subarray(0, chunk.byteLength);
}

/** One request and its answer on one connection. */
class Exchange {
  settled = false;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** Whoever asked for the answer, looked at from CLIENT_WATCH_MS into the try on (client-watch.ts). */
  client: ClientWatch | undefined;
  /** performance.now() when the request was written. */
  sentAt = 0;
  /** Header names and values (llhttp hands them over in batches of up to 32 pairs). */
  raw: string[] = [];
  interim = false;
  status = 0;
  statusText = "";
  /** The answer's end-to-end headers, as pairs: the Response copies them into its own Headers. */
  headers: [string, string][] | undefined;
  /** The body streams to the client once its first chunk is in; else it is read whole before the outcome settles. */
  streams = false;
  /** Declared Content-Length (-1: none), and body bytes seen so far. */
  length = -1;
  bodyBytes = 0;
  chunks: Uint8Array<ArrayBuffer>[] = [];
  controller: ReadableStreamDefaultController<Uint8Array> | undefined;
  /** The socket is paused because the client's side of the stream is full. */
  paused = false;
  /** The head is in: a failure from here on (after settling) cuts the body. */
  headDone = false;
  /** A byte of the answer has arrived. */
  answered = false;
  /** The request as written, and whether it may be sent again on a new connection (see the file comment). */
  request: Uint8Array | undefined;
  replayable = false;
  /** Headers the answer carries in place of any the upstream sent under the same names (SendOptions.stamp). */
  stamp: HeaderPairs | undefined;

  /** Settles the try's promise (exchangeOn, promiseResolvedBy): a try never rejects. */
  resolve!: (outcome: HttpOutcome) => void;

  constructor(
    readonly isHead: boolean,
    readonly limits: ResponseLimits,
    /** The try's timeout; also the silence a streaming body may keep between chunks. */
    readonly timeoutMs: number,
  ) {}

  /** Settles the try with the answer's head and `body`. */
  /** Settles the try with the answer's head and `body`; false if that is no valid Response (then an error outcome). */
  respond(body: Uint8Array<ArrayBuffer> | ReadableStream<Uint8Array> | null): boolean {
    this.settled = true;
    // A byte body without Content-Type goes out labelled application/octet-stream by Bun.serve; as
    // a stream it would go out unlabelled but without its Content-Length past a few hundred bytes
    // (Bun.serve ignores the header on a stream), which matters more (docs/gateway.md).
    let response: Response;
    try {
      response = new Response(body, { status: this.status, statusText: this.statusText, headers: this.headers! });
    } catch (err) {
      const error = new InvalidUpstreamResponse("Upstream response is not valid HTTP", (err as Error).message);
      this.resolve({ kind: "error", error });
      return false;
    }
    this.resolve({ kind: "response", response });
    return true;
  }
}

class Connection {
  socket: Socket<Connection> | undefined;
  readonly parser = new HTTPParser();
  exchange: Exchange | undefined;
  /** Request bytes the socket has not taken yet (written on drain). */
  outbox: Uint8Array | undefined;
  closed = false;
  /** The answer in progress asks the connection to close (Connection: close, HTTP/1.0, close-delimited). */
  keepAlive = true;
  /** Idle in the pool, since (performance.now()). */
  idle = false;
  idleSince = 0;
  /** Whether the TLS handshake failed (the request never reached the server), and why. */
  handshakeFailed = false;
  handshakeError: Error | null = null;
  /** performance.now() when the TLS handshake completed; 0: plain, or not yet. */
  handshakeAt = 0;
  /** Whether the gateway presents a client certificate on this connection (mutual TLS). */
  clientCert = false;
  /** Whether the upstream has sent anything on this connection. */
  received = false;
  /** Requests sent on this connection: from the second on, it was reused from the pool. */
  uses = 0;
  /** An answer began with no request waiting for it: the connection cannot be trusted. */
  stray = false;
  /**
   * Inside `parser.execute` (its callbacks run there): closing the connection then would free the
   * parser under itself, so it is marked and done once execute returns.
   */
  parsing = false;
  closeAfterParse = false;
  /**
   * Body bytes still to come of a streamed answer with a Content-Length, passed on as the socket
   * delivers them instead of through the parser (which copies every chunk); -1: none.
   */
  passThrough = -1;

  constructor(readonly pool: H1Pool) {
    const parser = this.parser;
    parser.initialize(HTTPParser.RESPONSE, {}, PARSER_MAX_HEAD_BYTES, 0);
    parser[kOnMessageBegin] = () => {
      if (!this.exchange) this.stray = true;
    };
    parser[kOnHeaders] = (names: string[]) => this.#onHeaders(names);
    parser[kOnHeadersComplete] = (
      major: number,
      minor: number,
      raw: string[] | undefined,
      _method: unknown,
      _url: unknown,
      status: number,
      statusText: string,
      _upgrade: boolean,
      keepAlive: boolean,
    ) => this.#onHeadersComplete(raw, status, statusText, keepAlive, major, minor);
    parser[kOnBody] = (chunk: Uint8Array<ArrayBuffer>) => this.#onBody(chunk);
    parser[kOnMessageComplete] = () => this.#onMessageComplete();
  }

  /**
   * Sends one request; the exchange settles through `exchange.resolve`, or `cancelled` when its
   * client is found gone (from CLIENT_WATCH_MS on: client-watch.ts).
   */
  send(exchange: Exchange, request: Uint8Array, client: ClientWatch | undefined): void {
    this.exchange = exchange;
    this.keepAlive = true;
    this.uses++;
    exchange.client = client;
    exchange.sentAt = performance.now();
    exchange.timer = watchesClient(client, exchange.timeoutMs)
      ? setTimeout(() => this.#watchClient(exchange), CLIENT_WATCH_MS)
      : setTimeout(() => this.#timedOut(), exchange.timeoutMs);
    const socket = this.socket!;
    const written = socket.write(request);
    if (written < request.byteLength) this.outbox = written > 0 ? request.subarray(written) : request;
  }

  drain(): void {
    const rest = this.outbox;
    if (!rest || !this.socket) return;
    const written = this.socket.write(rest);
    this.outbox = written >= rest.byteLength ? undefined : written > 0 ? rest.subarray(written) : rest;
  }

  data(chunk: Uint8Array): void {
    this.received = true;
    const exchange = this.exchange;
    if (!exchange) {
      // Nothing was asked: an upstream writing unprompted cannot be trusted with the next request.
      this.destroy();
      return;
    }
    exchange.answered = true;
    if (this.passThrough > 0) {
      this.#passBody(exchange, chunk);
      return;
    }
    const result = this.#parse(parserInput(chunk));
    if (result instanceof Error) this.#refuse(parseError(result, this.exchange?.limits.maxHeaderBytes));
    // Bytes after the answer (the start of one nobody asked for), or a close decided in a callback.
    else if (this.stray || this.closeAfterParse) this.destroy();
    else if (this.exchange === exchange && exchange.streams && exchange.length > 0) {
      // The head is parsed and the length known: the rest of the body bypasses the parser.
      const rest = exchange.length - exchange.bodyBytes;
      if (rest > 0) this.passThrough = rest;
    }
  }

  /**
   * Runs the parser on `input`, or ends its input when there is none (its callbacks run inside);
   * an exception from a callback — an answer that cannot become a Response — is returned as the
   * parse error it amounts to. No closure per call: this runs for every read.
   */
  #parse(input?: Uint8Array): number | undefined | (Error & { code?: string }) {
    this.parsing = true;
    try {
      return input ? this.parser.execute(input) : this.parser.finish();
    } catch (err) {
      return Object.assign(err instanceof Error ? err : new Error(String(err)), { code: "HPE_USER" });
    } finally {
      this.parsing = false;
    }
  }

  #passBody(exchange: Exchange, chunk: Uint8Array): void {
    const take = Math.min(this.passThrough, chunk.byteLength);
    this.passThrough -= take;
    this.#onBody((take === chunk.byteLength ? chunk : chunk.subarray(0, take)) as Uint8Array<ArrayBuffer>);
    if (this.passThrough > 0 || this.exchange !== exchange) return;
    this.passThrough = -1;
    // The parser still expects those bytes: it starts afresh for the next answer.
    this.parser.initialize(HTTPParser.RESPONSE, {}, PARSER_MAX_HEAD_BYTES, 0);
    this.#onMessageComplete();
    // More than the declared length: bytes nobody asked for.
    if (take < chunk.byteLength) this.destroy();
  }

  /** The upstream finished sending (FIN): what it sent is all there will be. */
  ended(): void {
    this.closedBySocket();
    this.socket?.terminate();
  }

  /** The socket closed (either side). */
  closedBySocket(error?: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.pool.forget(this);
    const exchange = this.exchange;
    // The upstream closed a pooled connection as the request went out: once more, on a new one.
    if (exchange && this.uses > 1 && !exchange.answered && exchange.replayable && !this.handshakeFailed) {
      this.exchange = undefined;
      clearTimeout(exchange.timer);
      this.parser.close();
      this.pool.replay(exchange);
      return;
    }
    if (exchange && !error) {
      // A body delimited by the connection's end completes here.
      const result = this.#parse();
      // HPE_INVALID_EOF_STATE: the message was not complete (told below as a close mid-answer).
      if (result instanceof Error && this.exchange && result.code !== "HPE_INVALID_EOF_STATE") {
        this.#refuse(parseError(result, this.exchange?.limits.maxHeaderBytes));
        return;
      }
    }
    if (this.exchange) this.#fail(this.exchange, error ? this.#explained(error) : this.#closedError());
    this.parser.close();
  }

  /**
   * A TLS connection that closes within a moment of its handshake without having sent a byte: the
   * upstream most likely checked the gateway's client certificate and refused it. With TLS 1.3 the
   * client's handshake is over before the server has seen that certificate, so the refusal comes as
   * a close (Bun reports no alert for an unknown CA or an expired certificate) or an error
   * (TLSV1_ALERT_CERTIFICATE_REQUIRED) just after it. Only said when the gateway presents one.
   */
  #refusedAfterHandshake(): boolean {
    return this.clientCert && this.#justAfterHandshake();
  }

  #justAfterHandshake(): boolean {
    return this.handshakeAt > 0 && !this.received && performance.now() - this.handshakeAt < CLIENT_CERT_REFUSAL_MS;
  }

  /** A socket error, with what it most likely means when it is about the client certificate. */
  #explained(error: Error): Error {
    if (this.#refusedAfterHandshake())
      return new Error(`${CLIENT_CERT_REFUSED} (${errorText(error)})`, { cause: error });
    // The gateway presents none, and the upstream's alert says it wants one.
    if (this.#justAfterHandshake() && isCertificateRequired(error))
      return new Error(`${CLIENT_CERT_MISSING} (${errorText(error)})`, { cause: error });
    return error;
  }

  destroy(): void {
    if (this.parsing) {
      this.closeAfterParse = true;
      return;
    }
    if (!this.closed) this.socket?.terminate();
    this.closedBySocket();
  }

  #armStall(exchange: Exchange): void {
    clearTimeout(exchange.timer);
    exchange.timer = setTimeout(() => this.#streamStalled(exchange), exchange.timeoutMs);
  }

  #streamStalled(exchange: Exchange): void {
    if (this.exchange !== exchange) return;
    this.#fail(exchange, new Error(`the upstream sent nothing for ${exchange.timeoutMs} ms mid-body`));
    this.destroy();
  }

  #closedError(): Error {
    const exchange = this.exchange;
    if (this.handshakeFailed) return connectError(handshakeFailure(this.handshakeError));
    if (this.#refusedAfterHandshake()) return new Error(CLIENT_CERT_REFUSED);
    return exchange?.headDone
      ? new Error("the upstream closed the connection before the body was complete")
      : new Error("the upstream closed the connection before answering");
  }

  #onHeaders(names: string[]): void {
    const exchange = this.exchange;
    // After the head: trailers of a chunked body, which a Response cannot carry on; dropped.
    if (!exchange || exchange.headDone) return;
    for (const item of names) exchange.raw.push(item);
  }

  #onHeadersComplete(
    raw: string[] | undefined,
    status: number,
    statusText: string,
    keepAlive: boolean,
    major: number,
    minor: number,
  ): number {
    const exchange = this.exchange;
    if (!exchange) return 0;
    if (raw) for (const item of raw) exchange.raw.push(item);
    const names = exchange.raw;
    exchange.raw = [];
    if (major !== 1) {
      this.#refuse(
        new InvalidUpstreamResponse("Upstream response is not valid HTTP", `HTTP/${major}.${minor} is not HTTP/1.x`),
      );
      return 0;
    }
    const http10 = minor === 0;
    if (status < 100 || status > 599) {
      this.#refuse(new InvalidUpstreamResponse("Upstream response is not valid HTTP", `status ${status}`));
      return 0;
    }
    if (status < 200) {
      if (status === 101) {
        this.#refuse(new InvalidUpstreamResponse("Upstream switched protocols", "the upstream answered 101 unasked"));
        return 0;
      }
      exchange.interim = true;
      // 1: no body, whatever Content-Length or Transfer-Encoding it carries (llhttp would read one
      // for a 1xx other than 100, 102 and 103).
      return 1;
    }
    exchange.interim = false;
    // Pairs, not a Headers: `new Response` makes its own Headers from them either way, and
    // building one here first cost a native append per header and a copy (bench/census.ts).
    let headers: [string, string][] = [];
    const stamp = exchange.stamp;
    let bytes = 0;
    let length = -1;
    let chunked = false;
    let connectionNames: string | undefined;
    for (let i = 0; i < names.length; i += 2) {
      const name = names[i]!;
      const value = names[i + 1]!;
      bytes += name.length + value.length;
      const lower = name.toLowerCase();
      if (lower === "content-length") length = Number(value);
      else if (lower === "transfer-encoding") {
        // llhttp reads a final "chunked" as chunked and anything else as "until close"; the
        // gateway does not decode transfer codings, so only chunked passes.
        if (value.trim().toLowerCase() !== "chunked") {
          this.#refuse(
            new InvalidUpstreamResponse(
              "Upstream response framing is not supported",
              `Transfer-Encoding "${value}"; only chunked is accepted`,
            ),
          );
          return 0;
        }
        // Two lines are one list (RFC 9110 §5.3): chunked twice, as "chunked, chunked" is.
        if (chunked) {
          this.#refuse(
            new InvalidUpstreamResponse(
              "Upstream response framing is not supported",
              "Transfer-Encoding chunked is repeated; it may be applied once (RFC 9112 §7)",
            ),
          );
          return 0;
        }
        chunked = true;
        // HTTP/1.0 has no chunked coding: the framing is faulty, and the connection is closed
        // after this answer (RFC 9112 §6.1).
        if (http10) keepAlive = false;
        continue;
      } else if (lower === "connection") connectionNames = connectionNames ? `${connectionNames}, ${value}` : value;
      if (isHopByHop(lower) || (stamp !== undefined && stamps(stamp, lower))) continue;
      headers.push([name, value]);
    }
    // The Connection header's names, lower case: only header names (tokens) name anything.
    let tokens: Set<string> | undefined;
    if (connectionNames) {
      tokens = new Set();
      for (const name of connectionNames.split(",")) {
        const trimmed = name.trim();
        if (HTTP_TOKEN.test(trimmed)) tokens.add(trimmed.toLowerCase());
      }
    }
    // An answer to HEAD without a length: llhttp, not yet told that no body follows, takes it as
    // delimited by the connection's end and says "close"; the connection is kept unless the
    // upstream itself asked to close it (Node's http server answers HEAD this way).
    if (exchange.isHead && length < 0 && !chunked && !keepAlive)
      keepAlive = http10 ? tokens?.has("keep-alive") === true : tokens?.has("close") !== true;
    this.keepAlive = keepAlive;
    if (bytes > exchange.limits.maxHeaderBytes) {
      this.#refuse(
        new InvalidUpstreamResponse(
          "Upstream response headers too large",
          `the response headers are ${bytes} bytes; the limit is ${exchange.limits.maxHeaderBytes}`,
        ),
      );
      return 0;
    }
    // The headers Connection names go, but for the length the body was framed by and what the body is.
    if (tokens && tokens.size > 0)
      headers = headers.filter(([name]) => {
        const lower = name.toLowerCase();
        return !tokens.has(lower) || isEndToEnd(lower);
      });
    // Read, never changed, by the Response made from the list.
    if (stamp) for (const pair of stamp) headers.push(pair as [string, string]);
    // An answer to HEAD without a length: Bun.serve would add `content-length: 0`, telling the
    // client the GET's body is empty. Only a length or a transfer coding stops it; the GET's answer
    // through the gateway is chunked when its body is more than a small one, so the HEAD's says
    // chunked (RFC 9110 §9.3.2 lets it leave the length out); Bun sends no body. Bun.serve does
    // not tell the client's HTTP version, so an HTTP/1.0 client gets it too (docs/gateway.md).
    if (exchange.isHead && length < 0 && !nullBodyStatus(status)) headers.push(["transfer-encoding", "chunked"]);
    exchange.status = status;
    exchange.statusText = statusText;
    exchange.headers = headers;
    exchange.headDone = true;
    exchange.length = exchange.isHead || nullBodyStatus(status) ? 0 : length;
    // Above the response cap the body is left unread: proxy/response-limit.ts refuses it by its length.
    const bodyLength = exchange.length;
    exchange.streams = !(
      bodyLength >= 0 &&
      bodyLength <= SMALL_BODY_BYTES &&
      bodyLength <= exchange.limits.maxResponseBytes
    );
    if (exchange.streams && bodyLength > exchange.limits.maxResponseBytes) this.#settleStream(exchange);
    // 1: no body follows (the answer to HEAD declares the GET's length without sending it).
    return exchange.isHead ? 1 : 0;
  }

  #onBody(chunk: Uint8Array<ArrayBuffer>): void {
    const exchange = this.exchange;
    if (!exchange || exchange.interim) return;
    exchange.bodyBytes += chunk.byteLength;
    if (!exchange.streams) {
      exchange.chunks.push(chunk);
      return;
    }
    if (!exchange.settled) this.#settleStream(exchange);
    const controller = exchange.controller;
    if (!controller) return;
    controller.enqueue(chunk);
    if ((controller.desiredSize ?? 1) > 0) exchange.timer?.refresh();
    else {
      // The client's side is full: the upstream waits for us, not the other way round.
      clearTimeout(exchange.timer);
      exchange.paused = true;
      this.socket?.pause();
    }
  }

  #onMessageComplete(): void {
    const exchange = this.exchange;
    if (!exchange) return;
    if (exchange.interim) {
      exchange.interim = false;
      return;
    }
    this.exchange = undefined;
    clearTimeout(exchange.timer);
    if (!exchange.settled) {
      if (!exchange.respond(exchange.isHead || nullBodyStatus(exchange.status) ? null : concat(exchange.chunks))) {
        this.destroy();
        return;
      }
    } else if (exchange.controller) exchange.controller.close();
    this.#release();
  }

  /** Settles the try with a streamed body (its first chunk about to be enqueued, or never read). */
  #settleStream(exchange: Exchange): void {
    // Between chunks, the same span of silence the try had before its answer.
    this.#armStall(exchange);
    const body = new ReadableStream<Uint8Array>(
      {
        start: (controller) => {
          exchange.controller = controller;
        },
        pull: () => {
          if (this.exchange !== exchange || !this.socket || !exchange.paused) return;
          // A cleared timer cannot be refreshed: the silence is timed afresh from here.
          exchange.paused = false;
          this.#armStall(exchange);
          this.socket.resume();
        },
        cancel: () => {
          // The client went away (or the body was refused): the rest of it is never read.
          clearTimeout(exchange.timer);
          if (this.exchange === exchange) {
            exchange.controller = undefined;
            this.exchange = undefined;
            this.destroy();
          }
        },
      },
      { highWaterMark: 64 * 1024, size: (chunk) => chunk?.byteLength ?? 0 },
    );
    if (!exchange.respond(body)) {
      exchange.controller = undefined;
      if (this.exchange === exchange) this.exchange = undefined;
      this.destroy();
    }
  }

  #release(): void {
    if (this.closed) return;
    if (!this.keepAlive || this.outbox) {
      this.destroy();
      return;
    }
    this.socket!.resume();
    this.pool.release(this);
  }

  #timedOut(): void {
    const exchange = this.exchange;
    if (!exchange || exchange.settled) return;
    exchange.settled = true;
    this.exchange = undefined;
    exchange.resolve({ kind: "timeout" });
    this.destroy();
  }

  /** CLIENT_WATCH_MS into an unanswered try: cancelled if its client is gone, else watched until the timeout. */
  #watchClient(exchange: Exchange): void {
    if (this.exchange !== exchange || exchange.settled) return;
    const left = lookAtClient(exchange.client!, () => this.#cancelled(exchange), exchange.sentAt, exchange.timeoutMs);
    if (left !== undefined) exchange.timer = setTimeout(() => this.#timedOut(), left);
  }

  /**
   * Whoever asked is gone before the answer: the try settles `cancelled` and the connection closes,
   * which is how an HTTP/1.1 upstream learns of it (an answer it is still writing has nowhere to
   * go, so the connection could not carry another request anyway).
   */
  #cancelled(exchange: Exchange): void {
    if (this.exchange !== exchange || exchange.settled) return;
    exchange.settled = true;
    this.exchange = undefined;
    clearTimeout(exchange.timer);
    exchange.resolve({ kind: "cancelled" });
    this.destroy();
  }

  /** The answer is refused: the try fails and the connection, whose framing is now unknown, closes. */
  #refuse(error: Error): void {
    const exchange = this.exchange;
    if (exchange) this.#fail(exchange, error);
    this.destroy();
  }

  #fail(exchange: Exchange, error: Error): void {
    if (this.exchange === exchange) this.exchange = undefined;
    clearTimeout(exchange.timer);
    if (!exchange.settled) {
      exchange.settled = true;
      exchange.resolve(
        (error as { connect?: boolean }).connect ? { kind: "connect-error", error } : { kind: "error", error },
      );
    } else if (exchange.controller) {
      exchange.controller.error(error);
      exchange.controller = undefined;
    }
  }
}

const handlers = {
  open(socket: Socket<Connection>) {
    socket.data.socket = socket;
  },
  data(socket: Socket<Connection>, chunk: Uint8Array) {
    socket.data.data(chunk);
  },
  drain(socket: Socket<Connection>) {
    socket.data.drain();
  },
  end(socket: Socket<Connection>) {
    socket.data.ended();
  },
  close(socket: Socket<Connection>, error?: Error) {
    socket.data.closedBySocket(error);
  },
  error(socket: Socket<Connection>, error: Error) {
    socket.data.closedBySocket(error);
  },
  handshake(socket: Socket<Connection>, success: boolean, authorizationError: Error | null) {
    if (success && !authorizationError) {
      socket.data.handshakeAt = performance.now();
      return;
    }
    socket.data.handshakeFailed = true;
    socket.data.handshakeError = authorizationError;
    socket.terminate();
    socket.data.closedBySocket();
  },
};

/** How soon after the handshake a silent close is read as the upstream refusing the client certificate. */
const CLIENT_CERT_REFUSAL_MS = 1000;

const CLIENT_CERT_REFUSED = clientCertRefused(" without answering");

/** A connection-error outcome's error: the request never reached the upstream (safe to retry anywhere). */
function connectError(message: string, cause?: unknown): Error {
  return Object.assign(new Error(message, cause === undefined ? {} : { cause }), { connect: true });
}

/** What llhttp refused, told as the gateway's 502 tells it; `maxHeaderBytes`: the exchange's limit. */
function parseError(error: Error & { code?: string }, maxHeaderBytes?: number): Error {
  switch (error.code) {
    case "HPE_HEADER_OVERFLOW":
      return new InvalidUpstreamResponse(
        "Upstream response headers too large",
        `the response head exceeds ${PARSER_MAX_HEAD_BYTES} bytes` +
          (maxHeaderBytes !== undefined ? `; the limit is ${maxHeaderBytes}` : ""),
      );
    case "HPE_UNEXPECTED_CONTENT_LENGTH":
      return new InvalidUpstreamResponse(
        "Upstream response framing is ambiguous",
        "the response has both Content-Length and Transfer-Encoding, or Content-Length twice",
      );
    case "HPE_INVALID_TRANSFER_ENCODING":
      return new InvalidUpstreamResponse(
        "Upstream response framing is ambiguous",
        "the response's Transfer-Encoding is empty or not last-chunked, or comes with a Content-Length",
      );
    case "HPE_USER":
      return new InvalidUpstreamResponse("Upstream response is not valid HTTP", error.message);
    default:
      return new InvalidUpstreamResponse(
        "Upstream response is not valid HTTP",
        `llhttp ${error.code ?? "error"}${(error as { reason?: string }).reason ? `: ${(error as { reason?: string }).reason}` : ""}`,
      );
  }
}

function nullBodyStatus(status: number): boolean {
  return status === 204 || status === 304;
}

/** One exchange on `connection`, settled with its outcome. */
function exchangeOn(
  connection: Connection,
  request: Uint8Array,
  isHead: boolean,
  limits: ResponseLimits,
  timeoutMs: number,
  client: ClientWatch | undefined,
  stamp: HeaderPairs | undefined,
  replayable: boolean,
): Promise<HttpOutcome> {
  const exchange = new Exchange(isHead, limits, timeoutMs);
  exchange.request = request;
  exchange.replayable = replayable;
  exchange.stamp = stamp;
  const promise = promiseResolvedBy(exchange);
  connection.send(exchange, request, client);
  return promise;
}

/** Whether `stamp` sets the header named `lower`. */
function stamps(stamp: HeaderPairs, lower: string): boolean {
  for (const [name] of stamp) if (name === lower) return true;
  return false;
}

function concat(chunks: Uint8Array<ArrayBuffer>[]): Uint8Array<ArrayBuffer> {
  if (chunks.length === 1) return chunks[0]!;
  let size = 0;
  for (const chunk of chunks) size += chunk.byteLength;
  const bytes = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return bytes;
}

/** Keep-alive connections to one endpoint (`host:port`), plain or TLS. */
export class H1Pool {
  readonly #idle: Connection[] = [];
  readonly #open = new Set<Connection>();
  readonly #host: string;
  readonly #port: number;
  #closed = false;
  /** Connections opened so far (metrics and tests). */
  opened = 0;

  constructor(
    /** host:port; an IPv6 host in brackets. */
    readonly address: string,
    /** TLS for each new connection (read when it is opened, so renewed files are used); undefined: plain. */
    private readonly tls?: () => ClientTls | undefined,
  ) {
    const colon = address.lastIndexOf(":");
    const host = address.slice(0, colon);
    this.#host = host.startsWith("[") ? host.slice(1, -1) : host;
    this.#port = Number(address.slice(colon + 1));
  }

  get idleCount(): number {
    return this.#idle.length;
  }

  get openCount(): number {
    return this.#open.size;
  }

  /**
   * Sends one request and settles with the answer (never rejects). `headers` are sent as they
   * are, then `options.extraHeaders`, with Host set to the endpoint's address and Content-Length
   * to the body's. When `options.client` is found gone before the answer's head, the try settles
   * `cancelled` and its connection closes.
   */
  send(
    method: string,
    pathAndQuery: string,
    headers: Headers,
    body: Uint8Array | null,
    timeoutMs: number,
    limits: ResponseLimits,
    options?: SendOptions,
  ): Promise<HttpOutcome> {
    const request = serialize(method, pathAndQuery, this.address, headers, options?.extraHeaders, body);
    const client = options?.client;
    const stamp = options?.stamp;
    const connection = this.#takeIdle();
    // Not an async function: the pooled connection's way costs no generator and no second promise.
    if (!connection) return this.#sendOnNew(request, method === "HEAD", timeoutMs, limits, client, stamp);
    return exchangeOn(
      connection,
      request,
      method === "HEAD",
      limits,
      timeoutMs,
      client,
      stamp,
      isIdempotentMethod(method),
    );
  }

  /**
   * Sends `exchange`'s request again, on a new connection, with what is left of its time: the
   * pooled connection it went out on was closed before a byte of the answer came (see the file
   * comment). Settles it as a first try on a new connection would, never replaying again.
   */
  replay(exchange: Exchange): void {
    const left = exchange.timeoutMs - (performance.now() - exchange.sentAt);
    const settle = (outcome: HttpOutcome) => {
      exchange.settled = true;
      exchange.resolve(outcome);
    };
    if (left < 1) {
      settle({ kind: "timeout" });
      return;
    }
    void this.#sendOnNew(
      exchange.request!,
      exchange.isHead,
      left,
      exchange.limits,
      exchange.client,
      exchange.stamp,
    ).then(settle);
  }

  /** send() when no pooled connection is free: a new one first, its connect counted in the try's time. */
  async #sendOnNew(
    request: Uint8Array,
    isHead: boolean,
    timeoutMs: number,
    limits: ResponseLimits,
    client: ClientWatch | undefined,
    stamp: HeaderPairs | undefined,
  ): Promise<HttpOutcome> {
    const started = performance.now();
    const opened = await this.#connect(timeoutMs);
    if (opened.kind !== "connection") return opened.outcome;
    const connection = opened.connection;
    if (clientGone(client)) {
      // Gone while the connection opened (a connect is slow enough to look): it is kept for the next request.
      this.release(connection);
      return CANCELLED;
    }
    // A new connection's request is never replayed: its failure says something about the endpoint.
    return exchangeOn(
      connection,
      request,
      isHead,
      limits,
      Math.max(1, timeoutMs - (performance.now() - started)),
      client,
      stamp,
      false,
    );
  }

  #takeIdle(): Connection | undefined {
    const idle = this.#idle;
    while (idle.length > 0) {
      const connection = idle.pop()!;
      connection.idle = false;
      if (!connection.closed) return connection;
    }
    return undefined;
  }

  async #connect(
    timeoutMs: number,
  ): Promise<{ kind: "connection"; connection: Connection } | { kind: "failed"; outcome: HttpOutcome }> {
    if (this.#closed) return { kind: "failed", outcome: { kind: "connect-error", error: connectError("pool closed") } };
    const connection = new Connection(this);
    const tls = this.tls?.();
    connection.clientCert = tls?.cert !== undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(resolve, timeoutMs, "timeout");
    });
    const connecting = Bun.connect<Connection>({
      hostname: this.#host,
      port: this.#port,
      socket: handlers,
      data: connection,
      ...(tls ? { tls: { ca: tls.ca, cert: tls.cert, key: tls.key, serverName: tls.serverName } } : {}),
    });
    try {
      const winner = await Promise.race([connecting, timedOut]);
      if (winner === "timeout") {
        void connecting.then((socket) => socket.terminate()).catch(() => {});
        return { kind: "failed", outcome: { kind: "timeout" } };
      }
      connection.socket = winner;
      this.opened++;
      if (connection.handshakeFailed)
        return {
          kind: "failed",
          outcome: { kind: "connect-error", error: connectError(handshakeFailure(connection.handshakeError)) },
        };
      if (this.#closed || connection.closed) {
        connection.destroy();
        const reason = this.#closed ? "pool closed" : "the connection closed as it opened";
        return { kind: "failed", outcome: { kind: "connect-error", error: connectError(reason) } };
      }
      this.#open.add(connection);
      return { kind: "connection", connection };
    } catch (err) {
      const error = err as Error & { code?: string };
      const message = `cannot connect to ${this.address}: ${error.code ?? error.message}`;
      return {
        kind: "failed",
        outcome: { kind: "connect-error", error: Object.assign(connectError(message, err), { code: error.code }) },
      };
    } finally {
      clearTimeout(timer);
    }
  }

  /** A connection whose answer ended cleanly and may carry another request. */
  release(connection: Connection): void {
    if (this.#closed || this.#idle.length >= MAX_IDLE) {
      connection.destroy();
      return;
    }
    connection.idle = true;
    connection.idleSince = performance.now();
    this.#idle.push(connection);
    sweeper.watch(this);
  }

  /** Closes the connections idle for longer than IDLE_TIMEOUT_MS; whether any stay idle. */
  sweep(now: number): boolean {
    const idle = this.#idle;
    // Most recently used last: the oldest are first.
    while (idle.length > 0 && now - idle[0]!.idleSince >= IDLE_TIMEOUT_MS) idle[0]!.destroy();
    return idle.length > 0;
  }

  /** A connection closed: out of the pool. */
  forget(connection: Connection): void {
    this.#open.delete(connection);
    if (!connection.idle) return;
    connection.idle = false;
    const at = this.#idle.indexOf(connection);
    if (at >= 0) this.#idle.splice(at, 1);
  }

  /** Closes the idle connections now and the busy ones when their answer is complete. */
  close(): void {
    this.#closed = true;
    for (const connection of [...this.#idle]) connection.destroy();
  }
}

/** One timer for every pool with idle connections, running only while there are some. */
const sweeper = {
  pools: new Set<H1Pool>(),
  timer: undefined as ReturnType<typeof setInterval> | undefined,
  watch(pool: H1Pool): void {
    this.pools.add(pool);
    if (this.timer) return;
    this.timer = setInterval(() => {
      const now = performance.now();
      for (const p of this.pools) if (!p.sweep(now)) this.pools.delete(p);
      if (this.pools.size === 0) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    }, SWEEP_MS);
    this.timer.unref();
  },
};

/** The pieces of a request head, gathered by `addHeader` (module-level: serialize is synchronous). */
const headParts: string[] = [];

function addHeader(value: string, name: string): void {
  if (name !== "content-length" && name !== "host") headParts.push(name, ": ", value, "\r\n");
}

/**
 * The request head and body as one buffer: one write, one packet for a small request. The head
 * is joined from its pieces once: a template string and a concatenation per header made two
 * strings each (bench/census.ts), and a callback made per request a closure.
 */
function serialize(
  method: string,
  pathAndQuery: string,
  host: string,
  headers: Headers,
  extraHeaders: HeaderPairs | undefined,
  body: Uint8Array | null,
): Uint8Array {
  headParts.length = 0;
  headParts.push(method, " ", pathAndQuery, " HTTP/1.1\r\nhost: ", host, "\r\n");
  headers.forEach(addHeader);
  if (extraHeaders) for (const [name, value] of extraHeaders) headParts.push(name, ": ", value, "\r\n");
  const size = body ? body.byteLength : 0;
  // A body-less GET/HEAD says nothing about a length, as browsers and fetch do.
  if (size > 0 || (method !== "GET" && method !== "HEAD")) headParts.push("content-length: ", String(size), "\r\n");
  headParts.push("\r\n");
  const head = headParts.join("");
  headParts.length = 0;
  // Header values are byte strings (Headers allows nothing else): one byte per character.
  const bytes = Buffer.allocUnsafe(head.length + size);
  bytes.write(head, 0, "latin1");
  if (size > 0) bytes.set(body!, head.length);
  return bytes;
}
