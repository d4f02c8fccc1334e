/**
 * The whole local stack (3 gateways sharing one port, 3 webapps, 3 rpcapps) as real processes:
 * the seed requests, load spread across replicas, and every bad-input answer.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { spawnService, stopAll, waitFor, testTempDir } from "../../scripts/stack/testing/processes.ts";
import { startTestStack, type TestStack } from "../../scripts/stack/testing/stack.ts";

let stack: TestStack;
let gw: string;
const json = { "content-type": "application/json" };

beforeAll(async () => {
  stack = await startTestStack();
  gw = stack.gatewayUrl;
}, 60_000);
afterAll(async () => {
  await stack?.stop();
  await stopAll();
});

describe("seed compatibility through the gateway", () => {
  test("POST /projects/ creates a project: integer id and url Project-<title>", async () => {
    const res = await fetch(`${gw}/projects/`, {
      method: "POST",
      headers: json,
      body: '{"title":"An awesome project"}',
    });
    expect(res.status).toBe(201);
    const body = (await res.json()) as { id: unknown; url: string };
    expect(Number.isInteger(body.id)).toBe(true);
    expect(body.url).toBe("Project-An awesome project");
    expect(res.headers.get("x-request-id")).toBeTruthy();
    expect(res.headers.get("x-served-by")).toMatch(/^webapp-[123]$/);
    expect(res.headers.get("x-gateway")).toMatch(/^gateway-[123]$/);
    const read = await fetch(`${gw}/projects/${body.id}`);
    expect(read.status).toBe(200);
    expect(((await read.json()) as { url: string }).url).toBe("Project-An awesome project");
  });

  test('POST /verify/ answers {"message":"Verified: 121"} over gRPC', async () => {
    const res = await fetch(`${gw}/verify/`, { method: "POST", headers: json, body: '{"id": 121, "token": "a$$" }' });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe('{"message":"Verified: 121"}');
    expect(res.headers.get("content-type")).toContain("application/json");
    expect(res.headers.get("x-served-by")).toMatch(/^rpcapp-[123]$/);
    expect(res.headers.get("x-service-version")).toBe("dev");
  });

  test("the client's X-Request-ID is kept end to end", async () => {
    const res = await fetch(`${gw}/projects/`, {
      method: "POST",
      headers: { ...json, "x-request-id": "seed-req-42" },
      body: '{"title":"t"}',
    });
    expect(res.headers.get("x-request-id")).toBe("seed-req-42");
    const servedBy = res.headers.get("x-served-by")!;
    await waitFor("the webapp to log the request id", () =>
      (stack.output.get(servedBy) ?? []).some((l) => l.includes("seed-req-42")),
    );
  });
});

describe("load spread", () => {
  test("30 requests per route reach all 3 replicas of each service, through all 3 gateways", async () => {
    const seen = { webapp: new Set<string>(), rpcapp: new Set<string>(), gateway: new Set<string>() };
    for (let i = 0; i < 30; i++) {
      // A new connection per request, so the kernel spreads them over the gateways (SO_REUSEPORT).
      const [a, b] = await Promise.all([
        fetch(`${gw}/projects/`, {
          method: "POST",
          headers: { ...json, connection: "close" },
          body: `{"title":"p${i}"}`,
        }),
        fetch(`${gw}/verify/`, {
          method: "POST",
          headers: { ...json, connection: "close" },
          body: `{"id": ${i + 1}, "token": "t"}`,
        }),
      ]);
      expect([a.status, b.status]).toEqual([201, 200]);
      seen.webapp.add(a.headers.get("x-served-by")!);
      seen.rpcapp.add(b.headers.get("x-served-by")!);
      seen.gateway.add(a.headers.get("x-gateway")!).add(b.headers.get("x-gateway")!);
    }
    console.log("replicas seen:", Object.fromEntries(Object.entries(seen).map(([k, v]) => [k, [...v].sort()])));
    expect([...seen.webapp].sort()).toEqual(["webapp-1", "webapp-2", "webapp-3"]);
    expect([...seen.rpcapp].sort()).toEqual(["rpcapp-1", "rpcapp-2", "rpcapp-3"]);
    expect(seen.gateway.size).toBeGreaterThanOrEqual(2);
  });
});

describe("bad input gets a clear problem+json answer", () => {
  const problem = async (res: Response, status: number) => {
    expect(res.status).toBe(status);
    expect(res.headers.get("content-type")).toContain("application/problem+json");
    const body = (await res.json()) as { status: number; title: string; detail?: string; errors?: { field: string }[] };
    expect(body.status).toBe(status);
    return body;
  };

  test("unknown route → 404", async () => {
    await problem(await fetch(`${gw}/nope`), 404);
  });

  test("wrong method → 405 with Allow", async () => {
    const res = await fetch(`${gw}/verify/`, { method: "GET" });
    expect(res.headers.get("allow")).toBe("POST");
    await problem(res, 405);
  });

  test("body over the limit → 413, with or without Content-Length", async () => {
    const big = JSON.stringify({ title: "x".repeat(2 * 1024 * 1024) });
    await problem(await fetch(`${gw}/projects/`, { method: "POST", headers: json, body: big }), 413);
    const stream = new ReadableStream({
      start(c) {
        for (let i = 0; i < 40; i++) c.enqueue(new Uint8Array(64 * 1024));
        c.close();
      },
    });
    await problem(await fetch(`${gw}/verify/`, { method: "POST", headers: json, body: stream }), 413);
  });

  test("invalid JSON → 400 (gRPC route: at the gateway; HTTP route: from the webapp)", async () => {
    await problem(await fetch(`${gw}/verify/`, { method: "POST", headers: json, body: '{"id": 1,' }), 400);
    await problem(await fetch(`${gw}/projects/`, { method: "POST", headers: json, body: '{"title": ' }), 400);
  });

  test("a body that does not fit the proto → 400 naming the fields", async () => {
    const body = await problem(
      await fetch(`${gw}/verify/`, { method: "POST", headers: json, body: '{"id": "x", "tokn": "a"}' }),
      400,
    );
    expect(body.errors?.map((e) => e.field)).toEqual(["id", "tokn"]);
  });

  test("invalid input rejected by rpcapp → 400 with the gRPC status", async () => {
    const body = (await problem(
      await fetch(`${gw}/verify/`, { method: "POST", headers: json, body: '{"id": 0, "token": "a"}' }),
      400,
    )) as { title: string; code?: number };
    expect(body.title).toBe("INVALID_ARGUMENT");
    expect(body.code).toBe(3);
  });

  test("invalid project title → 400 naming the field", async () => {
    const body = await problem(
      await fetch(`${gw}/projects/`, { method: "POST", headers: json, body: '{"title": 5}' }),
      400,
    );
    expect(JSON.stringify(body)).toContain("title");
  });

  test("path traversal cannot reach a path no route exposes", async () => {
    await problem(await fetch(`${gw}/projects/..%2f..%2fadmin`), 400);
    await problem(await fetch(`${gw}/projects/%2e%2e/%2e%2e/readyz-x`), 404);
  });

  test("a truncated request is closed, and the gateway keeps serving", async () => {
    const port = Number(new URL(gw).port);
    await new Promise<void>((resolve) => {
      const socket = connect({ host: "127.0.0.1", port }, () => {
        socket.write(
          'POST /projects/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"title":',
        );
        socket.end();
      });
      socket.on("close", () => resolve());
      socket.on("error", () => resolve());
    });
    expect((await fetch(`${gw}/healthz`)).status).toBe(200);
  });
});

describe("upstream failures never hang or crash the gateway", () => {
  test("every endpoint down → 502/503 problem+json, quickly", async () => {
    const dir = testTempDir("down");
    const routes = join(dir, "routes.yaml");
    const dead = await freePort();
    writeFileSync(
      routes,
      `upstreams:
  webapp: { protocol: http, endpoints: "127.0.0.1:${dead}" }
  rpcapp: { protocol: grpc, endpoints: "127.0.0.1:${dead}", proto: proto/userverify.proto }
routes:
  - { name: projects, path: /projects, upstream: webapp, timeoutMs: 2000 }
  - { name: verify, path: /verify, match: exact, upstream: rpcapp, timeoutMs: 2000, grpc: { method: userverify.UserVerify/VerifyUser } }
`,
    );
    const [port, adminPort] = [await freePort(), await freePort()];
    const gateway = spawnService(
      "gateway",
      { PORT: String(port), ADMIN_PORT: String(adminPort), ROUTES_FILE: routes, HOST: "127.0.0.1" },
      "gateway-dead-upstreams",
    );
    await waitFor("gateway ready", async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).ok, {
      proc: gateway,
    });
    for (const [path, body] of [
      ["/projects/", '{"title":"x"}'],
      ["/verify/", '{"id":1,"token":"t"}'],
    ] as const) {
      const started = performance.now();
      const res = await fetch(`http://127.0.0.1:${port}${path}`, { method: "POST", headers: json, body });
      const elapsed = performance.now() - started;
      expect([502, 503]).toContain(res.status);
      expect(res.headers.get("content-type")).toContain("application/problem+json");
      // Against the routes' timeoutMs (2000): a refused connection is answered without waiting it
      // out (that would be a 504); a refusal takes a millisecond, so the whole timeout is margin.
      expect(elapsed).toBeLessThan(2000);
    }
    expect(gateway.proc.exitCode).toBeNull();
  });
});

describe("config errors stop the gateway with the line", () => {
  test("a misspelt key exits non-zero naming file, line and field", async () => {
    const dir = testTempDir("badcfg");
    const routes = join(dir, "routes.yaml");
    writeFileSync(
      routes,
      "upstreams:\n  webapp:\n    protocol: http\n    endpoints: 127.0.0.1:1\nroutes:\n  - name: p\n    path: /p\n    upstreem: webapp\n",
    );
    const gateway = spawnService(
      "gateway",
      { PORT: String(await freePort()), ADMIN_PORT: String(await freePort()), ROUTES_FILE: routes },
      "gateway-bad-config",
    );
    expect(await gateway.exited).toBe(78);
    const output = gateway.lines.join("\n");
    expect(output).toContain(`${routes}:8:5 routes[0].upstreem: unknown field (did you mean "upstream"?)`);
    expect(output).toContain(`${routes}:6:5 routes[0].upstream: required field is missing`);
  });
});
