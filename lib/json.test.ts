import { describe, expect, test } from "bun:test";
import { exceedsJsonDepth, isJsonMediaType } from "./json.ts";

const enc = new TextEncoder();

describe("exceedsJsonDepth", () => {
  test("the limit is exact, and brackets inside strings (even after escaped quotes) do not count", () => {
    const nested = (n: number) => "[".repeat(n) + "]".repeat(n);
    expect(exceedsJsonDepth(enc.encode(nested(32)), 32)).toBe(false);
    expect(exceedsJsonDepth(enc.encode(nested(33)), 32)).toBe(true);
    expect(exceedsJsonDepth(enc.encode(`{"a": "${"[".repeat(100)}", "b": "\\"[[[[", "c": [{}]}`), 3)).toBe(false);
    expect(exceedsJsonDepth(enc.encode('{"a": {"b": {"c": {}}}}'), 3)).toBe(true);
  });

  test("a hostile body is rejected after a few bytes, whatever its size", () => {
    // The cost is the bytes the scan reads: count them rather than time them.
    const bytes = enc.encode("[".repeat(1_000_000));
    let read = 0;
    const body = new Proxy(bytes, {
      get(target, key) {
        if (typeof key === "string" && /^\d+$/.test(key)) read++;
        const value = Reflect.get(target, key);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    expect(exceedsJsonDepth(body, 32)).toBe(true);
    expect(read).toBe(33); // the first bracket past the limit, and not one byte more
  });
});

test("isJsonMediaType accepts application/json and +json types, parameters and case ignored", () => {
  for (const type of [
    "application/json",
    "application/json; charset=utf-8",
    "application/problem+json",
    "APPLICATION/JSON",
    " application/json ",
  ])
    expect(isJsonMediaType(type)).toBe(true);
  for (const type of [
    null,
    "",
    "text/plain",
    "application/octet-stream",
    "application/jsonx",
    "text/json",
    "application/+json",
  ])
    expect(isJsonMediaType(type)).toBe(false);
});
