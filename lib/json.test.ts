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
    const body = enc.encode("[".repeat(1_000_000));
    const started = performance.now();
    expect(exceedsJsonDepth(body, 32)).toBe(true);
    expect(performance.now() - started).toBeLessThan(5);
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
