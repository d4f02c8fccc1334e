/**
 * A lean unary gRPC client on `node:http2`: one channel per endpoint, one HTTP/2 session at a
 * time, a call is one stream (headers, one length-prefixed message, END_STREAM; read the initial
 * headers, the message, the trailers). It replaces grpc-js on the request path, whose per-call
 * machinery (Metadata maps and clones, resolving/load-balancing/retrying call layers, filters)
 * cost about 2.6× this client's CPU per call on Bun — the gateway does its own balancing, retries
 * and deadlines (upstream/dispatch.ts), so none of those layers had work to do. docs/design.md
 * "Hot-path costs"; the figures are in bench/README.md ("What we tried").
 *
 * Connection handling:
 * - the session is opened on the first call and re-opened on the first call after it closed (the
 *   upstream's GOAWAY — rpcapp sends one every max_connection_age —, a reset, an error);
 * - a failed connect fails the calls that waited for it at once, as UNAVAILABLE with `unsent`
 *   (nothing reached the endpoint: dispatch.ts may retry any method elsewhere), and so does every
 *   call during the backoff that follows (200 ms, doubling to 2 s, ±20 % jitter) — the way grpc-js
 *   fails calls fast while a channel is in TRANSIENT_FAILURE. `reset()` ends the backoff
 *   (upstream.ts calls it for an endpoint the health checks found down, so the check that
 *   readmits it dials at once);
 * - a GOAWAY before the server's first SETTINGS is a failed connect too (backoff included);
 * - the server's SETTINGS_MAX_CONCURRENT_STREAMS is respected: calls past it wait, in order, for a
 *   stream to finish or the limit to be raised (or for their deadline: DEADLINE_EXCEEDED, not
 *   `unsent` — the endpoint is up and busy, and `unsent` reads as a refused connection, which
 *   ejects it at once: upstream/outcome.ts);
 * - after a GOAWAY the session takes no new call; calls above its last stream id were not
 *   processed and go again on a new session (once; refused twice they end UNAVAILABLE `unsent`),
 *   the others finish on it, with what their streams say (a reset is the reset, not a lost
 *   connection: the session closing after its last stream is the GOAWAY's doing);
 * - a stream refused unprocessed (REFUSED_STREAM) is sent again once; refused twice, the call
 *   ends UNAVAILABLE `unprocessed` — not `unsent`: the endpoint is up and shedding load, not
 *   refusing connections (dispatch.ts retries it elsewhere for any method, as it does `unsent`,
 *   but counts one failure instead of ejecting the endpoint);
 * - keepalive: while calls are in flight and none finished for `keepaliveMs`, a PING goes out;
 *   no answer within `keepaliveTimeoutMs` drops the session (its calls end UNAVAILABLE). An idle
 *   session is not pinged: the health checks (upstream/health.ts) travel this same session, and a
 *   call on a dead one ends at its deadline and is retried.
 *
 * Per call: the `grpc-timeout` header from the time the caller gives it, and a local timer that
 * cancels the stream (RST_STREAM CANCEL) at that time → DEADLINE_EXCEEDED; the status is the one
 * in the HEADERS frame that ends the stream (trailers, or Trailers-Only: RFC 9113 END_STREAM) — a
 * grpc-status in headers that leave the stream open is not the call's status (the spec's
 * Response-Headers carry none; grpc-js and grpc-go ignore it too), the trailers will say; a call
 * settled before its stream ended cancels the stream, so none is left holding one of the
 * server's concurrent streams; replies over
 * `maxReplyBytes` → RESOURCE_EXHAUSTED with `replyTooLarge` (stream cancelled as soon as the
 * prefix says so; grpc/route.ts answers it 502, the upstream's fault, as the HTTP route does);
 * compressed messages → INTERNAL (no grpc-encoding is offered, so none may come back); an answer
 * that is not gRPC (HTTP status other than 200, or a content-type other than application/grpc, and
 * no grpc-status) → the HTTP status's code by the spec's table, UNKNOWN for a 200, body unread.
 */
import http2, {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type ClientSessionOptions,
  type IncomingHttpHeaders,
  type SecureClientSessionOptions,
} from "node:http2";
import {
  CLIENT_CERT_MISSING,
  clientCertRefused,
  handshakeFailure,
  isCertificateRequired,
  errorText,
} from "../upstream/tls-failure.ts";
import {
  CLIENT_WATCH_MS,
  type ClientWatch,
  clientGone,
  lookAtClient,
  watchesClient,
} from "../upstream/client-watch.ts";
import { promiseSettledBy, type Settled } from "../settled.ts";
import { GrpcCode } from "./status.ts";
import {
  decodeGrpcMessage,
  FRAME_HEADER_BYTES,
  grpcTimeout,
  type MetadataHeaders,
  parseGrpcStatus,
  statusFromHttp,
  statusFromReset,
  type WireStatus,
} from "./wire.ts";

export interface UnaryRequest {
  /** "/package.Service/Method" */
  path: string;
  /** The encoded request message, framed (wire.ts frameMessage, GrpcMethod.encodeFramed): sent as it is by every try. */
  message: Uint8Array;
  metadata: MetadataHeaders;
  /** How long the call may take; sent as grpc-timeout and enforced here. */
  timeoutMs: number;
  /** Largest reply message accepted. */
  maxReplyBytes: number;
  /**
   * Whoever asked for the call: once it is gone the call is cancelled (RST_STREAM CANCEL, or out of
   * the queue). Looked at from CLIENT_WATCH_MS into the call on (upstream/client-watch.ts).
   */
  client?: ClientWatch | undefined;
}

export type UnaryResult =
  | { kind: "reply"; message: Uint8Array; headers: IncomingHttpHeaders }
  | {
      kind: "status";
      code: GrpcCode;
      details: string;
      /** The `grpc-status-details-bin` trailer (base64 google.rpc.Status), when the upstream sent one. */
      statusDetails?: string;
      /** The response's initial headers, when it got that far. */
      headers?: IncomingHttpHeaders;
      /**
       * Nothing of the call reached the endpoint, and no connection to it took the call: none
       * could be made (or none within the deadline), or the session went away (GOAWAY) before it,
       * twice. Safe to retry anywhere, whatever the method — and taken as a refused connection
       * (upstream/outcome.ts "connect": the endpoint is ejected at once). So not set for a call a
       * live endpoint did not take: refused twice with REFUSED_STREAM (it sheds load: that is
       * `unprocessed`), or waiting for one of its streams until the deadline (it is busy).
       */
      unsent?: true;
      /**
       * A live endpoint refused the call before processing it, twice (REFUSED_STREAM): safe to retry
       * anywhere, whatever the method, and one failure of the endpoint (upstream/outcome.ts
       * "refused"), not a refused connection.
       */
      unprocessed?: true;
      /** The reply's declared length, when it was over `maxReplyBytes` and refused unread. */
      replyTooLarge?: number;
    }
  /** `request.client` went away first: the stream was reset with CANCEL, or the call never left the queue. */
  | { kind: "cancelled" };

export interface ChannelOptions {
  keepaliveMs: number;
  keepaliveTimeoutMs: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  /** A connect (TCP and the server's first SETTINGS) that takes longer fails. */
  connectTimeoutMs: number;
  /**
   * gRPC over TLS: the TLS options for each new session (CA, client certificate, expected name),
   * asked at every connect so renewed files are used by the next session. Undefined: h2c.
   */
  secure?: () => SecureClientSessionOptions;
}

export const DEFAULT_CHANNEL_OPTIONS: Omit<ChannelOptions, "secure"> = {
  keepaliveMs: 30_000,
  keepaliveTimeoutMs: 10_000,
  initialBackoffMs: 200,
  maxBackoffMs: 2_000,
  connectTimeoutMs: 5_000,
};

/**
 * Bun's client checks each request's headers for a single-value field sent twice unless told not
 * to (an option node:http2 has for servers only, hence the cast). A call's headers are one object
 * of lower-case names and string values (wire.ts setMetadata), so none can be, and the check cost
 * every call a Set and a key list (bench/census.ts).
 */
const NO_SINGLE_VALUE_CHECK = { strictSingleValueFields: false } as ClientSessionOptions;
const BACKOFF_JITTER = 0.2;
const MAX_STREAMS_UNKNOWN = 100;

/** The channel's view of one HTTP/2 session. */
interface Session {
  h2: ClientHttp2Session;
  /** Settings acknowledged and usable for calls. */
  ready: boolean;
  /** GOAWAY received, closed or failed: takes no new call. */
  retired: boolean;
  /**
   * GOAWAY(NO_ERROR) received: the session closes once its last stream ends — on Bun it is closed
   * and destroyed by the time that stream's 'close' comes —, so a closed session then says nothing
   * of the connection.
   */
  goneAway: boolean;
  /** The socket under it ended, failed or closed: the connection is gone, whatever the session says yet. */
  socketGone: boolean;
  calls: Set<UnaryCall>;
  maxStreams: number;
  /** Calls finished on this session, for keepalive (did anything come back since the last tick?). */
  finished: number;
  finishedAtLastTick: number;
  pingOut: boolean;
  timer: ReturnType<typeof setInterval> | undefined;
}

export class GrpcChannel {
  readonly #authority: string;
  readonly #options: ChannelOptions;
  #session: Session | undefined;
  /** Calls waiting for a session to be ready or for a free stream, oldest first. */
  #waiting: UnaryCall[] = [];
  #backoffMs: number;
  /** performance.now() before which no connect is tried; calls fail fast until then. */
  #retryAt = 0;
  #lastConnectError = "";
  #closed = false;

  constructor(
    /** host:port */
    readonly address: string,
    options: Partial<ChannelOptions> = {},
  ) {
    this.#authority = `${options.secure ? "https" : "http"}://${address}`;
    this.#options = { ...DEFAULT_CHANNEL_OPTIONS, ...options };
    this.#backoffMs = this.#options.initialBackoffMs;
  }

  /** One unary call; never rejects (every failure is a status). */
  unary(request: UnaryRequest): Promise<UnaryResult> {
    return this.unaryMapped(request, sameResult, undefined);
  }

  /**
   * One unary call whose promise resolves with `map(result, context)`, run as the call ends: what
   * `unary(request).then((result) => map(result, context))` gives, without a closure and a
   * chained promise per call (bench/census.ts). A throw from `map` rejects the promise.
   */
  unaryMapped<T, C>(request: UnaryRequest, map: (result: UnaryResult, context: C) => T, context: C): Promise<T> {
    const call = new UnaryCall(this, request, map, context);
    const promise = promiseSettledBy(call as Settled<unknown>) as Promise<T>;
    try {
      this.dispatch(call);
    } catch (err) {
      call.reject(err);
    }
    return promise;
  }

  /** Starts `call` on the session, or queues it for one; a call refused unprocessed comes back here once. */
  dispatch(call: UnaryCall): void {
    if (this.#closed) {
      call.finishUnsent(GrpcCode.UNAVAILABLE, "channel closed");
      return;
    }
    const session = this.#session;
    if (session?.ready && session.calls.size < session.maxStreams && this.#waiting.length === 0) {
      call.start(session);
      return;
    }
    if (!session) {
      const now = performance.now();
      if (now < this.#retryAt) {
        const wait = Math.ceil(this.#retryAt - now);
        call.finishUnsent(
          GrpcCode.UNAVAILABLE,
          `cannot connect to ${this.address} (${this.#lastConnectError}); next try in ${wait} ms`,
        );
        return;
      }
      // Queued first: a connect that fails at once (#backOff) fails the waiting calls, this one too.
      this.#waiting.push(call);
      this.#connect();
    } else this.#waiting.push(call);
    this.#pump();
  }

  /** Drops the session and forgets the backoff: the next call dials at once. */
  reset(): void {
    this.#backoffMs = this.#options.initialBackoffMs;
    this.#retryAt = 0;
    const session = this.#session;
    if (session) this.#drop(session, "connection reset by the gateway (endpoint failed its health checks)");
  }

  /** Ends every call and the session; later calls fail. */
  close(): void {
    this.#closed = true;
    const session = this.#session;
    if (session) this.#drop(session, "channel closed");
    this.#failWaiting("channel closed");
  }

  #connect(): void {
    let secureOptions: SecureClientSessionOptions | undefined;
    let h2: ClientHttp2Session;
    try {
      secureOptions = this.#options.secure?.();
      h2 = http2.connect(this.#authority, {
        ...secureOptions,
        settings: { enablePush: false },
        ...NO_SINGLE_VALUE_CHECK,
      });
    } catch (err) {
      // Options node:http2 refuses at once (none should reach it): a failed connect, not a throw
      // into whoever asked for a call (a health check's, once, ended the process).
      this.#backOff(errorText(err as Error, ": "));
      return;
    }
    const session: Session = {
      h2,
      ready: false,
      retired: false,
      goneAway: false,
      socketGone: false,
      calls: new Set(),
      maxStreams: MAX_STREAMS_UNKNOWN,
      finished: 0,
      finishedAtLastTick: 0,
      pingOut: false,
      timer: undefined,
    };
    this.#session = session;
    const connectTimer = setTimeout(() => {
      if (!session.ready) this.#failed(session, `connect timed out after ${this.#options.connectTimeoutMs} ms`);
    }, this.#options.connectTimeoutMs);
    connectTimer.unref?.();
    h2.once("remoteSettings", (settings) => {
      clearTimeout(connectTimer);
      if (session.retired) return;
      session.ready = true;
      session.maxStreams = settings.maxConcurrentStreams ?? MAX_STREAMS_UNKNOWN;
      this.#backoffMs = this.#options.initialBackoffMs;
      this.#startKeepalive(session);
      this.#pump();
    });
    h2.on("remoteSettings", (settings) => {
      session.maxStreams = settings.maxConcurrentStreams ?? session.maxStreams;
      // A raised limit (from 0, even: RFC 9113 §6.5.2) starts waiting calls now, not when a call ends.
      if (session.ready && !session.retired) this.#pump();
    });
    h2.on("goaway", (errorCode: number, lastStreamId: number) => {
      // Any other code comes with the session's 'error' (dropped there).
      if (errorCode === http2.constants.NGHTTP2_NO_ERROR) session.goneAway = true;
      this.#goaway(session, lastStreamId);
    });
    // A socket that ends or fails under the session (the upstream closed or reset the connection)
    // does so before its streams' 'close' (measured on Bun, h2c and TLS), so a call ended by it is
    // told from one the upstream reset (UnaryCall.closed) even after a GOAWAY.
    const socketGone = () => {
      session.socketGone = true;
    };
    h2.socket?.once("end", socketGone);
    h2.socket?.once("error", socketGone);
    h2.socket?.once("close", socketGone);
    // How far the connect got, so a failure before the settings says what failed: the TCP connect,
    // the TLS handshake (the gateway refused the upstream's certificate), or what came after it.
    let stage: "tcp" | "tls" | "h2" = "tcp";
    h2.socket?.once("connect", () => {
      if (stage === "tcp") stage = "tls";
    });
    // After the TLS handshake on a secure session (after the TCP connect for h2c).
    h2.once("connect", () => {
      stage = "h2";
    });
    const secure = secureOptions !== undefined;
    // Only a session that presents a client certificate can have it refused.
    const clientCert = secureOptions?.cert !== undefined;
    h2.on("error", (err: Error) => {
      clearTimeout(connectTimer);
      if (!session.ready) this.#failed(session, connectFailure(err, secure ? stage : "tcp", clientCert));
      else this.#drop(session, `connection to ${this.address} failed: ${errorText(err, ": ")}`);
    });
    h2.on("close", () => {
      clearTimeout(connectTimer);
      if (!session.ready)
        this.#failed(
          session,
          clientCert && stage === "h2" ? CLIENT_CERT_REFUSED : "connection closed before the upstream's settings",
        );
      else this.#drop(session, `connection to ${this.address} closed`);
    });
  }

  /** A connect that failed: the waiting calls fail unsent, and calls fail fast until the backoff ends. */
  #failed(session: Session, reason: string): void {
    if (session.retired) return;
    this.#retire(session);
    session.h2.destroy();
    this.#backOff(reason);
  }

  /** No connection: calls fail fast until the backoff ends, and the waiting ones fail unsent. */
  #backOff(reason: string): void {
    this.#lastConnectError = reason;
    const jitter = 1 + BACKOFF_JITTER * (2 * Math.random() - 1);
    this.#retryAt = performance.now() + this.#backoffMs * jitter;
    this.#backoffMs = Math.min(this.#backoffMs * 2, this.#options.maxBackoffMs);
    this.#failWaiting(`cannot connect to ${this.address}: ${reason}`);
  }

  /** A session that worked is gone: its calls end UNAVAILABLE; the next call reconnects. */
  #drop(session: Session, reason: string): void {
    if (!session.retired) this.#retire(session);
    if (!session.h2.destroyed) session.h2.destroy();
    for (const call of session.calls) call.finish({ kind: "status", code: GrpcCode.UNAVAILABLE, details: reason });
    // Calls that waited for this session go to a new one.
    if (this.#waiting.length > 0 && !this.#closed) {
      if (!this.#session) this.#connect();
    }
  }

  #goaway(session: Session, lastStreamId: number): void {
    // Before its settings (a server draining as it accepts, or one that breaks the preface): a
    // connect that failed, with the backoff — not a new connection at once, in a loop.
    if (!session.ready) {
      this.#failed(session, "the upstream sent GOAWAY before its settings");
      return;
    }
    // Retired first: the refused calls' retries must go to a new session.
    if (!session.retired) this.#retire(session);
    for (const call of session.calls) {
      if (call.streamId > lastStreamId) call.refused("the upstream closed the connection (GOAWAY) before the call");
    }
    if (session.calls.size === 0 && !session.h2.closed && !session.h2.destroyed) session.h2.close();
    if (this.#waiting.length > 0 && !this.#closed && !this.#session) this.#connect();
  }

  #retire(session: Session): void {
    session.retired = true;
    clearInterval(session.timer);
    if (this.#session === session) this.#session = undefined;
  }

  #failWaiting(reason: string): void {
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const call of waiting) call.finishUnsent(GrpcCode.UNAVAILABLE, reason);
  }

  /** Starts waiting calls while the session has streams to spare. */
  #pump(): void {
    const session = this.#session;
    if (!session?.ready) return;
    while (this.#waiting.length > 0 && session.calls.size < session.maxStreams) this.#waiting.shift()!.start(session);
  }

  #startKeepalive(session: Session): void {
    const { keepaliveMs, keepaliveTimeoutMs } = this.#options;
    session.timer = setInterval(() => {
      const quiet = session.finished === session.finishedAtLastTick;
      session.finishedAtLastTick = session.finished;
      if (!quiet || session.calls.size === 0 || session.pingOut || session.retired) return;
      session.pingOut = true;
      const timeout = setTimeout(
        () => this.#drop(session, `no answer to a keepalive ping within ${keepaliveTimeoutMs} ms`),
        keepaliveTimeoutMs,
      );
      timeout.unref?.();
      try {
        session.h2.ping((err) => {
          clearTimeout(timeout);
          session.pingOut = false;
          if (err && !session.retired) this.#drop(session, `keepalive ping failed: ${err.message}`);
        });
      } catch {
        clearTimeout(timeout);
        this.#drop(session, "keepalive ping could not be sent");
      }
    }, keepaliveMs);
    session.timer.unref?.();
  }

  /**
   * A call that waited and gave up (its deadline, its client gone): out of the queue. Returns the
   * session's stream limit when the session is up (the call waited for a free stream), undefined
   * when there is none (it waited for the connection).
   */
  unqueue(call: UnaryCall): number | undefined {
    const at = this.#waiting.indexOf(call);
    if (at >= 0) this.#waiting.splice(at, 1);
    const session = this.#session;
    return session?.ready ? session.maxStreams : undefined;
  }

  /** A started call ended: its stream is free for the next waiting call. */
  released(session: Session): void {
    session.finished++;
    if (session.retired) {
      if (session.calls.size === 0 && !session.h2.closed && !session.h2.destroyed) session.h2.close();
      return;
    }
    if (this.#waiting.length > 0) this.#pump();
  }
}

/** The symbol under which a stream carries its call, so its listeners are shared functions. */
const CALL = Symbol("grpc call");
type CallStream = ClientHttp2Stream & { [CALL]: UnaryCall };

class UnaryCall {
  #session: Session | undefined;
  #stream: CallStream | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  readonly #startedAt = performance.now();
  #done = false;
  /** Refused unprocessed once and sent again (GOAWAY, REFUSED_STREAM): a second refusal ends it. */
  #retried = false;
  #headers: IncomingHttpHeaders | undefined;
  /** The reply's first chunk; a reply seldom comes in more, and only then is `#chunks` made. */
  #first: Buffer | undefined;
  /** Every chunk, once a second one came. */
  #chunks: Buffer[] | undefined;
  #received = 0;
  /** Length of the first message, once its prefix arrived. */
  #expected = -1;

  /** The call's promise's settlers (GrpcChannel.unaryMapped, promiseSettledBy). */
  resolve!: (value: unknown) => void;
  reject!: (reason: unknown) => void;

  constructor(
    private readonly channel: GrpcChannel,
    /** FINISHED once the call ended (`finish`): a finished call holds nothing of its request. */
    private request: UnaryRequest,
    /** GrpcChannel.unaryMapped's: what the promise resolves with is `map(result, context)`. */
    private readonly map: (result: UnaryResult, context: never) => unknown,
    private context: unknown,
  ) {
    // The deadline runs from the call, whatever waiting for a session or a stream takes.
    this.#timer = watchesClient(request.client, request.timeoutMs)
      ? setTimeout(onWatch, CLIENT_WATCH_MS, this)
      : setTimeout(onDeadline, request.timeoutMs, this);
  }

  /** CLIENT_WATCH_MS into the call: cancelled if its client is gone, else watched until the deadline. */
  watchClient(): void {
    if (this.#done) return;
    const left = lookAtClient(this.request.client!, () => this.cancel(), this.#startedAt, this.request.timeoutMs);
    if (left !== undefined) this.#timer = setTimeout(onDeadline, left, this);
  }

  /** The HTTP/2 stream id (0 before it started): GOAWAY tells which calls the server will process. */
  get streamId(): number {
    return this.#stream?.id ?? 0;
  }

  start(session: Session): void {
    const { path, metadata, message } = this.request;
    // What the wait took is out of the budget the server is told.
    const timeoutMs = this.request.timeoutMs - (performance.now() - this.#startedAt);
    let stream: CallStream;
    try {
      stream = session.h2.request({
        ...metadata,
        ":method": "POST",
        ":path": path,
        "content-type": "application/grpc",
        te: "trailers",
        "grpc-timeout": grpcTimeout(timeoutMs),
      }) as CallStream;
    } catch (err) {
      // An illegal header (metadata is checked in wire.ts, so this is a bug worth its message).
      this.finishUnsent(GrpcCode.INTERNAL, `the call could not be sent: ${(err as Error).message}`);
      return;
    }
    this.#session = session;
    this.#stream = stream;
    session.calls.add(this);
    stream[CALL] = this;
    // 'data' is listened to from the response on: a flowing stream costs Bun a native
    // setStreamReading call, cheaper once the reply is there (measured, ~10 % of the call).
    stream.on("response", onResponse);
    stream.on("trailers", onTrailers);
    stream.on("error", ignore);
    stream.on("close", onClose);
    stream.end(message);
  }

  response(stream: CallStream, headers: IncomingHttpHeaders, flags: number): void {
    if (stream !== this.#stream) return;
    this.#headers = headers;
    // Trailers-Only: the status came in headers that end the stream; nothing follows. A status in
    // headers that leave it open is no status (the spec's Response-Headers carry none): taken as
    // one, it ended the call with the stream open — holding one of the server's concurrent
    // streams for good — and dropped the message and the trailers' status that came after it.
    // Ignored, as grpc-js and grpc-go do: the trailers say (or the deadline, if none come).
    if (headers["grpc-status"] !== undefined && (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0) {
      this.#ended(headers);
      return;
    }
    // Not a gRPC answer (a proxy's or load balancer's error page, an HTTP server): its body is not
    // length-prefixed messages. The HTTP status says what happened (the spec's mapping table), as
    // grpc-js reads it; the stream is cancelled unread.
    const httpStatus = Number(headers[":status"] ?? 0);
    if (httpStatus !== 200) {
      const status = statusFromHttp(httpStatus);
      this.#abort(status.code, status.details);
    } else if (!isGrpcContentType(headers["content-type"]))
      this.#abort(
        GrpcCode.UNKNOWN,
        `the upstream answered with content-type ${JSON.stringify(headers["content-type"] ?? "")}, not application/grpc`,
      );
  }

  data(stream: CallStream, chunk: Buffer): void {
    if (this.#done || stream !== this.#stream) return;
    if (this.#first === undefined) this.#first = chunk;
    else (this.#chunks ??= [this.#first]).push(chunk);
    this.#received += chunk.byteLength;
    if (this.#expected < 0 && this.#received >= FRAME_HEADER_BYTES) {
      const head = this.#chunks === undefined ? chunk : Buffer.concat(this.#chunks);
      this.#expected = head.readUInt32BE(1);
      if (head[0] !== 0)
        this.#abort(GrpcCode.INTERNAL, "the upstream sent a compressed message, and no compression was offered");
      else if (this.#expected > this.request.maxReplyBytes)
        this.#abort(
          GrpcCode.RESOURCE_EXHAUSTED,
          `reply message larger than the limit (${this.#expected} > ${this.request.maxReplyBytes} bytes)`,
          { replyTooLarge: this.#expected },
        );
    }
    if (!this.#done && this.#expected >= 0 && this.#received > FRAME_HEADER_BYTES + this.#expected)
      this.#abort(GrpcCode.UNIMPLEMENTED, "the upstream sent more than one message for a unary call");
  }

  trailers(stream: CallStream, trailers: IncomingHttpHeaders): void {
    if (stream === this.#stream) this.#ended(trailers);
  }

  /** The stream closed; if no status came, the reset code or the HTTP status says what happened. */
  closed(stream: CallStream, rstCode: number): void {
    if (this.#done || stream !== this.#stream) return;
    if (rstCode === http2.constants.NGHTTP2_REFUSED_STREAM) {
      this.refused("the upstream refused the stream (REFUSED_STREAM) before processing it", false);
      return;
    }
    // A non-200 answer was settled when its headers came (response()).
    const session = this.#session;
    let status: WireStatus;
    if (session !== undefined && connectionLost(session))
      status = { code: GrpcCode.UNAVAILABLE, details: "connection to the upstream lost during the call" };
    else if (rstCode === http2.constants.NGHTTP2_NO_ERROR)
      status = { code: GrpcCode.INTERNAL, details: "the upstream ended the call without a gRPC status" };
    else status = statusFromReset(rstCode);
    this.finish({ kind: "status", ...status, ...(this.#headers ? { headers: this.#headers } : {}) });
  }

  /**
   * The server did not process the call (GOAWAY above it, REFUSED_STREAM). The first time, it is
   * sent again — on a new session after a GOAWAY, the "transparent retry" gRPC clients make, so
   * an upstream recycling its connections (max_connection_age) fails no call; the second time
   * it ends UNAVAILABLE: `unsent` after a GOAWAY (the endpoint is going away: like a refused
   * connection, safe for dispatch.ts to retry elsewhere and ejected at once), `unprocessed` after
   * REFUSED_STREAM (`unsent` = false): the endpoint is up and shedding load, which ejecting it at
   * once (for up to maxEjectionMs, with the streak) would only move to the others — it is retried
   * elsewhere whatever the method and counts one failure (outcome.ts "refused").
   */
  refused(details: string, unsent = true): void {
    if (this.#done) return;
    // Not sent again for a client already gone (a refusal may come before the first look at it).
    if (clientGone(this.request.client)) {
      this.#detach();
      this.finish({ kind: "cancelled" });
      return;
    }
    if (this.#retried) {
      if (unsent) this.finishUnsent(GrpcCode.UNAVAILABLE, details);
      else this.finish({ kind: "status", code: GrpcCode.UNAVAILABLE, details, unprocessed: true });
      return;
    }
    this.#retried = true;
    this.#detach();
    this.channel.dispatch(this);
  }

  deadline(): void {
    if (this.#done) return;
    if (!this.#stream) {
      // It never left. Waiting for a stream of a session that is up is the endpoint being busy
      // (all of the concurrent streams it allows in use): a timeout of this call, not `unsent`,
      // which outcome.ts takes for a refused connection and ejects the endpoint for at once.
      // Waiting for the connection is a connect that did not finish in time: `unsent`.
      const streamLimit = this.channel.unqueue(this);
      if (streamLimit !== undefined)
        this.finish({
          kind: "status",
          code: GrpcCode.DEADLINE_EXCEEDED,
          details: `no stream free on the upstream within ${this.request.timeoutMs} ms (its concurrent stream limit, ${streamLimit}, reached); the call was not sent`,
        });
      else
        this.finishUnsent(
          GrpcCode.DEADLINE_EXCEEDED,
          `no connection to the upstream within ${this.request.timeoutMs} ms; the call was not sent`,
        );
    } else
      this.#abort(
        GrpcCode.DEADLINE_EXCEEDED,
        `no answer within ${this.request.timeoutMs} ms (the gateway cancelled the call)`,
      );
  }

  /** Whoever asked for the call is gone: the stream is reset with CANCEL, or the call leaves the queue. */
  cancel(): void {
    if (this.#done) return;
    const stream = this.#stream;
    if (!stream) this.channel.unqueue(this);
    this.finish({ kind: "cancelled" });
    if (stream && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
  }

  #ended(statusHeaders: IncomingHttpHeaders): void {
    if (this.#done) return;
    const headers = this.#headers ?? statusHeaders;
    const body = this.#chunks === undefined ? this.#first : Buffer.concat(this.#chunks);
    this.finish(endedResult(headers, statusHeaders, body, this.#expected));
  }

  /** Ends the call with `code` and cancels its stream. */
  #abort(code: GrpcCode, details: string, extra: { replyTooLarge?: number } = {}): void {
    const stream = this.#stream;
    this.finish({ kind: "status", code, details, ...extra, ...(this.#headers ? { headers: this.#headers } : {}) });
    if (stream && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
  }

  /** Off its session and stream, as if never started. */
  #detach(): void {
    const session = this.#session;
    this.#session = undefined;
    this.#stream = undefined;
    this.#headers = undefined;
    this.#first = undefined;
    this.#chunks = undefined;
    this.#received = 0;
    this.#expected = -1;
    if (session) {
      session.calls.delete(this);
      this.channel.released(session);
    }
  }

  finishUnsent(code: GrpcCode, details: string): void {
    this.finish({ kind: "status", code, details, unsent: true });
  }

  finish(result: UnaryResult): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#timer);
    const session = this.#session;
    if (session) {
      session.calls.delete(this);
      this.channel.released(session);
    }
    const { resolve, reject, context } = this;
    this.#letGo();
    let value: unknown;
    try {
      value = this.map(result, context as never);
    } catch (err) {
      reject(err);
      return;
    }
    resolve(value);
  }

  /**
   * A finished call lets go of what it held for the call: its request (metadata, message, the
   * client's Request), timer, stream, session, reply headers and chunks, and promise. The collector is
   * generational without aging: a call in flight at a young-generation collection is promoted,
   * and once finished it is old garbage until the next full collection — while whatever young
   * objects it still points to are kept, and promoted, by every young collection in between.
   * Measured (bench/README.md, 2026-12-07 tenth stop): with 64 calls in flight, the channel
   * alone promoted ~3.7 MB per young collection and ran a full collection every third one; the
   * gateway under /verify kept every call's timer (with the AsyncLocalStorage frame and trace
   * context it captured), not only the ones in flight. Letting go: ~0.5 MB, full collections 8 → 2
   * in 6 s of /verify load.
   */
  #letGo(): void {
    this.request = FINISHED;
    this.context = undefined;
    this.#timer = undefined;
    this.#session = undefined;
    this.#stream = undefined;
    this.#headers = undefined;
    this.#first = undefined;
    this.#chunks = undefined;
    this.resolve = settled;
    this.reject = settled;
  }
}

/** What a finished call holds in place of its request (UnaryCall.#letGo). */
const FINISHED: UnaryRequest = Object.freeze({
  path: "",
  message: new Uint8Array(0),
  metadata: {},
  timeoutMs: 0,
  maxReplyBytes: 0,
});

/** A finished call's settlers: its promise is settled already. */
function settled(): void {}

function sameResult(result: UnaryResult): UnaryResult {
  return result;
}

/** What a call that got its status (in trailers, or Trailers-Only) came to. */
function endedResult(
  headers: IncomingHttpHeaders,
  statusHeaders: IncomingHttpHeaders,
  body: Buffer | undefined,
  expected: number,
): UnaryResult {
  const code = parseGrpcStatus(statusHeaders["grpc-status"]);
  // Here the answer was a 200 (response() settled any other): no status is the upstream's fault.
  if (code === undefined)
    return {
      kind: "status",
      code: GrpcCode.INTERNAL,
      details: "the upstream ended the call without a gRPC status",
      headers,
    };
  if (code !== GrpcCode.OK) {
    const details = decodeGrpcMessage(statusHeaders["grpc-message"] as string | undefined);
    const rich = statusHeaders["grpc-status-details-bin"];
    return typeof rich === "string"
      ? { kind: "status", code, details, statusDetails: rich, headers }
      : { kind: "status", code, details, headers };
  }
  if (expected < 0 || !body || body.byteLength < FRAME_HEADER_BYTES + expected)
    return {
      kind: "status",
      code: expected < 0 ? GrpcCode.UNIMPLEMENTED : GrpcCode.INTERNAL,
      details: expected < 0 ? "the upstream sent no reply message" : "the reply message was cut short",
      headers,
    };
  return { kind: "reply", message: body.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + expected), headers };
}

/**
 * Whether the connection under `session` failed during a call: its socket went, or the session
 * closed without a GOAWAY(NO_ERROR) that explains it (after one, Bun closes it once its last stream
 * ended: that stream's reset or missing status is what it is, not a lost connection).
 */
function connectionLost(session: Session): boolean {
  if (session.socketGone) return true;
  const h2 = session.h2;
  return !session.goneAway && (h2.destroyed || h2.closed);
}

/** `application/grpc`, or one of its `+proto`-style subtypes, with or without parameters. */
function isGrpcContentType(value: string | undefined): boolean {
  return value?.startsWith("application/grpc") === true && !value.startsWith("application/grpc-web");
}

function onDeadline(call: UnaryCall): void {
  call.deadline();
}
function onWatch(call: UnaryCall): void {
  call.watchClient();
}
function onResponse(this: CallStream, headers: IncomingHttpHeaders, flags: number): void {
  this.on("data", onData);
  this[CALL].response(this, headers, flags);
}
function onData(this: CallStream, chunk: Buffer): void {
  this[CALL].data(this, chunk);
}
function onTrailers(this: CallStream, trailers: IncomingHttpHeaders): void {
  this[CALL].trailers(this, trailers);
}
function onClose(this: CallStream): void {
  this[CALL].closed(this, this.rstCode ?? http2.constants.NGHTTP2_NO_ERROR);
}
/** Stream errors are followed by 'close', where the outcome is decided. */
function ignore(): void {}

/** A secure session that closes (or fails) after the TLS handshake and before the upstream's settings. */
const CLIENT_CERT_REFUSED = clientCertRefused(", before its settings");

/** A connect's error before the settings, told by where it happened on a secure session (`tcp` for h2c). */
function connectFailure(err: Error, stage: "tcp" | "tls" | "h2", clientCert: boolean): string {
  if (stage === "tls") return handshakeFailure(err);
  const tls = errorText(err);
  if (stage === "h2" && (err as NodeJS.ErrnoException).syscall === undefined && /SSL|TLS/.test(tls)) {
    if (clientCert) return `${CLIENT_CERT_REFUSED} (${tls})`;
    if (isCertificateRequired(err)) return `${CLIENT_CERT_MISSING} (${tls})`;
  }
  return errorText(err, ": ");
}
