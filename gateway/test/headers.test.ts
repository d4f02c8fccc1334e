import { describe, expect, test } from "bun:test";
import { requestIdOf as requestIdFrom } from "../../lib/request-id.ts";
import { type ForwardedInfo, forwardedHeaders, stripHopByHop } from "../src/proxy/headers.ts";

/**
 * The headers an upstream gets: `h` as forwardedHeaders leaves it, then its lines. Each line's
 * name must be gone from `h` first, or the upstream would get the client's copy too.
 */
function setForwardedHeaders(h: Headers, info: ForwardedInfo): void {
  const lines = forwardedHeaders(h, info);
  for (const [name] of lines) expect(h.has(name)).toBe(false);
  for (const [name, value] of lines) h.append(name, value);
}
import { TrustedProxies } from "../src/net/client-ip.ts";
import { status as GrpcStatus } from "@grpc/grpc-js";
import { grpcCodeName, httpStatusFromGrpc } from "../src/grpc/status.ts";
import { parseGrpcStatus } from "../src/grpc/wire.ts";

describe("hop-by-hop headers", () => {
  test("are removed, with any header the Connection header names", () => {
    const h = new Headers({
      connection: "keep-alive, x-secret-hop",
      "keep-alive": "timeout=5",
      "x-secret-hop": "1",
      te: "trailers",
      upgrade: "h2c",
      "transfer-encoding": "chunked",
      "proxy-authorization": "Basic x",
      "x-kept": "yes",
    });
    stripHopByHop(h);
    expect([...h].map(([k]) => k)).toEqual(["x-kept"]);
  });

  test("a Connection token that is no header name names nothing", () => {
    const h = new Headers({ connection: "close, foo bar, (x), , x-hop", "x-hop": "1", "x-kept": "yes" });
    stripHopByHop(h);
    expect([...h].map(([k]) => k)).toEqual(["x-kept"]);
  });
});

describe("X-Forwarded-*", () => {
  test("from an untrusted client are replaced, never extended", () => {
    const h = new Headers({
      host: "api.example",
      "x-forwarded-for": "1.2.3.4",
      "x-forwarded-proto": "https",
      "x-forwarded-host": "evil",
    });
    setForwardedHeaders(h, { clientIp: "10.0.0.7", peerIsTrusted: false, proto: "http" });
    expect(h.get("x-forwarded-for")).toBe("10.0.0.7");
    expect(h.get("x-forwarded-proto")).toBe("http");
    expect(h.get("x-forwarded-host")).toBe("api.example");
  });

  test("X-Real-IP is the client address the gateway resolved; an untrusted client's Forwarded is dropped", () => {
    const h = new Headers({ "x-real-ip": "1.2.3.4", forwarded: "for=1.2.3.4;proto=https" });
    setForwardedHeaders(h, { clientIp: "10.0.0.7", peerIsTrusted: false, proto: "http" });
    expect([h.get("x-real-ip"), h.get("forwarded")]).toEqual(["10.0.0.7", null]);
    const behind = new Headers({ "x-real-ip": "1.2.3.4", forwarded: "for=203.0.113.7" });
    setForwardedHeaders(behind, { clientIp: "203.0.113.7", peer: "10.9.9.9", peerIsTrusted: true, proto: "http" });
    expect([behind.get("x-real-ip"), behind.get("forwarded")]).toEqual(["203.0.113.7", "for=203.0.113.7"]);
  });

  test("from a trusted proxy are extended", () => {
    const h = new Headers({ host: "api.example", "x-forwarded-for": "1.2.3.4", "x-forwarded-proto": "https" });
    setForwardedHeaders(h, { clientIp: "10.0.0.7", peerIsTrusted: true, proto: "http" });
    expect(h.get("x-forwarded-for")).toBe("1.2.3.4, 10.0.0.7");
    expect(h.get("x-forwarded-proto")).toBe("https");
  });

  test("from a trusted proxy are extended with the direct peer's address (the proxy), not the client's again", () => {
    const h = new Headers({ host: "api.example", "x-forwarded-for": "10.0.0.1, 203.0.113.7" });
    setForwardedHeaders(h, { clientIp: "203.0.113.7", peer: "10.9.9.9", peerIsTrusted: true, proto: "http" });
    expect(h.get("x-forwarded-for")).toBe("10.0.0.1, 203.0.113.7, 10.9.9.9");
    const resolved = new TrustedProxies(["10.0.0.0/8"]).resolve("::ffff:10.9.9.9", "10.0.0.1, 203.0.113.7");
    expect(resolved).toEqual({ clientIp: "203.0.113.7", peer: "10.9.9.9", peerIsTrusted: true });
    // Without trusted proxies the peer is the client; an IPv4-mapped peer is unmapped without parsing.
    expect(new TrustedProxies([]).resolve("::ffff:192.0.2.1", "1.1.1.1")).toEqual({
      clientIp: "192.0.2.1",
      peer: "192.0.2.1",
      peerIsTrusted: false,
    });
    expect(new TrustedProxies([]).resolve("2001:db8::1", null).peer).toBe("2001:db8::1");
  });

  test("the client address is the right-most untrusted hop behind trusted proxies", () => {
    const trusted = new TrustedProxies(["10.0.0.0/8"]);
    expect(trusted.clientIp("::ffff:10.1.2.3", "203.0.113.9, 198.51.100.1, 10.0.0.5")).toEqual({
      clientIp: "198.51.100.1",
      peerIsTrusted: true,
    });
    expect(trusted.clientIp("203.0.113.50", "1.1.1.1")).toEqual({ clientIp: "203.0.113.50", peerIsTrusted: false });
    // Some proxies write the hop with its port, IPv6 in brackets.
    expect(trusted.clientIp("10.1.2.3", "6.6.6.6, 203.0.113.9:5678, 10.0.0.5:80").clientIp).toBe("203.0.113.9");
    expect(trusted.clientIp("10.1.2.3", "6.6.6.6, [2001:db8::1]:443, 10.0.0.5").clientIp).toBe("2001:db8::1");
    expect(trusted.clientIp("10.1.2.3", "6.6.6.6, [2001:db8::2]").clientIp).toBe("2001:db8::2");
    // A hop that is no address ends the walk at the last trusted hop: never the left-most,
    // which the client wrote.
    expect(trusted.clientIp("10.1.2.3", "6.6.6.6, unknown, 10.0.0.5").clientIp).toBe("10.0.0.5");
    expect(trusted.clientIp("10.1.2.3", "6.6.6.6, unknown").clientIp).toBe("10.1.2.3");
    expect(trusted.clientIp("10.1.2.3", "10.0.0.4, 10.0.0.5").clientIp).toBe("10.0.0.4");
    expect(new TrustedProxies([]).clientIp("::ffff:127.0.0.1", "1.1.1.1")).toEqual({
      clientIp: "127.0.0.1",
      peerIsTrusted: false,
    });
  });
});

describe("request ids", () => {
  test("a sane client id is kept; a hostile one is replaced by a UUID", () => {
    expect(requestIdFrom(new Headers({ "x-request-id": "abc-123" }))).toBe("abc-123");
    expect(requestIdFrom(new Headers({ "x-request-id": "a b<script>" }))).toMatch(/^[0-9a-f-]{36}$/);
    expect(requestIdFrom(new Headers({ "x-request-id": "x".repeat(200) }))).toMatch(/^[0-9a-f-]{36}$/);
    expect(requestIdFrom(new Headers())).toMatch(/^[0-9a-f-]{36}$/);
  });
});

describe("gRPC status mapping (as grpc-gateway)", () => {
  test("maps every code", () => {
    // The HTTP column is the point: grpc-gateway's runtime.HTTPStatusFromCode, stated here as the
    // spec. The codes and their names come from @grpc/grpc-js, so none is restated or forgotten.
    const grpcGatewayHttp: Record<keyof typeof GrpcStatus, number> = {
      OK: 200,
      CANCELLED: 499,
      UNKNOWN: 500,
      INVALID_ARGUMENT: 400,
      DEADLINE_EXCEEDED: 504,
      NOT_FOUND: 404,
      ALREADY_EXISTS: 409,
      PERMISSION_DENIED: 403,
      RESOURCE_EXHAUSTED: 429,
      FAILED_PRECONDITION: 400,
      ABORTED: 409,
      OUT_OF_RANGE: 400,
      UNIMPLEMENTED: 501,
      INTERNAL: 500,
      UNAVAILABLE: 503,
      DATA_LOSS: 500,
      UNAUTHENTICATED: 401,
    };
    const codes = Object.values(GrpcStatus).filter((v): v is number => typeof v === "number");
    expect(codes).toHaveLength(17);
    for (const code of codes) {
      const name = GrpcStatus[code] as keyof typeof GrpcStatus;
      expect([code, httpStatusFromGrpc(code), grpcCodeName(code)]).toEqual([code, grpcGatewayHttp[name], name]);
    }
    expect(httpStatusFromGrpc(99)).toBe(500);
  });
});

describe("grpc-status as an upstream sends it", () => {
  test("only a decimal code 0–16 is a status; anything else Number() would read is UNKNOWN", () => {
    expect([parseGrpcStatus("0"), parseGrpcStatus("5"), parseGrpcStatus("16"), parseGrpcStatus(["3"])]).toEqual([
      0, 5, 16, 3,
    ]);
    for (const lax of ["0x0", " 0", "0 ", "1e1", "+1", "-0", "5.0", "", "17", "0b1"])
      expect([lax, parseGrpcStatus(lax)]).toEqual([lax, GrpcStatus.UNKNOWN]);
    expect(parseGrpcStatus(undefined)).toBeUndefined();
  });
});
