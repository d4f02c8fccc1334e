/**
 * The admin listener's request guard (lib/request-guard.ts) on its own: which Hosts, Origins
 * and Content-Types pass. The real processes and a real browser: admin-csrf.e2e.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { contentTypeProblem, isLocalHost, originProblem } from "../../lib/request-guard.ts";

const req = (headers: Record<string, string>, init: RequestInit = {}, url = "http://127.0.0.1:9901/config") =>
  new Request(url, { ...init, headers });

describe("Host, without ADMIN_TOKEN", () => {
  test("localhost and any IP address pass, with or without a port, in any case", () => {
    for (const host of [
      "localhost",
      "LocalHost:9901",
      "127.0.0.1:9901",
      "127.9.9.9",
      "[::1]:9901",
      "[::1]",
      "0.0.0.0:9901",
      "10.244.0.17:9901",
    ])
      expect([host, isLocalHost(host)]).toEqual([host, true]);
  });

  test("any other name fails, unless it is the name the listener is bound to (ADMIN_HOST)", () => {
    for (const host of [
      "attacker.example",
      "localhost.attacker.example:9901",
      "127.0.0.1.nip.io:9901",
      "gw1.internal:9901",
      "localhost.",
    ])
      expect([host, isLocalHost(host)]).toEqual([host, false]);
    expect(isLocalHost("GW1.internal:9901", "gw1.internal")).toBe(true);
    expect(isLocalHost("attacker.example", "gw1.internal")).toBe(false);
  });

  test("what is not a bare host[:port] fails", () => {
    for (const host of ["", "user@127.0.0.1", "127.0.0.1/x", "127.0.0.1?x", "127.0.0.1:notaport", "[::1"])
      expect([host, isLocalHost(host)]).toEqual([host, false]);
  });

  test("a foreign Host is 403 saying why; with the token it is not checked; a request built in-process has none", async () => {
    const res = originProblem(req({ host: "rebind.example:9901" }), { authenticated: false })!;
    expect(res.status).toBe(403);
    expect(((await res.json()) as { detail: string }).detail).toContain("DNS rebinding");
    expect(originProblem(req({ host: "rebind.example:9901" }), { authenticated: true })).toBeUndefined();
    expect(originProblem(new Request("http://admin/dashboard"), { authenticated: false })).toBeUndefined();
  });
});

describe("Origin", () => {
  const guard = { authenticated: false };
  test("the listener's own origin (http or https, the Host the request was sent to) passes", () => {
    expect(originProblem(req({ host: "127.0.0.1:9901", origin: "http://127.0.0.1:9901" }), guard)).toBeUndefined();
    expect(originProblem(req({ host: "localhost:19901", origin: "http://localhost:19901" }), guard)).toBeUndefined();
    expect(originProblem(req({ host: "127.0.0.1", origin: "https://127.0.0.1" }), guard)).toBeUndefined();
    expect(originProblem(req({ host: "127.0.0.1:9901" }), guard)).toBeUndefined();
  });

  test("another port, another name, null or another scheme is 403", () => {
    for (const origin of [
      "http://127.0.0.1:9902",
      "http://localhost:9901",
      "http://evil.example",
      "null",
      "file://",
      "chrome-extension://abc",
    ])
      expect([origin, originProblem(req({ host: "127.0.0.1:9901", origin }), guard)?.status]).toEqual([origin, 403]);
    // With the token too.
    expect(
      originProblem(req({ host: "127.0.0.1:9901", origin: "http://evil.example" }), { authenticated: true })?.status,
    ).toBe(403);
  });
});

describe("Content-Type", () => {
  const post = (type?: string, url?: string) =>
    req(type ? { "content-type": type } : {}, { method: "POST", body: "{}" }, url);

  test("reads pass; state-changing methods need application/json", () => {
    expect(contentTypeProblem(req({}))).toBeUndefined();
    expect(contentTypeProblem(req({}, { method: "HEAD" }))).toBeUndefined();
    expect(contentTypeProblem(post("application/json"))).toBeUndefined();
    expect(contentTypeProblem(post("application/json;charset=UTF-8"))).toBeUndefined();
    for (const type of [
      undefined,
      "text/plain",
      "application/x-www-form-urlencoded",
      "multipart/form-data; boundary=x",
      "application/jsonx",
      "text/json",
    ])
      expect([type, contentTypeProblem(post(type))?.status]).toEqual([type, 415]);
    for (const method of ["PUT", "PATCH", "DELETE"])
      expect([method, contentTypeProblem(req({ "content-type": "text/plain" }, { method }))?.status]).toEqual([
        method,
        415,
      ]);
  });

  test("the sign-in form's path takes a form when it is named", () => {
    const login = "http://127.0.0.1:9901/dashboard/login";
    expect(contentTypeProblem(post("application/x-www-form-urlencoded", login), "/dashboard/login")).toBeUndefined();
    expect(contentTypeProblem(post("application/x-www-form-urlencoded", login))?.status).toBe(415);
  });
});
