import { describe, expect, test } from "bun:test";
import protobuf from "protobufjs";
import { parseProtos } from "../../lib/proto.ts";
import { resolveMethod } from "../src/grpc/method.ts";
import { checkMessage } from "../src/grpc/transcode.ts";

const verify = resolveMethod(parseProtos(["proto/userverify.proto"]), "userverify.UserVerify/VerifyUser");
const rich = protobuf
  .parse(
    `
  syntax = "proto3";
  package t;
  enum Color { RED = 0; GREEN = 1; }
  message Inner { string name = 1; Inner child = 2; }
  message Rich {
    int64 big = 1; uint32 small = 2; bool flag = 3; bytes blob = 4; double ratio = 5;
    Color color = 6; repeated string tags = 7; map<string, int32> counts = 8; Inner inner = 9;
    oneof choice { string a = 10; string b = 11; }
  }`,
    { keepCase: true },
  )
  .root.lookupType("t.Rich");

const fields = (type: protobuf.Type, value: unknown) => checkMessage(type, value).map((e) => e.field);

describe("JSON → protobuf checking", () => {
  test("the seed request fits and round-trips unchanged", () => {
    const input = { id: 121, token: "a$$" };
    expect(checkMessage(verify.requestType, input)).toEqual([]);
    expect(verify.requestType.toObject(verify.requestType.decode(verify.encode(input)))).toEqual(input);
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
