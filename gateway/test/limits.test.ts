/**
 * The hardening pieces one by one, in-process: what is refused before routing, the response-size
 * cap, number edge cases in transcoding, framing details the parser lets through, and the
 * `limits` config with its defaults. The JSON depth scan is tested in lib/json.test.ts.
 */
import { describe, expect, test } from "bun:test";
import type { Server } from "bun";
import type { Static } from "@sinclair/typebox";
import { Value } from "@sinclair/typebox/value";
import protobuf from "protobufjs";
import { ConfigError, parseConfig } from "../src/config/load.ts";
import { LimitsSchema } from "../src/config/schema.ts";
import { checkMessage } from "../src/grpc/transcode.ts";
import { extendDeadline } from "../src/limits.ts";
import { readBody } from "../src/proxy/body.ts";
import { limitResponseSize } from "../src/proxy/response-limit.ts";
import { normalizePath } from "../src/routing/path.ts";
import { refuseRequest } from "../src/routing/request-guard.ts";

describe("refused before routing", () => {
  test("methods the gateway never routes are 405 with the methods it does", () => {
    for (const method of ["TRACE", "CONNECT", "PROPFIND", "MKCOL", "PURGE"]) {
      expect(refuseRequest(method, "portico.test")).toMatchObject({
        status: 405,
        headers: { allow: "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS" },
      });
    }
    for (const method of ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
      expect(refuseRequest(method, "portico.test")).toBeUndefined();
  });

  test("a Host that is not one host[:port] is 400; names, IPs, IPv6 and an empty Host pass", () => {
    for (const host of [
      "a, b",
      "a,b",
      "evil.test;x",
      "evil.test/x",
      "user@evil.test",
      "evil test",
      "evil.test:123456",
      "a\\b",
    ])
      expect(refuseRequest("GET", host)?.status).toBe(400);
    for (const host of ["portico.test", "portico.test:8080", "10.0.0.1:80", "[::1]:8080", "", "xn--caf-dma.test"])
      expect(refuseRequest("GET", host)).toBeUndefined();
    expect(refuseRequest("GET", null)).toBeUndefined();
  });

  test("a fragment in the path is 400 (fetch would drop it, so the path sent would differ)", () => {
    expect(normalizePath("/projects/#/../admin")).toMatchObject({ ok: false, status: 400 });
    expect(normalizePath("/projects/1")).toEqual({ ok: true, path: "/projects/1" });
  });
});

describe("transcoding numbers", () => {
  const type = protobuf
    .parse('syntax = "proto3"; package t; message M { double d = 1; float f = 2; }', { keepCase: true })
    .root.lookupType("t.M");

  test("a JSON number too large for its type is refused, not sent as Infinity", () => {
    expect(checkMessage(type, JSON.parse('{"d": 1e999}')).map((e) => e.field)).toEqual(["d"]);
    expect(checkMessage(type, { f: 1e39 }).map((e) => e.field)).toEqual(["f"]);
    expect(checkMessage(type, { d: "Infinity", f: 3.4e38 })).toEqual([]);
  });

  test("an unknown key is echoed at most 128 characters long", () => {
    const [error] = checkMessage(type, { ["k".repeat(100_000)]: 1 });
    expect(error!.field.length).toBeLessThanOrEqual(129);
  });
});

describe("framing the parser lets through", () => {
  test('repeated identical Content-Length values (joined as "5, 5") read as one length', async () => {
    const req = new Request("http://x/", { method: "POST", body: "hello", headers: { "content-length": "5, 5" } });
    const read = await readBody(req, 100);
    expect(read.ok && new TextDecoder().decode(read.bytes!)).toBe("hello");
  });
});

describe("the response cap", () => {
  test("a declared length over the cap is refused before any byte is sent", () => {
    const result = limitResponseSize(
      new Response(new Uint8Array(2048), { headers: { "content-length": "2048" } }),
      1024,
    );
    expect(result).toEqual({ ok: false, declared: 2048 });
  });

  test("an answer without a body (HEAD, 304) passes whatever length it declares", () => {
    const head = new Response(null, { headers: { "content-length": String(2 ** 30) } });
    expect(limitResponseSize(head, 1024)).toEqual({ ok: true, response: head });
  });

  test("a declared length within the cap passes untouched (no re-wrapping)", () => {
    const response = new Response(new Uint8Array(100), { headers: { "content-length": "100" } });
    const result = limitResponseSize(response, 1024);
    expect(result.ok && result.response).toBe(response);
  });

  test("a streamed body is counted and cut past the cap", async () => {
    const stream = (chunks: number) =>
      new Response(
        new ReadableStream({
          start(c) {
            for (let i = 0; i < chunks; i++) c.enqueue(new Uint8Array(512));
            c.close();
          },
        }),
      );
    const fits = limitResponseSize(stream(2), 1024);
    expect(fits.ok && (await fits.response.arrayBuffer()).byteLength).toBe(1024);
    const over = limitResponseSize(stream(3), 1024);
    expect(over.ok).toBe(true);
    if (over.ok) await expect(over.response.arrayBuffer()).rejects.toThrow("exceeds 1024 bytes");
  });
});

describe("the idle timeout and slow routes", () => {
  const calls: [Request, number][] = [];
  const server = {
    timeout: (req: Request, seconds: number) => calls.push([req, seconds]),
  } as unknown as Server<unknown>;
  const req = new Request("http://x/");

  test("only a route slower than the idle timeout extends its request's deadline", () => {
    calls.length = 0;
    extendDeadline(server, req, 5_000, 10);
    expect(calls).toEqual([]);
    extendDeadline(server, req, 10_000, 10);
    expect(calls).toEqual([[req, 12]]);
    extendDeadline(server, req, 600_000, 10);
    expect(calls.at(-1)).toEqual([req, 0]); // past Bun's 255 s: the route timeout alone bounds it
  });
});

describe("the limits section of routes.yaml", () => {
  const base =
    'upstreams: { up: { protocol: http, endpoints: "127.0.0.1:1" } }\nroutes: [{ name: r, path: /r, upstream: up }]\n';

  test("every limit has a default: the schema's, its one source", () => {
    const defaults = Value.Default(LimitsSchema, {}) as Required<Static<typeof LimitsSchema>>;
    // A limit added to the schema without a default would be missing here.
    expect(Object.keys(defaults).sort()).toEqual(Object.keys(LimitsSchema.properties).sort());
    expect(parseConfig(base, "t.yaml").limits).toEqual(defaults);
    // Two that docs/config-reference.md and docs/security.md state.
    expect(defaults).toMatchObject({ maxBodyBytes: 1024 * 1024, maxJsonDepth: 32 });
  });

  test("a value out of range is named with its line", () => {
    try {
      parseConfig(`${base}limits:\n  idleTimeoutSec: 600\n`, "t.yaml");
      throw new Error("expected a ConfigError");
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).problems[0]).toMatchObject({ line: 4, field: "limits.idleTimeoutSec" });
    }
  });
});
