import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import http2 from "node:http2";
import { Fault } from "../../lib/fault.ts";
import { createMetricsRegistry, GrpcServerMetrics } from "../../lib/telemetry/metrics.ts";
import { waitFor } from "../../scripts/stack/testing/processes.ts";
import { startInProcess, TEST_IDENTITY, type InProcessRpcapp } from "./fixtures.ts";

let app: InProcessRpcapp;
beforeAll(async () => {
  app = await startInProcess();
});
afterAll(() => app.close());

describe("VerifyUser", () => {
  test("verifies a valid id and token", async () => {
    const { reply, error } = await app.clients.verifyUser({ id: 121, token: "a$$" });
    expect(error).toBeUndefined();
    expect(reply).toEqual({ message: "Verified: 121" });
  });

  test.each([
    ["id 0", { id: 0, token: "a$$" }, "id must be a positive integer (got 0)"],
    ["a negative id", { id: -7, token: "a$$" }, "id must be a positive integer (got -7)"],
    ["a missing id", { token: "a$$" }, "id must be a positive integer (got 0)"],
    ["an empty token", { id: 121, token: "" }, "token must not be empty"],
  ])("rejects %s with INVALID_ARGUMENT naming the field", async (_name, request, message) => {
    const { error } = await app.clients.verifyUser(request);
    expect(error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(error?.details).toContain(message);
  });

  test("names every invalid field at once", async () => {
    const { error } = await app.clients.verifyUser({ id: 0, token: "" });
    expect(error?.details).toBe(
      "invalid VerifyRequest: id must be a positive integer (got 0); token must not be empty",
    );
  });
});

describe("response metadata", () => {
  test("a reply carries x-served-by, x-service-version and echoes x-request-id", async () => {
    const metadata = new grpc.Metadata();
    metadata.set("x-request-id", "req-abc-123");
    const { headers } = await app.clients.verifyUser({ id: 1, token: "t" }, metadata);
    expect(headers.get("x-served-by")).toEqual([TEST_IDENTITY.instance]);
    expect(headers.get("x-service-version")).toEqual([TEST_IDENTITY.version]);
    expect(headers.get("x-request-id")).toEqual(["req-abc-123"]);
  });

  test("an error carries the same headers as initial metadata, not only trailers", async () => {
    const { error, headers } = await app.clients.verifyUser({ id: 0, token: "" });
    expect(error?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(headers.get("x-served-by")).toEqual([TEST_IDENTITY.instance]);
    expect(headers.get("x-request-id")[0]).toMatch(/^[0-9a-f-]{36}$/);
  });

  test("a missing or malformed x-request-id is replaced by a fresh UUID", async () => {
    const metadata = new grpc.Metadata();
    metadata.set("x-request-id", "not an id; with spaces");
    const { headers } = await app.clients.verifyUser({ id: 1, token: "t" }, metadata);
    expect(headers.get("x-request-id")[0]).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  });
});

describe("access log", () => {
  test("writes one JSON line per RPC with method, code, duration, request id and peer", async () => {
    const metadata = new grpc.Metadata();
    metadata.set("x-request-id", "log-line-req");
    await app.clients.verifyUser({ id: -1, token: "x" }, metadata);
    await waitFor("the access log line", () => app.logs.some((l) => l.request_id === "log-line-req"));
    const lines = app.logs.filter((l) => l.request_id === "log-line-req");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      msg: "rpc",
      method: "userverify.UserVerify/VerifyUser",
      grpc_code: "INVALID_ARGUMENT",
      service: "rpcapp",
    });
    expect(lines[0]!.duration_ms).toBeNumber();
    expect(lines[0]!.peer).toMatch(/^127\.0\.0\.1:\d+$/);
  });
});

/**
 * One call over a bare HTTP/2 stream, so that nothing client-side (a grpc-js deadline, its
 * serializer) steps in: the headers and the framed message are sent as given, and the status
 * the server answers is read from the trailers (or a trailers-only response).
 */
async function rawCall(
  port: number,
  headers: Record<string, string>,
  message: Uint8Array,
  path = "/userverify.UserVerify/VerifyUser",
): Promise<{ code: number; details: string; identity: Record<string, unknown> }> {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  try {
    return await new Promise<{ code: number; details: string; identity: Record<string, unknown> }>(
      (resolve, reject) => {
        const framed = Buffer.alloc(5 + message.byteLength);
        framed.writeUInt32BE(message.byteLength, 1);
        framed.set(message, 5);
        const stream = session.request({
          ":method": "POST",
          ":path": path,
          "content-type": "application/grpc",
          te: "trailers",
          ...headers,
        });
        // The identity headers, from the initial headers (or the only ones, when trailers-only).
        let identity: Record<string, unknown> = {};
        const status = (h: http2.IncomingHttpHeaders) => {
          if (h["grpc-status"] !== undefined)
            resolve({
              code: Number(h["grpc-status"]),
              details: decodeURIComponent(String(h["grpc-message"] ?? "")),
              identity,
            });
        };
        stream.on("response", (h) => {
          identity = {
            "x-served-by": h["x-served-by"],
            "x-service-version": h["x-service-version"],
            "x-request-id": h["x-request-id"],
          };
          status(h);
        });
        stream.on("trailers", status);
        stream.on("data", () => {});
        stream.on("error", reject);
        stream.on("close", () => reject(new Error("the stream closed without a gRPC status")));
        stream.end(framed);
      },
    );
  } finally {
    session.close();
  }
}

describe("calls grpc-js ends by itself are logged and counted with the status the client got", () => {
  test("a request that cannot be decoded: INTERNAL, at error level, not CANCELLED", async () => {
    const { code, identity } = await rawCall(
      app.rpc.port,
      { "x-request-id": "undecodable-req" },
      new Uint8Array([0xff, 0xff]),
    );
    expect(code).toBe(grpc.status.INTERNAL);
    // Trailers-only, and still saying who answered, as every answer does.
    expect(identity).toEqual({
      "x-served-by": TEST_IDENTITY.instance,
      "x-service-version": TEST_IDENTITY.version,
      "x-request-id": "undecodable-req",
    });
    await waitFor("the access line", () => app.logs.some((l) => l.request_id === "undecodable-req"));
    const lines = app.logs.filter((l) => l.request_id === "undecodable-req");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ msg: "rpc", grpc_code: "INTERNAL", level: "error" });
  });

  test("a deadline that passes while the handler works: DEADLINE_EXCEEDED, not CANCELLED", async () => {
    // The handler answers after 400 ms; the call allows 50 and the client never cancels it, so
    // the status is grpc-js's own (its deadline timer), not a cancellation.
    const slow = await startInProcess({ fault: new Fault(0, 400) });
    try {
      const { code, identity } = await rawCall(
        slow.rpc.port,
        { "grpc-timeout": "50m", "x-request-id": "late-req" },
        new Uint8Array(),
      );
      expect(code).toBe(grpc.status.DEADLINE_EXCEEDED);
      expect(identity).toEqual({
        "x-served-by": TEST_IDENTITY.instance,
        "x-service-version": TEST_IDENTITY.version,
        "x-request-id": "late-req",
      });
      await waitFor("the access line", () => slow.logs.some((l) => l.request_id === "late-req"));
      // The handler's late answer must not add a second line.
      await Bun.sleep(500);
      const lines = slow.logs.filter((l) => l.request_id === "late-req");
      expect(lines.map((l) => l.grpc_code)).toEqual(["DEADLINE_EXCEEDED"]);
    } finally {
      await slow.close();
    }
  });
});

/**
 * Requests that are not a valid encoding of their message: a length-delimited field running past
 * the end of the message, or a proto3 `string` that is not UTF-8. They must be refused as
 * undecodable (grpc-js's own INTERNAL "Error deserializing request"), never answered as if the
 * decoder had guessed the rest — a lenient decoder clamps the field to the bytes present.
 */
describe("requests that are not valid protobuf are refused as undecodable", () => {
  let counted: InProcessRpcapp;
  let metrics: GrpcServerMetrics;
  beforeAll(async () => {
    metrics = new GrpcServerMetrics(createMetricsRegistry(TEST_IDENTITY, { processMetrics: false }));
    counted = await startInProcess({ telemetry: { metrics } });
  });
  afterAll(() => counted.close());

  test.each([
    // id 1, token declared 80 bytes long with 1 present.
    ["a truncated string field", "truncated-token", [0x08, 0x01, 0x12, 0x50, 0x61]],
    // id 5, token declared 127 bytes long with none present.
    ["a string field with no bytes at all", "empty-truncated-token", [0x08, 0x05, 0x12, 0x7f]],
    // token declared 80 bytes long with 1 present, no id.
    ["a truncated string field alone", "lone-truncated-token", [0x12, 0x50, 0x61]],
    // id 1, token ff fe: not UTF-8, which proto3 requires of a string.
    ["a token that is not UTF-8", "non-utf8-token", [0x08, 0x01, 0x12, 0x02, 0xff, 0xfe]],
    // id 1, token ed a0 80: an encoded UTF-16 surrogate, not valid UTF-8 either.
    ["a token holding an encoded surrogate", "surrogate-token", [0x08, 0x01, 0x12, 0x03, 0xed, 0xa0, 0x80]],
  ])("VerifyUser: %s answers INTERNAL, logged at error level and counted", async (_name, requestId, bytes) => {
    const before = metrics.calls.get("userverify.UserVerify/VerifyUser", "INTERNAL").count;
    const reply = await rawCall(counted.rpc.port, { "x-request-id": requestId }, new Uint8Array(bytes));
    expect(reply).toMatchObject({ code: grpc.status.INTERNAL, details: "Error deserializing request" });
    await waitFor("the access line", () => counted.logs.some((l) => l.request_id === requestId));
    const lines = counted.logs.filter((l) => l.request_id === requestId);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ msg: "rpc", grpc_code: "INTERNAL", level: "error" });
    expect(metrics.calls.get("userverify.UserVerify/VerifyUser", "INTERNAL").count).toBe(before + 1);
  });

  test("VerifyUser: a token of multi-byte UTF-8 is still verified", async () => {
    const token = new TextEncoder().encode("é✓😀");
    const reply = await rawCall(counted.rpc.port, {}, new Uint8Array([0x08, 0x07, 0x12, token.byteLength, ...token]));
    expect(reply).toMatchObject({ code: grpc.status.OK, details: "OK" });
  });

  test.each([
    // host declared 16 bytes long with 1 present.
    ["a truncated field", [0x0a, 0x10, 0x61]],
    // list_services ff fe: not UTF-8.
    ["a string that is not UTF-8", [0x3a, 0x02, 0xff, 0xfe]],
  ])("ServerReflectionInfo (v1 and v1alpha): %s answers INTERNAL too", async (_name, bytes) => {
    for (const version of ["v1", "v1alpha"]) {
      const reply = await rawCall(
        counted.rpc.port,
        {},
        new Uint8Array(bytes),
        `/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`,
      );
      expect(reply).toMatchObject({ code: grpc.status.INTERNAL, details: "Error deserializing request" });
    }
  });

  test("Health/Check: a truncated service name answers INTERNAL too", async () => {
    // service declared 80 bytes long with 1 present.
    const reply = await rawCall(
      counted.rpc.port,
      {},
      new Uint8Array([0x0a, 0x50, 0x61]),
      "/grpc.health.v1.Health/Check",
    );
    expect(reply).toMatchObject({ code: grpc.status.INTERNAL, details: "Error deserializing request" });
  });
});

describe("grpc.health.v1.Health", () => {
  test("Check answers SERVING for the server and for UserVerify", async () => {
    expect((await app.clients.check("")).reply).toEqual({ status: "SERVING" });
    expect((await app.clients.check("userverify.UserVerify")).reply).toEqual({ status: "SERVING" });
  });

  test("Check answers NOT_FOUND for an unknown service", async () => {
    const { error } = await app.clients.check("no.such.Service");
    expect(error?.code).toBe(grpc.status.NOT_FOUND);
    expect(error?.details).toContain('"no.such.Service"');
  });

  test("Watch answers SERVICE_UNKNOWN for an unknown service and keeps the stream open", async () => {
    const watch = app.clients.watch("no.such.Service");
    await waitFor("the first Watch update", () => watch.statuses.length > 0);
    expect(watch.statuses).toEqual(["SERVICE_UNKNOWN"]);
    watch.cancel();
    expect((await watch.ended).code).toBe(grpc.status.CANCELLED);
  });

  test("a cancelled Watch leaves nothing behind: watched names do not pile up", async () => {
    const health = app.rpc.health;
    // No stream of this app is open now (the test above cancelled its own; its cancellation may still be on the way).
    const before = 0;
    await waitFor("no name watched", () => health.watchedServices === before);
    for (let i = 0; i < 20; i++) {
      const watch = app.clients.watch(`gone.${i}.${"x".repeat(1000)}`);
      await waitFor("the first Watch update", () => watch.statuses.length > 0);
      watch.cancel();
      expect((await watch.ended).code).toBe(grpc.status.CANCELLED);
    }
    await waitFor("the cancelled streams forgotten", () => health.watchedServices === before);
    // Two streams on one name: the name stays until the second goes.
    const [a, b] = [app.clients.watch("shared.name"), app.clients.watch("shared.name")];
    await waitFor("both streams' first update", () => a.statuses.length > 0 && b.statuses.length > 0);
    expect(health.watchedServices).toBe(before + 1);
    a.cancel();
    await a.ended;
    await Bun.sleep(50);
    expect(health.watchedServices).toBe(before + 1);
    b.cancel();
    await b.ended;
    await waitFor("the shared name forgotten", () => health.watchedServices === before);
  });
});

describe("readiness drives health", () => {
  test("Watch streams the change to NOT_SERVING when readiness turns false, then ends on stop", async () => {
    const draining = await startInProcess();
    try {
      const watch = draining.clients.watch("");
      const watchVerify = draining.clients.watch("userverify.UserVerify");
      await waitFor("the initial status", () => watch.statuses.length > 0 && watchVerify.statuses.length > 0);
      expect(watch.statuses).toEqual(["SERVING"]);

      void draining.lifecycle.shutdown();
      await waitFor("NOT_SERVING on the Watch stream", () => watch.statuses.length > 1);
      expect(watch.statuses).toEqual(["SERVING", "NOT_SERVING"]);
      await waitFor("NOT_SERVING for UserVerify", () => watchVerify.statuses.length > 1);
      expect((await draining.clients.check("")).reply).toEqual({ status: "NOT_SERVING" });
      expect((await draining.clients.check("userverify.UserVerify")).reply).toEqual({ status: "NOT_SERVING" });

      // stop() ends Watch streams itself, so a graceful shutdown does not wait out its bound: the
      // streams end OK, and the grace-period cut (which would log) never happens.
      await draining.rpc.stop(5_000);
      expect((await watch.ended).code).toBe(grpc.status.OK);
      expect(draining.logs.map((l) => l.msg)).not.toContain(
        "gRPC calls still open after the grace period; closing them",
      );
    } finally {
      await draining.close();
    }
  });

  test("health starts NOT_SERVING until the lifecycle is marked ready", async () => {
    const starting = await startInProcess({ ready: false });
    try {
      expect((await starting.clients.check("")).reply).toEqual({ status: "NOT_SERVING" });
      starting.lifecycle.markReady();
      expect((await starting.clients.check("")).reply).toEqual({ status: "SERVING" });
    } finally {
      await starting.close();
    }
  });
});

describe("server reflection", () => {
  const expected = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
    "userverify.UserVerify",
  ];

  test("lists every service, over v1 and v1alpha", async () => {
    expect(await app.clients.listServices("v1")).toEqual(expected);
    expect(await app.clients.listServices("v1alpha")).toEqual(expected);
  });

  test("describes UserVerify with its method and messages", async () => {
    const [file] = await app.clients.describe("userverify.UserVerify");
    expect(file?.package).toBe("userverify");
    expect(file?.service[0]?.name).toBe("UserVerify");
    expect(file?.service[0]?.method.map((m) => m.name)).toEqual(["VerifyUser"]);
  });

  test("answers an unknown symbol with a NOT_FOUND error response", async () => {
    const reply = await app.clients.reflect({ fileContainingSymbol: "no.such.Symbol" });
    expect(reply.errorResponse?.errorCode).toBe(grpc.status.NOT_FOUND);
  });

  test("a name that is a property of every JavaScript object (constructor, __proto__, toString) is NOT_FOUND too", async () => {
    for (const name of ["constructor", "__proto__", "toString", "hasOwnProperty"])
      for (const request of [
        { fileContainingSymbol: name },
        { fileByFilename: name },
        { allExtensionNumbersOfType: name },
        { fileContainingExtension: { containingType: name, extensionNumber: 1 } },
      ]) {
        const reply = await app.clients.reflect(request);
        expect({ request, code: reply.errorResponse?.errorCode }).toEqual({ request, code: grpc.status.NOT_FOUND });
      }
    // The real names are still found.
    expect(
      (await app.clients.reflect({ fileContainingSymbol: "userverify.UserVerify" })).errorResponse,
    ).toBeUndefined();
  });
});

describe("connection age", () => {
  test("closes a client's connection after max connection age, so the client reconnects (and re-resolves)", async () => {
    const aging = await startInProcess({ maxConnectionAgeMs: 200, maxConnectionAgeGraceMs: 100 });
    try {
      const peerOfCall = async (id: string) => {
        const metadata = new grpc.Metadata();
        metadata.set("x-request-id", id);
        await aging.clients.verifyUser({ id: 1, token: "t" }, metadata);
        return aging.logs.find((l) => l.request_id === id)?.peer;
      };
      const firstPeer = await peerOfCall("age-0");
      expect(firstPeer).toBeString();
      let n = 0;
      await waitFor("a call on a new connection", async () => (await peerOfCall(`age-${++n}`)) !== firstPeer, {
        timeoutMs: 5_000,
        intervalMs: 50,
      });
    } finally {
      await aging.close();
    }
  });
});

describe("stop", () => {
  test("cuts calls still open after the grace period instead of waiting for them", async () => {
    const stuck = await startInProcess();
    try {
      // A reflection stream the client never half-closes: tryShutdown alone would wait forever.
      const stream = stuck.clients.reflectionStream();
      stream.on("error", () => {});
      const answered = new Promise((resolve) => stream.once("data", resolve));
      stream.write({ listServices: "*" });
      await answered;
      // In order, not timed: the stream is still open when the grace period ends, stop() cuts it then.
      const order: string[] = [];
      stream.once("status", () => order.push("stream closed"));
      await stuck.rpc.stop(300);
      order.push("stop() returned");
      await waitFor("the cut stream to close", () => order.includes("stream closed"));
      expect(stuck.logs.some((l) => l.msg === "gRPC calls still open after the grace period; closing them")).toBe(true);
      expect(order).toEqual(["stop() returned", "stream closed"]);
    } finally {
      await stuck.close();
    }
  });
});
