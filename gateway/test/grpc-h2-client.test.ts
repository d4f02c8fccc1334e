/**
 * The lean unary gRPC client (src/grpc/h2-client.ts) against real servers on loopback: a grpc-js
 * server for the ordinary path (what rpcapp runs), and a raw `node:http2` server — or one written
 * frame by frame — for what a well-behaved gRPC server never sends: Trailers-Only answers, a
 * status in headers that leave the stream open, HTTP errors without a gRPC status, compressed or
 * oversized messages, stream resets, GOAWAY, dropped connections, a stream limit, silence past
 * the deadline.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { edenGC, fullGC, heapStats } from "bun:jsc";
import * as grpc from "@grpc/grpc-js";
import http2, { type ServerHttp2Stream } from "node:http2";
import net from "node:net";
import { parseProtos } from "../../lib/proto.ts";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { waitFor } from "../../scripts/stack/testing/processes.ts";
import { callUnary, type GrpcOutcome } from "../src/grpc/call.ts";
import { GrpcChannel } from "../src/grpc/h2-client.ts";
import { resolveMethod } from "../src/grpc/method.ts";
import { GrpcCode } from "../src/grpc/status.ts";
import { decodeGrpcMessage, frameMessage, grpcTimeout, type MetadataHeaders, setMetadata } from "../src/grpc/wire.ts";
import { CLIENT_WATCH_MS } from "../src/upstream/client-watch.ts";
import { dispatch } from "../src/upstream/dispatch.ts";
import { classify } from "../src/upstream/outcome.ts";
import { startUserVerifyServer } from "./grpc-upstream.ts";
import {
  answer,
  type FrameConnection,
  type FrameServer,
  frame,
  type RawServer,
  frameServer as startFrameServer,
  rawServer as startRawServer,
} from "./raw-h2-server.ts";
import { context, testConfig, testUpstream } from "./upstream-harness.ts";

const verify = resolveMethod(parseProtos(["proto/userverify.proto"]), "userverify.UserVerify/VerifyUser");
const REQUEST = verify.encodeFramed({ id: 7, token: "t" });
const LIMIT = 64 * 1024;

const cleanup: (() => void)[] = [];
afterAll(() => {
  for (const f of cleanup.reverse()) f();
});

function channel(address: string, options?: ConstructorParameters<typeof GrpcChannel>[1]): GrpcChannel {
  const ch = new GrpcChannel(address, options);
  cleanup.push(() => ch.close());
  return ch;
}

function call(ch: GrpcChannel, timeoutMs = 2_000, metadata: MetadataHeaders = {}): Promise<GrpcOutcome> {
  return callUnary(ch, verify, REQUEST, metadata, timeoutMs, LIMIT);
}

/** A raw HTTP/2 server (raw-h2-server.ts), closed when the file's tests end. */
async function rawServer(...args: Parameters<typeof startRawServer>): Promise<RawServer> {
  const server = await startRawServer(...args);
  cleanup.push(() => server.close());
  return server;
}

/** A frame-level server (raw-h2-server.ts), closed when the file's tests end. */
async function frameServer(onRequest: (connection: FrameConnection, stream: number) => void): Promise<FrameServer> {
  const server = await startFrameServer(onRequest);
  cleanup.push(() => server.close());
  return server;
}

/**
 * A server that answers every request with RST_STREAM `code`, written as raw frames: Bun's own
 * HTTP/2 server sends code 0 whatever `stream.close(code)` is given (Bun 1.4.5).
 */
function resetServer(code: number): Promise<FrameServer> {
  return frameServer((connection, stream) => connection.rst(stream, code));
}

/**
 * An upstream whose one gRPC endpoint is `address`, as the gateway builds it (outlier detection
 * and breaker included), and a request through dispatch.ts on a non-idempotent route.
 */
function upstreamOf(address: string, timeoutMs: number) {
  const config = testConfig({ protocol: "grpc", endpoints: address, timeoutMs });
  const upstream = testUpstream(config);
  cleanup.push(() => upstream.close());
  const request = () =>
    dispatch(upstream, config.routes[0]!, context(), false, (endpoint, ms) =>
      callUnary(endpoint.grpcChannel(), verify, REQUEST, {}, ms, LIMIT),
    );
  return { endpoint: upstream.endpoints[0]!, request };
}

const reply = (message: string) => frameMessage(verify.responseType.encode({ message }).finish());

describe("wire rules", () => {
  test("grpc-timeout is whole milliseconds, rounded up, in seconds past 8 digits", () => {
    expect(grpcTimeout(1500)).toBe("1500m");
    expect(grpcTimeout(0.2)).toBe("1m");
    expect(grpcTimeout(299.1)).toBe("300m");
    expect(grpcTimeout(200_000_000)).toBe("200000S");
  });

  test("grpc-message is percent-decoded; a malformed escape is kept as sent", () => {
    expect(decodeGrpcMessage("bad%20100%25%20%C3%BCn%C3%AF")).toBe("bad 100% ünï");
    expect(decodeGrpcMessage("50%")).toBe("50%");
    expect(decodeGrpcMessage(undefined)).toBe("");
  });

  test("metadata: -bin values go base64, non-ASCII values and reserved names are left out", () => {
    const headers: MetadataHeaders = {};
    expect(setMetadata(headers, "X-User", "ada")).toBe(true);
    expect(setMetadata(headers, "x-blob-bin", "ünï")).toBe(true);
    expect(setMetadata(headers, "x-name", "Zoë")).toBe(false);
    expect(setMetadata(headers, "grpc-timeout", "1S")).toBe(false);
    expect(setMetadata(headers, "content-type", "text/plain")).toBe(false);
    expect(headers).toEqual({ "x-user": "ada", "x-blob-bin": Buffer.from("ünï").toString("base64") });
  });
});

describe("against a grpc-js server", () => {
  test("a reply, the initial metadata, and what the server saw: metadata, -bin metadata, grpc-timeout", async () => {
    const seen: { metadata: Record<string, unknown>; deadlineMs: number }[] = [];
    const { server, ports } = await startUserVerifyServer((c, cb) => {
      seen.push({ metadata: c.metadata.getMap(), deadlineMs: Number(c.getDeadline()) - Date.now() });
      const md = new grpc.Metadata();
      md.set("x-served-by", "grpcjs-1");
      md.set("x-service-version", "9.9.9");
      c.sendMetadata(md);
      if (c.request.token === "t" && c.request.id === 7) cb(null, { message: "ok 7" });
      else cb({ code: grpc.status.INVALID_ARGUMENT, details: "bad 100% ünï" });
    });
    cleanup.push(() => server.forceShutdown());
    const ch = channel(`127.0.0.1:${ports[0]}`);
    const metadata: MetadataHeaders = {};
    setMetadata(metadata, "x-request-id", "req-1");
    setMetadata(metadata, "x-claims-bin", '{"sub":"ünï"}');
    const outcome = await callUnary(ch, verify, REQUEST, metadata, 1_500, LIMIT);
    expect(outcome).toEqual({
      kind: "reply",
      reply: { message: "ok 7" },
      servedBy: "grpcjs-1",
      serviceVersion: "9.9.9",
    });
    expect(seen[0]!.metadata["x-request-id"]).toBe("req-1");
    expect(Buffer.from(seen[0]!.metadata["x-claims-bin"] as Buffer).toString()).toBe('{"sub":"ünï"}');
    expect(seen[0]!.deadlineMs).toBeLessThanOrEqual(1_500);
    expect(seen[0]!.deadlineMs).toBeGreaterThan(500);

    const failed = await callUnary(ch, verify, verify.encodeFramed({ id: 1, token: "x" }), {}, 1_500, LIMIT);
    expect(failed).toMatchObject({ kind: "status", code: GrpcCode.INVALID_ARGUMENT, details: "bad 100% ünï" });
    expect(classify(failed)).toBe("ok");

    // Many at once on the one session.
    const many = await Promise.all(Array.from({ length: 200 }, () => call(ch)));
    expect(many.every((r) => r.kind === "reply")).toBe(true);
  });
});

describe("against a raw HTTP/2 server", () => {
  test("a connect node:http2 refuses at once fails the call unsent, at once, not at its deadline", async () => {
    // An IP as the TLS server name: node:http2 throws from http2.connect itself.
    const ch = channel("127.0.0.1:9", { secure: () => ({ servername: "127.0.0.1" }) });
    const started = performance.now();
    const outcome = await call(ch, 10_000);
    expect(outcome).toMatchObject({ kind: "status", code: GrpcCode.UNAVAILABLE, unsent: true });
    expect((outcome as { details: string }).details).toContain("cannot connect to 127.0.0.1:9");
    // Failed by the connect, not by the 10 s deadline (a bound with room for a busy machine).
    expect(performance.now() - started).toBeLessThan(5_000);
  });

  test("Trailers-Only: the status in the response headers", async () => {
    const srv = await rawServer((stream) =>
      stream.respond(
        { ":status": 200, "content-type": "application/grpc", "grpc-status": "5", "grpc-message": "no%20such%20user" },
        { endStream: true },
      ),
    );
    expect(await call(channel(srv.address))).toMatchObject({
      kind: "status",
      code: GrpcCode.NOT_FOUND,
      details: "no such user",
    });
  });

  test("a grpc-status in headers that leave the stream open is not the call's status: the trailers say, and no stream is left open", async () => {
    let mode = "status-then-silence";
    const silentStreams: ServerHttp2Stream[] = [];
    const srv = await rawServer(
      (stream) => {
        if (mode === "status-then-silence") {
          // A handler that answered NOT_FOUND and never ended its stream.
          silentStreams.push(stream);
          stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": "5" });
        } else if (mode === "0-then-13")
          answer(
            stream,
            reply("dropped"),
            { "grpc-status": "13", "grpc-message": "from%20the%20trailers" },
            { "grpc-status": "0" },
          );
        else if (mode === "0-then-reply") answer(stream, reply("kept"), { "grpc-status": "0" }, { "grpc-status": "0" });
        else answer(stream, reply("ok"), { "grpc-status": "0" });
      },
      // One stream at a time: one left open would make every later call wait out its deadline.
      { maxConcurrentStreams: 1 },
    );
    const ch = channel(srv.address);
    expect(await call(ch, 200)).toMatchObject({ kind: "status", code: GrpcCode.DEADLINE_EXCEEDED });
    // Settled at the deadline, and its stream cancelled: the server's stream is free again.
    await waitFor("the server's stream closed", () => silentStreams[0]?.closed === true, {
      timeoutMs: 1_000,
      intervalMs: 5,
    });
    expect(silentStreams[0]!.rstCode).toBe(http2.constants.NGHTTP2_CANCEL);
    mode = "answer";
    expect(await call(ch, 1_000)).toMatchObject({ kind: "reply", reply: { message: "ok" } });
    // The status in the trailers, not the one in the headers before the message.
    mode = "0-then-13";
    expect(await call(ch)).toMatchObject({ kind: "status", code: GrpcCode.INTERNAL, details: "from the trailers" });
    mode = "0-then-reply";
    expect(await call(ch)).toMatchObject({ kind: "reply", reply: { message: "kept" } });
    expect(srv.sessions.length).toBe(1);
  });

  test("an HTTP error without a gRPC status maps by the spec's table (503 → UNAVAILABLE, 404 → UNIMPLEMENTED)", async () => {
    let status = 503;
    const srv = await rawServer((stream) => {
      stream.respond({ ":status": status, "content-type": "text/plain" });
      stream.end("nope");
    });
    const ch = channel(srv.address);
    const unavailable = await call(ch);
    expect(unavailable).toMatchObject({ kind: "status", code: GrpcCode.UNAVAILABLE });
    expect((unavailable as { unsent?: true }).unsent).toBeUndefined();
    status = 404;
    expect(await call(ch)).toMatchObject({ kind: "status", code: GrpcCode.UNIMPLEMENTED });
  });

  test("an answer that is not gRPC — a proxy's error page, an HTML 200 — is its HTTP status, its body unread", async () => {
    let mode = "html-503";
    const srv = await rawServer((stream) => {
      if (mode === "html-503") {
        stream.respond({ ":status": 503, "content-type": "text/html" });
        stream.end("<html><body>no healthy upstream</body></html>");
      } else if (mode === "zeros-502") {
        // Its first bytes would read as an uncompressed message of 2^24 bytes: over the limit.
        stream.respond({ ":status": 502, "content-type": "application/octet-stream" });
        stream.end(Buffer.from([0, 1, 0, 0, 0, 0, 0, 0]));
      } else {
        stream.respond({ ":status": 200, "content-type": "text/html" });
        stream.end("<html>hello</html>");
      }
    });
    const ch = channel(srv.address);
    const unavailable = await call(ch);
    expect(unavailable).toMatchObject({ kind: "status", code: GrpcCode.UNAVAILABLE });
    expect((unavailable as { details: string }).details).toBe("upstream answered HTTP 503 without a gRPC status");
    expect(classify(unavailable)).toBe("unavailable"); // retryable, where INTERNAL would not be
    mode = "zeros-502";
    const badGateway = await call(ch);
    expect(badGateway).toMatchObject({ kind: "status", code: GrpcCode.UNAVAILABLE });
    expect((badGateway as { replyTooLarge?: number }).replyTooLarge).toBeUndefined();
    mode = "html-200";
    const html = await call(ch);
    expect(html).toMatchObject({ kind: "status", code: GrpcCode.UNKNOWN });
    expect((html as { details: string }).details).toContain('content-type "text/html", not application/grpc');
  });

  test("a stream limit raised from 0 starts the waiting calls at once", async () => {
    const srv = await rawServer((stream) => answer(stream, reply("ok"), { "grpc-status": "0" }), {
      maxConcurrentStreams: 0,
    });
    const raised: number[] = [];
    const start = performance.now();
    const ch = channel(srv.address);
    const calls = Promise.all([call(ch, 3_000), call(ch, 3_000)]);
    // Raised once the client's session is up and its calls wait.
    await waitFor("the client's session", () => srv.sessions.length > 0, { timeoutMs: 2_000, intervalMs: 5 });
    await Bun.sleep(100);
    srv.sessions[0]!.settings({ maxConcurrentStreams: 100 }, () => raised.push(performance.now() - start));
    const results = await calls;
    expect(results.map((r) => r.kind)).toEqual(["reply", "reply"]);
    // Without the pump on new settings they waited out their 3 s deadline.
    expect(performance.now() - start).toBeLessThan(2_000);
    expect(raised).toHaveLength(1);
  });

  test("GOAWAY before the server's settings is a failed connect: the calls fail unsent and the backoff holds", async () => {
    let connections = 0;
    const server = net.createServer((socket) => {
      connections++;
      socket.on("error", () => {});
      socket.on("data", () => {});
      socket.write(Buffer.concat([frame(7, 0, 0, Buffer.alloc(8)), frame(4, 0, 0, Buffer.alloc(0))]));
      setTimeout(() => socket.destroy(), 50);
    });
    const port = await freePort();
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    cleanup.push(() => server.close());
    const ch = channel(`127.0.0.1:${port}`, { initialBackoffMs: 500, maxBackoffMs: 500 });
    const failed = await call(ch, 1_000);
    expect(failed).toMatchObject({ kind: "status", code: GrpcCode.UNAVAILABLE, unsent: true });
    expect((failed as { details: string }).details).toContain("GOAWAY before its settings");
    const during = await call(ch, 1_000);
    expect((during as { details: string }).details).toContain("next try in");
    await Bun.sleep(200);
    // One connection for the first call; none while backing off (a loop made thousands).
    expect(connections).toBe(1);
  });

  test("a compressed message is INTERNAL; one over the limit RESOURCE_EXHAUSTED; none at all UNIMPLEMENTED", async () => {
    let mode = "compressed";
    const srv = await rawServer((stream) => {
      if (mode === "compressed") {
        const body = reply("x");
        body[0] = 1;
        answer(stream, body, { "grpc-status": "0" });
      } else if (mode === "large") answer(stream, reply("x".repeat(LIMIT + 1)), { "grpc-status": "0" });
      else answer(stream, null, { "grpc-status": "0" });
    });
    const ch = channel(srv.address);
    expect(await call(ch)).toMatchObject({ kind: "status", code: GrpcCode.INTERNAL });
    mode = "large";
    const large = await call(ch);
    expect(large).toMatchObject({ kind: "status", code: GrpcCode.RESOURCE_EXHAUSTED });
    expect((large as { details: string }).details).toContain(`> ${LIMIT} bytes`);
    // Marked as the gateway's own refusal, which grpc/route.ts answers 502 (not RESOURCE_EXHAUSTED's 429).
    expect((large as { replyTooLarge?: number }).replyTooLarge).toBeGreaterThan(LIMIT);
    mode = "empty";
    expect(await call(ch)).toMatchObject({ kind: "status", code: GrpcCode.UNIMPLEMENTED });
  });

  test("stream resets: REFUSED_STREAM is sent once more, then UNAVAILABLE unprocessed (not unsent: the endpoint is up); CANCEL is CANCELLED", async () => {
    const refusing = await resetServer(http2.constants.NGHTTP2_REFUSED_STREAM);
    const refused = await call(channel(refusing.address));
    expect(refused).toMatchObject({ kind: "status", code: GrpcCode.UNAVAILABLE, unprocessed: true });
    expect((refused as { unsent?: true }).unsent).toBeUndefined();
    expect(classify(refused)).toBe("refused");
    expect(refusing.streams).toEqual([1, 3]);
    const cancelling = await resetServer(http2.constants.NGHTTP2_CANCEL);
    const cancelled = await call(channel(cancelling.address));
    expect(cancelled).toMatchObject({ kind: "status", code: GrpcCode.CANCELLED });
    expect(classify(cancelled)).toBe("ok");
    expect(cancelling.streams).toEqual([1]);
  });

  test("a call refused unprocessed is not sent again for a client already gone: cancelled", async () => {
    const refusing = await resetServer(http2.constants.NGHTTP2_REFUSED_STREAM);
    const controller = new AbortController();
    controller.abort();
    // Refused within CLIENT_WATCH_MS, before the call looked at its client: the refusal looks.
    expect(await callUnary(channel(refusing.address), verify, REQUEST, {}, 5_000, LIMIT, controller)).toEqual({
      kind: "cancelled",
    });
    expect(refusing.streams).toEqual([1]);
  });

  test("no answer: DEADLINE_EXCEEDED at the deadline, and the server sees the stream cancelled", async () => {
    const resets: number[] = [];
    const srv = await rawServer((stream) => stream.on("close", () => resets.push(stream.rstCode)));
    const ch = channel(srv.address);
    const outcome = await call(ch, 150);
    expect(outcome).toMatchObject({ kind: "status", code: GrpcCode.DEADLINE_EXCEEDED });
    expect(classify(outcome)).toBe("timeout");
    for (let i = 0; i < 100 && resets.length === 0; i++) await Bun.sleep(10);
    expect(resets).toEqual([http2.constants.NGHTTP2_CANCEL]);
  });

  test("the caller went away (its signal aborts): cancelled at once, the server sees CANCEL, and the session carries on", async () => {
    const resets: number[] = [];
    let answering = false;
    const srv = await rawServer((stream) => {
      if (answering) answer(stream, reply("ok"), { "grpc-status": "0" });
      else stream.on("close", () => resets.push(stream.rstCode));
    });
    const ch = channel(srv.address);
    const controller = new AbortController();
    const pending = callUnary(ch, verify, REQUEST, {}, 5_000, LIMIT, controller);
    await Bun.sleep(100);
    const started = performance.now();
    controller.abort();
    const outcome = await pending;
    expect(outcome).toEqual({ kind: "cancelled" });
    expect(classify(outcome)).toBe("cancelled");
    expect(performance.now() - started).toBeLessThan(1_000);
    for (let i = 0; i < 100 && resets.length === 0; i++) await Bun.sleep(10);
    expect(resets).toEqual([http2.constants.NGHTTP2_CANCEL]);
    answering = true;
    expect((await call(ch)).kind).toBe("reply");
    expect(srv.sessions.length).toBe(1);
    // Gone before a call the server sits on: cancelled at the first look, CLIENT_WATCH_MS in, not at the deadline.
    answering = false;
    const started2 = performance.now();
    expect(await callUnary(ch, verify, REQUEST, {}, 5_000, LIMIT, controller)).toEqual({ kind: "cancelled" });
    expect(performance.now() - started2).toBeGreaterThanOrEqual(CLIENT_WATCH_MS - 2);
    expect(performance.now() - started2).toBeLessThan(2_500);
  });

  test("a call answered within CLIENT_WATCH_MS never looks at its client", async () => {
    const srv = await rawServer((stream) => answer(stream, reply("ok"), { "grpc-status": "0" }));
    const ch = channel(srv.address);
    let looked = 0;
    const client = {
      get signal(): AbortSignal {
        looked++;
        return new AbortController().signal;
      },
    };
    expect((await callUnary(ch, verify, REQUEST, {}, 1_000, LIMIT, client)).kind).toBe("reply");
    await Bun.sleep(CLIENT_WATCH_MS + 20);
    expect(looked).toBe(0);
  });

  test("a call waiting for a stream that is cancelled leaves the queue; the others go on", async () => {
    let started = 0;
    const srv = await rawServer(
      (stream) => {
        started++;
        setTimeout(() => answer(stream, reply("ok"), { "grpc-status": "0" }), 150);
      },
      { maxConcurrentStreams: 1 },
    );
    const ch = channel(srv.address);
    await call(ch); // the session is up and its limit known
    started = 0;
    const controller = new AbortController();
    const first = call(ch);
    const waiting = callUnary(ch, verify, REQUEST, {}, 5_000, LIMIT, controller);
    const third = call(ch);
    await Bun.sleep(30);
    controller.abort();
    expect(await waiting).toEqual({ kind: "cancelled" });
    expect((await first).kind).toBe("reply");
    expect((await third).kind).toBe("reply");
    expect(started).toBe(2);
  });

  test("the connection dropped mid-call: UNAVAILABLE, not unsent (it may have been processed); the next call reconnects", async () => {
    // Frame by frame: Bun's server, told to destroy its session, first ends the stream cleanly
    // (GOAWAY keeping it, then an empty DATA with END_STREAM) — a call ended without a status on
    // the wire, not a dropped connection —, and it allows no touching its socket.
    let drop = true;
    const srv = await frameServer((connection, stream) => {
      connection.headers(stream, { ":status": "200", "content-type": "application/grpc" });
      if (drop) setTimeout(() => connection.socket.destroy(), 10);
      else {
        connection.data(stream, reply("again"));
        connection.headers(stream, { "grpc-status": "0" }, true);
      }
    });
    const ch = channel(srv.address);
    const dropped = await call(ch);
    expect(dropped).toMatchObject({
      kind: "status",
      code: GrpcCode.UNAVAILABLE,
      details: "connection to the upstream lost during the call",
    });
    expect((dropped as { unsent?: true }).unsent).toBeUndefined();
    expect(classify(dropped)).toBe("unavailable");
    drop = false;
    expect(await call(ch)).toMatchObject({ kind: "reply", reply: { message: "again" } });
    // Stream 1 of a second connection.
    expect(srv.streams).toEqual([1, 1]);
  });

  test("GOAWAY: calls above the last stream id were not processed, and go again over a new session (once)", async () => {
    const held: ServerHttp2Stream[] = [];
    const srv = await rawServer((stream) => {
      held.push(stream);
      if (held.length === 3) {
        // Processes the first of the three, refuses the other two.
        stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR, held[0]!.id);
        answer(held[0]!, reply("first"), { "grpc-status": "0" });
      } else if (held.length > 3) answer(stream, reply("again"), { "grpc-status": "0" });
    });
    const ch = channel(srv.address);
    const results = await Promise.all([call(ch), call(ch), call(ch)]);
    const messages = results.map((r) => (r.kind === "reply" ? r.reply.message : r));
    expect(messages).toEqual(["first", "again", "again"]);
    expect(srv.sessions.length).toBe(2);
    expect(held.length).toBe(5);
  });

  test("after a GOAWAY that keeps the call, a reset or a missing status is what it is; only a lost connection is UNAVAILABLE", async () => {
    // On Bun the session is already closed and destroyed when the last stream of a GOAWAY'd
    // session closes: that said "connection lost" (UNAVAILABLE, retried) for every one of these.
    let mode = "";
    const srv = await frameServer((connection, stream) => {
      connection.goaway(stream); // NO_ERROR, and this call is processed
      setTimeout(() => {
        if (mode === "cancel") connection.rst(stream, http2.constants.NGHTTP2_CANCEL);
        else if (mode === "internal") connection.rst(stream, http2.constants.NGHTTP2_INTERNAL_ERROR);
        else if (mode === "no-status") {
          connection.headers(stream, { ":status": "200", "content-type": "application/grpc" });
          connection.data(stream, reply("no trailers"), true);
        } else if (mode === "reset-no-error") connection.rst(stream, http2.constants.NGHTTP2_NO_ERROR);
        else {
          connection.headers(stream, { ":status": "200", "content-type": "application/grpc" });
          setTimeout(() => connection.socket.destroy(), 20);
        }
      }, 20);
    });
    const ch = channel(srv.address);
    const outcomes: Record<string, GrpcOutcome> = {};
    for (mode of ["cancel", "internal", "no-status", "reset-no-error", "connection-lost"])
      outcomes[mode] = await call(ch);
    expect(outcomes.cancel).toMatchObject({ kind: "status", code: GrpcCode.CANCELLED });
    expect(classify(outcomes.cancel!)).toBe("ok");
    expect(outcomes.internal).toMatchObject({ kind: "status", code: GrpcCode.INTERNAL });
    expect((outcomes.internal as { details: string }).details).toContain("RST_STREAM code 2");
    for (const ended of [outcomes["no-status"], outcomes["reset-no-error"]])
      expect(ended).toMatchObject({
        kind: "status",
        code: GrpcCode.INTERNAL,
        details: "the upstream ended the call without a gRPC status",
      });
    // The socket closed under the call: that stays a lost connection (it may have been processed).
    expect(outcomes["connection-lost"]).toMatchObject({
      kind: "status",
      code: GrpcCode.UNAVAILABLE,
      details: "connection to the upstream lost during the call",
    });
    expect((outcomes["connection-lost"] as { unsent?: true }).unsent).toBeUndefined();
    // Each call on its own connection (the one before went away), none sent twice.
    expect(srv.streams).toEqual([1, 1, 1, 1, 1]);
  });

  test("the server's stream limit holds: calls past it wait for a free stream, none is refused", async () => {
    let open = 0;
    let most = 0;
    const srv = await rawServer(
      (stream) => {
        open++;
        most = Math.max(most, open);
        setTimeout(() => {
          answer(stream, reply("ok"), { "grpc-status": "0" });
          stream.on("close", () => open--);
        }, 20);
      },
      { maxConcurrentStreams: 2 },
    );
    const ch = channel(srv.address);
    const results = await Promise.all(Array.from({ length: 8 }, () => call(ch)));
    expect(results.map((r) => r.kind)).toEqual(Array(8).fill("reply"));
    expect(most).toBe(2);
  });
});

describe("a busy endpoint is not a refused connection", () => {
  test("a call that waited for a free stream until its deadline is a timeout, never sent; the endpoint is not ejected", async () => {
    const started: ServerHttp2Stream[] = [];
    const srv = await rawServer(
      (stream) => {
        started.push(stream);
        setTimeout(() => answer(stream, reply("slow"), { "grpc-status": "0" }), 600);
      },
      { maxConcurrentStreams: 1 },
    );
    const { endpoint, request } = upstreamOf(srv.address, 200);
    // Holds the one stream the upstream allows.
    const slow = call(endpoint.grpcChannel(), 2_000);
    await waitFor("the slow call at the server", () => started.length === 1, { timeoutMs: 2_000, intervalMs: 5 });
    const queued = await request();
    expect(queued).toMatchObject({ kind: "status", code: GrpcCode.DEADLINE_EXCEEDED });
    // Taken for a refused connection ("connect"), it ejected the endpoint at once.
    expect(endpoint.ejected).toBe(false);
    expect(endpoint.consecutiveFailures).toBe(1);
    expect((queued as { unsent?: true }).unsent).toBeUndefined();
    expect(classify(queued as GrpcOutcome)).toBe("timeout");
    // The try's own time: what is left of the route's 200 ms when it starts (the context is made first).
    const waited = /no stream free on the upstream within (\d+) ms/.exec((queued as { details: string }).details);
    expect(Number(waited?.[1])).toBeWithin(150, 201);
    expect(started.length).toBe(1);
    expect(await slow).toMatchObject({ kind: "reply", reply: { message: "slow" } });
  });

  test("a call refused twice with REFUSED_STREAM counts one failure: the endpoint sheds load, it is not ejected at once", async () => {
    const refusing = await resetServer(http2.constants.NGHTTP2_REFUSED_STREAM);
    const { endpoint, request } = upstreamOf(refusing.address, 1_000);
    expect(await request()).toMatchObject({ kind: "status", code: GrpcCode.UNAVAILABLE });
    expect(endpoint.ejected).toBe(false);
    expect(endpoint.consecutiveFailures).toBe(1);
    expect(refusing.streams).toEqual([1, 3]);
  });

  test("a non-idempotent call refused twice with REFUSED_STREAM goes to another endpoint; the refusing one counts one failure", async () => {
    const refusing = await resetServer(http2.constants.NGHTTP2_REFUSED_STREAM);
    const answering = await rawServer((stream) => answer(stream, reply("elsewhere"), { "grpc-status": "0" }));
    const config = testConfig({
      protocol: "grpc",
      endpoints: `${refusing.address},${answering.address}`,
      timeoutMs: 2_000,
    });
    const upstream = testUpstream(config);
    cleanup.push(() => upstream.close());
    const refusingEndpoint = upstream.endpoints.find((e) => e.address === refusing.address)!;
    const verdicts: string[] = [];
    // Until the balancer has sent one call to the refusing endpoint first (it picks at random).
    for (let i = 0; i < 20 && !verdicts.includes("refused"); i++) {
      verdicts.length = 0;
      const outcome = await dispatch(
        upstream,
        config.routes[0]!,
        context(),
        false,
        (endpoint, ms) => callUnary(endpoint.grpcChannel(), verify, REQUEST, {}, ms, LIMIT),
        {
          beforeTry: () => undefined,
          onTry: (_token, _endpoint, _outcome, verdict) => verdicts.push(verdict),
        },
      );
      expect(outcome).toMatchObject({ kind: "reply", reply: { message: "elsewhere" } });
    }
    expect(verdicts).toEqual(["refused", "ok"]);
    expect(refusingEndpoint.ejected).toBe(false);
    expect(refusingEndpoint.consecutiveFailures).toBe(1);
    expect(upstream.retries.attempted).toBeGreaterThanOrEqual(1);
  });

  test("a call that waited for the connection until its deadline stays unsent: no connection took it", async () => {
    // Accepts the TCP connection and never sends its settings.
    const sockets: net.Socket[] = [];
    const server = net.createServer((socket) => {
      sockets.push(socket);
      socket.on("error", () => {});
    });
    const port = await freePort();
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    cleanup.push(() => {
      for (const socket of sockets) socket.destroy();
      server.close();
    });
    const outcome = await call(channel(`127.0.0.1:${port}`), 200);
    expect(outcome).toMatchObject({ kind: "status", code: GrpcCode.DEADLINE_EXCEEDED, unsent: true });
    expect(classify(outcome)).toBe("connect");
  });
});

describe("connecting", () => {
  test("refused: UNAVAILABLE unsent (a 'connect' verdict); calls fail fast during the backoff; reset() dials at once", async () => {
    const port = await freePort();
    const ch = channel(`127.0.0.1:${port}`, { initialBackoffMs: 60_000, maxBackoffMs: 60_000 });
    const refused = await call(ch);
    expect(refused).toMatchObject({ kind: "status", code: GrpcCode.UNAVAILABLE, unsent: true });
    expect(classify(refused)).toBe("connect");
    expect((refused as { details: string }).details).toContain("ECONNREFUSED");
    const during = await call(ch);
    expect((during as { details: string }).details).toContain("next try in");

    // The server comes up; the backoff (a minute) would keep failing calls, reset() ends it.
    const server = http2.createServer();
    server.on("stream", (stream) => answer(stream as ServerHttp2Stream, reply("up"), { "grpc-status": "0" }));
    await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
    cleanup.push(() => server.close());
    expect(await call(ch)).toMatchObject({ kind: "status", unsent: true });
    ch.reset();
    expect(await call(ch)).toMatchObject({ kind: "reply" });
  });
});

describe("memory", () => {
  test("a finished call keeps nothing alive: young collections promote only the calls in flight, not every call's timer", async () => {
    // JavaScriptCore's young collections promote whatever is alive; an old finished call that still
    // pointed at its timer (and stream, headers, promise…) had every young collection promote those
    // too, until a full collection: the Timeouts of nearly every call made (3,889 of 4,000 before
    // UnaryCall.#letGo), where the calls in flight at the few young collections come to ~260.
    const srv = await rawServer((stream) => answer(stream, reply("x"), { "grpc-status": "0" }));
    const ch = channel(srv.address);
    const CALLS = 4_000;
    let made = 0;
    const worker = async () => {
      while (made < CALLS) {
        made++;
        expect(await call(ch, 5_000, { "x-request-id": crypto.randomUUID() })).toMatchObject({ kind: "reply" });
      }
    };
    const load = () => Promise.all(Array.from({ length: 64 }, worker));
    await load(); // the session up and the code compiled
    made = 0;
    fullGC();
    await load();
    edenGC();
    const afterYoung = heapStats().objectTypeCounts.Timeout ?? 0;
    fullGC();
    const afterFull = heapStats().objectTypeCounts.Timeout ?? 0;
    // Timeouts that a young collection kept but a full one found dead.
    expect(afterYoung - afterFull).toBeLessThan(CALLS / 4);
  });
});
