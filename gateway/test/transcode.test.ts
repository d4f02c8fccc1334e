import { describe, expect, test } from "bun:test";
import protobuf from "protobufjs";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseProtos, ProtoLoadError } from "../../lib/proto.ts";
import type { RoutedRequest } from "../src/context.ts";
import { resolveMethod } from "../src/grpc/method.ts";
import { transcodeGrpc } from "../src/grpc/route.ts";
import { statusDetails } from "../src/grpc/status-details.ts";
import { checkMessage, MAX_FIELD_ERRORS } from "../src/grpc/transcode.ts";
import { frameMessage } from "../src/grpc/wire.ts";

const verify = resolveMethod(parseProtos(["proto/userverify.proto"]), "userverify.UserVerify/VerifyUser");
const richRoot = protobuf.parse(
  `
  syntax = "proto3";
  package t;
  enum Color { RED = 0; GREEN = 1; }
  message Inner { string name = 1; Inner child = 2; }
  message Rich {
    int64 big = 1; uint32 small = 2; bool flag = 3; bytes blob = 4; double ratio = 5;
    Color color = 6; repeated string tags = 7; map<string, int32> counts = 8; Inner inner = 9;
    oneof choice { string a = 10; string b = 11; }
  }
  message Named { string first_name = 1; string nick = 2 [json_name = "alias"]; Inner inner_msg = 3; Color color = 4; }
  message Edge {
    bytes blob = 1; float f = 2;
    map<int32, string> m32 = 3; map<sint32, string> ms32 = 4; map<sfixed32, string> msf32 = 5;
    map<uint32, string> mu32 = 6; map<fixed32, string> mf32 = 7; map<int64, string> m64 = 8;
    map<sint64, string> ms64 = 9; map<sfixed64, string> msf64 = 10; map<uint64, string> mu64 = 11;
    map<fixed64, string> mf64 = 12; map<bool, string> mb = 13; map<string, string> ms = 14;
    repeated int32 nums = 15;
  }`,
  { keepCase: true },
).root;
const rich = richRoot.lookupType("t.Rich");
const edge = richRoot.lookupType("t.Edge");
const named = richRoot.lookupType("t.Named");

const fields = (type: protobuf.Type, value: unknown) => checkMessage(type, value).map((e) => e.field);

describe("JSON → protobuf checking", () => {
  test("the seed request fits and round-trips unchanged", () => {
    const input = { id: 121, token: "a$$" };
    expect(checkMessage(verify.requestType, input)).toEqual([]);
    expect(verify.requestType.toObject(verify.requestType.decode(verify.encode(input)))).toEqual(input);
  });

  test("encodeFramed is the framed encode, message after message on its shared writer", () => {
    const inputs = [
      { id: 121, token: "a$$" },
      { id: -5, token: "x".repeat(70_000) }, // past the writer's initial buffer and what it keeps
      { id: 7, token: "" },
      {},
      { id: 2147483647, token: "ünï" },
    ];
    for (const input of inputs) expect(verify.encodeFramed(input)).toEqual(frameMessage(verify.encode(input)));
    const reply = verify.responseType.encode({ message: "hello" }).finish();
    expect(verify.decode(reply)).toEqual({ message: "hello" });
    expect(verify.decode(new Uint8Array(reply))).toEqual({ message: "hello" });
    expect(() => verify.decode(Buffer.from([0x0a, 0x05, 0x68]))).toThrow();
    expect(verify.decode(Buffer.from([]))).toEqual({ message: "" });
  });

  test("wrong types, unknown fields and prototype keys are named, never coerced or dropped", () => {
    const errors = checkMessage(
      verify.requestType,
      JSON.parse('{"id":"12abc","token":5,"extra":1,"__proto__":{"x":1},"constructor":1}'),
    );
    expect(errors.map((e) => e.field)).toEqual(["id", "token", "extra", "__proto__", "constructor"]);
    expect(errors[0]!.message).toContain("must be an integer");
  });

  test("int32 overflow and fractions are rejected; numeric strings in range are accepted", () => {
    expect(fields(verify.requestType, { id: 2 ** 31 })).toEqual(["id"]);
    expect(fields(verify.requestType, { id: -(2 ** 31) - 1 })).toEqual(["id"]);
    expect(fields(verify.requestType, { id: 1.5 })).toEqual(["id"]);
    expect(fields(verify.requestType, { id: "121" })).toEqual([]);
  });

  test("a body that is not an object is rejected", () => {
    for (const body of [[], "x", 5, true]) expect(fields(verify.requestType, body)).toEqual(["(body)"]);
  });

  test("lone surrogates (invalid Unicode) in strings are rejected", () => {
    expect(fields(verify.requestType, { token: "a\uD800b" })).toEqual(["token"]);
  });

  test("every scalar kind, enums, repeated, maps, nested messages and oneofs are checked", () => {
    expect(
      checkMessage(rich, {
        big: "9223372036854775807",
        small: 4294967295,
        flag: true,
        blob: "aGk=",
        ratio: 0.5,
        color: "GREEN",
        tags: ["a"],
        counts: { x: 1 },
        inner: { name: "n", child: { name: "m" } },
        a: "x",
      }),
    ).toEqual([]);
    expect(
      fields(rich, {
        big: "9223372036854775808",
        small: -1,
        flag: "yes",
        blob: "!!",
        ratio: "x",
        color: "BLUE",
        tags: [1],
        counts: { x: "y" },
        inner: { nope: 1 },
        a: "x",
        b: "y",
      }),
    ).toEqual(["big", "small", "flag", "blob", "ratio", "color", "tags[0]", "counts.x", "inner.nope", "b"]);
    expect(fields(rich, { big: 2 ** 60 })).toEqual(["big"]);
  });

  test("a field's JSON name is taken as well as its .proto name, and renamed to it for encoding", () => {
    const body = { firstName: "Ada", alias: "ada", innerMsg: { name: "n" } };
    expect(checkMessage(named, body)).toEqual([]);
    expect(body).toEqual({ first_name: "Ada", nick: "ada", inner_msg: { name: "n" } } as never);
    const decoded = named.toObject(named.decode(named.encode(named.fromObject(body)).finish()));
    expect(decoded).toEqual({ first_name: "Ada", nick: "ada", inner_msg: { name: "n" } });
    // The .proto names as before; both spellings of one field at once is that field given twice.
    expect(checkMessage(named, { first_name: "Ada", nick: "x" })).toEqual([]);
    expect(checkMessage(named, { first_name: "Ada", firstName: "Bob" })).toEqual([
      { field: "firstName", message: "the same field as first_name, given twice" },
    ]);
    // `nick`'s JSON name is its json_name, not the lowerCamelCase of a name it does not have.
    expect(fields(named, { Nick: "x" })).toEqual(["Nick"]);
  });

  test("proto3 enums are open: a number the .proto does not name passes, a name it does not declare does not", () => {
    const body = { color: 7 };
    expect(checkMessage(named, body)).toEqual([]);
    expect(named.toObject(named.decode(named.encode(named.fromObject(body)).finish()))).toEqual({ color: 7 });
    expect(fields(named, { color: "BLUE" })).toEqual(["color"]);
    expect(fields(named, { color: 2 ** 31 })).toEqual(["color"]);
    expect(fields(named, { color: 1.5 })).toEqual(["color"]);
  });

  test("nesting deeper than the limit is rejected", () => {
    let inner: Record<string, unknown> = { name: "leaf" };
    for (let i = 0; i < 40; i++) inner = { child: inner };
    expect(checkMessage(rich, { inner }, { maxDepth: 32, maxStringLength: 100 })[0]!.message).toContain(
      "deeper than 32",
    );
  });

  test("null means the default value", () => {
    expect(checkMessage(verify.requestType, { id: null, token: null })).toEqual([]);
  });
});

/** Check, then encode and decode as the upstream would: what the upstream receives. */
function upstreamSees(type: protobuf.Type, value: object): Record<string, unknown> {
  return type.toObject(type.decode(type.encode(type.fromObject(value)).finish()), {
    longs: String,
    bytes: Array,
    defaults: true,
  });
}

describe("bytes: exactly proto3 JSON's base64 (protojson's rules)", () => {
  /** protojson: URL alphabet if the string has - or _, else the standard one; padded iff the length is a multiple of 4. */
  function protojsonAccepts(s: string): boolean {
    const url = /[-_]/.test(s);
    if (url ? /[^A-Za-z0-9\-_=]/.test(s) : /[^A-Za-z0-9+/=]/.test(s)) return false;
    if (s.length % 4 !== 0) return !s.includes("=") && s.length % 4 !== 1;
    const body = s.replace(/={1,2}$/, "");
    return !body.includes("=") && body.length % 4 !== 1;
  }
  const decoded = (s: string) => [...Buffer.from(s.replace(/-/g, "+").replace(/_/g, "/"), "base64")];

  test("padded, unpadded, standard and URL-safe forms are accepted and reach the upstream intact", () => {
    for (const [s, want] of [
      ["", []],
      ["aGk=", [104, 105]],
      ["aGk", [104, 105]],
      ["aQ==", [105]],
      ["aQ", [105]],
      ["-_-_", [251, 255, 191]],
      ["+/+/", [251, 255, 191]],
      ["YWJjZA==", [97, 98, 99, 100]],
    ] as const) {
      expect({ s, errors: checkMessage(edge, { blob: s }) }).toEqual({ s, errors: [] });
      expect(upstreamSees(edge, { blob: s }).blob).toEqual([...want]);
    }
  });

  test("strings protobufjs would throw on (a 500) or misread are a 400 naming the field", () => {
    for (const s of [
      "=",
      "a",
      "a=",
      "==",
      "abcde",
      "a==",
      "ab=",
      "abc==",
      "aG=k",
      "a===",
      "ab==cd",
      "====",
      "a+_b",
      "ab c",
      "aGk=\n",
      5,
    ]) {
      expect({ s, fields: fields(edge, { blob: s }) }).toEqual({ s, fields: ["blob"] });
    }
  });

  test("every short string over a base64-ish alphabet: accepted iff protojson accepts it, and then encodes", () => {
    const alphabet = ["a", "Z", "0", "+", "/", "-", "_", "="];
    let strings = [""];
    for (let len = 1; len <= 5; len++) {
      strings = strings.flatMap((s) => (s.length === len - 1 ? [s, ...alphabet.map((c) => s + c)] : [s]));
    }
    let accepted = 0;
    for (const s of strings) {
      const ok = checkMessage(edge, { blob: s }).length === 0;
      expect({ s, ok }).toEqual({ s, ok: protojsonAccepts(s) });
      if (ok) {
        accepted++;
        expect({ s, bytes: upstreamSees(edge, { blob: s }).blob }).toEqual({ s, bytes: decoded(s) });
      }
    }
    expect(accepted).toBeGreaterThan(1000);
  });
});

describe("float range is judged on the 32-bit value", () => {
  test("FLT_MAX as JSON usually spells it is accepted; what rounds to Infinity is not", () => {
    for (const f of [3.4028235e38, -3.4028235e38, 3.40282356e38, 1e-50]) {
      expect({ f, errors: checkMessage(edge, { f }) }).toEqual({ f, errors: [] });
    }
    expect(upstreamSees(edge, { f: 3.4028235e38 }).f).toBe(Math.fround(3.4028235e38));
    for (const f of [3.4028236e38, -3.4028236e38, 1e39, Number.MAX_VALUE]) {
      expect({ f, fields: fields(edge, { f }) }).toEqual({ f, fields: ["f"] });
    }
  });
});

describe("map keys: protojson's spellings, and no two keys for one entry", () => {
  test("keys that parse to the same value are a duplicate map key, not a silent merge", () => {
    const errors = checkMessage(edge, JSON.parse('{"m32":{"1":"a","01":"b","0":"d","-0":"c"}}'));
    expect(errors.map((e) => e.field).sort()).toEqual(["m32.-0", "m32.01"]);
    for (const e of errors) expect(e.message).toContain("duplicate map key");
    expect(fields(edge, { m64: { "9223372036854775807": "a", "+9223372036854775807": "b" } })).toEqual([
      "m64.+9223372036854775807",
    ]);
    expect(fields(edge, { mu64: { "7": "a", "0007": "b" } })).toEqual(["mu64.0007"]);
    expect(fields(edge, { ms32: { "-5": "a", "-005": "b", "5": "c" } })).toEqual(["ms32.-005"]);
  });

  test("signed keys take ParseInt's form (sign, leading zeros), unsigned ParseUint's (digits only)", () => {
    const signed = ["m32", "ms32", "msf32", "m64", "ms64", "msf64"];
    const unsigned = ["mu32", "mf32", "mu64", "mf64"];
    for (const f of signed) {
      for (const k of ["+1", "01", "-0", "-01", "00000000000000000000000000042"]) {
        expect({ f, k, errors: checkMessage(edge, { [f]: { [k]: "v" } }) }).toEqual({ f, k, errors: [] });
      }
      for (const k of ["", "1 ", " 1", "1e2", "0x1", "1.0", "+-1", "--1", "1_000", "٣", "+"]) {
        expect({ f, k, fields: fields(edge, { [f]: { [k]: "v" } }) }).toEqual({ f, k, fields: [`${f}.${k}`] });
      }
    }
    for (const f of unsigned) {
      expect(checkMessage(edge, { [f]: { "01": "v" } })).toEqual([]);
      for (const k of ["+1", "-0", "-1", "", "1e2"]) {
        expect({ f, k, fields: fields(edge, { [f]: { [k]: "v" } }) }).toEqual({ f, k, fields: [`${f}.${k}`] });
      }
    }
    expect(fields(edge, { mb: { True: "v", "1": "w", true: "x" } })).toEqual(["mb.1", "mb.True"]);
  });

  test("range limits hold after the sign and leading zeros", () => {
    expect(fields(edge, { m32: { "+2147483648": "v", "-0002147483649": "w", "-2147483648": "x" } })).toEqual([
      "m32.+2147483648",
      "m32.-0002147483649",
    ]);
    expect(fields(edge, { mu64: { "018446744073709551616": "v", "018446744073709551615": "w" } })).toEqual([
      "mu64.018446744073709551616",
    ]);
  });

  test("every accepted spelling reaches the upstream as the key it denotes", () => {
    const cases: [string, string, string][] = [
      ["m32", "+7", "7"],
      ["m32", "-0", "0"],
      ["m32", "-002147483648", "-2147483648"],
      ["ms32", "+2147483647", "2147483647"],
      ["ms32", "-0002", "-2"],
      ["msf32", "-0002147483648", "-2147483648"],
      ["mu32", "0004294967295", "4294967295"],
      ["mf32", "0004294967295", "4294967295"],
      ["m64", "+9223372036854775807", "9223372036854775807"],
      ["m64", "-00009223372036854775808", "-9223372036854775808"],
      ["ms64", "-09223372036854775808", "-9223372036854775808"],
      ["msf64", "+0000000000000000000001", "1"],
      ["mu64", "0000018446744073709551615", "18446744073709551615"],
      ["mf64", "018446744073709551615", "18446744073709551615"],
      ["mb", "false", "false"],
    ];
    for (const [f, k, want] of cases) {
      expect({ f, k, errors: checkMessage(edge, { [f]: { [k]: "v" } }) }).toEqual({ f, k, errors: [] });
      expect({ f, k, got: upstreamSees(edge, { [f]: { [k]: "v" } })[f] }).toEqual({ f, k, got: { [want]: "v" } });
    }
  });

  test("string keys are checked like string values (lone surrogates)", () => {
    expect(fields(edge, { ms: { "a\uD800": "v" } })).toEqual(["ms.a\uD800"]);
    expect(checkMessage(edge, { ms: { "01": "v", "1": "w" } })).toEqual([]);
  });
});

describe("the error list is bounded", () => {
  test(`at most ${MAX_FIELD_ERRORS} errors, then one entry saying there were more; the walk stops there`, () => {
    const body: Record<string, number> = {};
    for (let i = 0; i < 10_000; i++) body[`k${i}`] = 0;
    const errors = checkMessage(verify.requestType, body);
    expect(errors).toHaveLength(MAX_FIELD_ERRORS + 1);
    expect(errors.slice(0, MAX_FIELD_ERRORS).map((e) => e.field)).toEqual(
      Array.from({ length: MAX_FIELD_ERRORS }, (_, i) => `k${i}`),
    );
    expect(errors[MAX_FIELD_ERRORS]).toEqual({ field: "(body)", message: expect.stringContaining("more than") });
    // The known fields are named once, not in every entry.
    expect(errors.filter((e) => e.message.includes("known:"))).toHaveLength(1);

    let reads = 0;
    const nums = new Proxy(
      Array.from({ length: 100_000 }, () => "x"),
      {
        get(target, prop, receiver) {
          if (typeof prop === "string" && /^\d+$/.test(prop)) reads++;
          return Reflect.get(target, prop, receiver);
        },
      },
    );
    expect(checkMessage(edge, { nums })).toHaveLength(MAX_FIELD_ERRORS + 1);
    expect(reads).toBeLessThanOrEqual(MAX_FIELD_ERRORS + 1);
  });

  test("a client's value is echoed in a bounded prefix", () => {
    const [error] = checkMessage(verify.requestType, { id: "9".repeat(60_000) });
    expect(error!.message.length).toBeLessThan(200);
    const [mapKey] = checkMessage(edge, { m32: { ["1".repeat(60_000)]: "v" } });
    expect(mapKey!.field.length + mapKey!.message.length).toBeLessThan(400);
  });
});

describe("the gRPC route's 400s", () => {
  const limits = { maxJsonDepth: 32, maxJsonStringLength: 64 * 1024, maxResponseBytes: 1 << 20 };
  const call = (method: typeof verify, body: string) =>
    transcodeGrpc(
      {
        req: new Request("http://gateway.test/verify", { method: "POST" }),
        ctx: { id: "req-1", clientIp: "192.0.2.1" },
        route: { grpcMethod: method },
        upstream: {},
        body: new TextEncoder().encode(body),
        limits,
      } as unknown as RoutedRequest,
      { telemetry: {} } as never,
    );

  test("100,000 unknown keys: a short answer, a short detail", async () => {
    const keys = Array.from({ length: 100_000 }, (_, i) => `"${i.toString(16)}":0`);
    const res = await call(verify, `{${keys.join(",")}}`);
    const text = await res.text();
    expect(res.status).toBe(400);
    expect(text.length).toBeLessThan(8 * 1024);
    const problem = JSON.parse(text) as { detail: string; errors: unknown[] };
    expect(problem.errors).toHaveLength(MAX_FIELD_ERRORS + 1);
    expect(problem.detail.length).toBeLessThan(300);
    expect(problem.detail).toContain("more");
  });

  test("an encoder that still throws is the body's 400, not a 500", async () => {
    const throwing = {
      ...verify,
      encodeFramed: () => {
        throw new Error("invalid encoding");
      },
    };
    const res = await call(throwing, '{"id":1}');
    expect(res.status).toBe(400);
    const problem = (await res.json()) as { errors: { field: string; message: string }[] };
    expect(problem.errors).toEqual([{ field: "(body)", message: expect.stringContaining("invalid encoding") }]);
  });
});

test("a proto importing a well-known type is refused by name (protojson spells those types its own way)", () => {
  const dir = mkdtempSync(join(tmpdir(), "portico-wkt-"));
  try {
    writeFileSync(
      join(dir, "events.proto"),
      'syntax = "proto3";\npackage ev;\nimport "google/protobuf/timestamp.proto";\nmessage E { google.protobuf.Timestamp at = 1; }\n',
    );
    expect(() => parseProtos(["events.proto"], dir)).toThrow(ProtoLoadError);
    expect(() => parseProtos(["events.proto"], dir)).toThrow(
      /imports google\/protobuf\/timestamp\.proto: the well-known types \(google\.protobuf\.\*\) are not supported/,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

describe("grpc-status-details-bin", () => {
  test("a trailer that is not a Status gives no details, never an error; past 16 details the rest are left out", () => {
    const root = verify.responseType.root;
    expect(statusDetails("not base64 at all!", root)).toEqual([]);
    expect(statusDetails(Buffer.from([0xff, 0xff, 0xff]).toString("base64"), root)).toEqual([]);
    // 20 details of field 3, each an Any with only a type_url (field 1).
    const any = Buffer.from([0x0a, 0x01, 0x78]); // type_url "x"
    const many = Buffer.concat(Array.from({ length: 20 }, () => Buffer.concat([Buffer.from([0x1a, any.length]), any])));
    const details = statusDetails(many.toString("base64"), root);
    expect(details).toHaveLength(16);
    expect(details[0]).toEqual({ "@type": "x", value: "" });
  });
});
