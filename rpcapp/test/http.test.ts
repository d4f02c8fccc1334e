import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Lifecycle } from "../../lib/lifecycle.ts";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { startStatusServer } from "../src/http.ts";
import { TEST_IDENTITY, testLogger } from "./fixtures.ts";

let lifecycle: Lifecycle;
let server: ReturnType<typeof startStatusServer>;
let base: string;

beforeAll(async () => {
  lifecycle = new Lifecycle({ drainDelayMs: 60_000, shutdownTimeoutMs: 120_000, log: testLogger([]), exit: () => {} });
  server = startStatusServer({ host: "127.0.0.1", port: await freePort(), identity: TEST_IDENTITY, lifecycle });
  base = `http://127.0.0.1:${server.port}`;
});
afterAll(() => server.stop(true));

describe("status HTTP server", () => {
  test("/healthz answers 200 even before the service is ready", async () => {
    const res = await fetch(`${base}/healthz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: "ok" });
  });

  // The three readiness phases run in order on one lifecycle: starting, ready, draining.
  test("/readyz answers 503 problem+json while starting, 200 once ready, 503 while draining", async () => {
    const starting = await fetch(`${base}/readyz`);
    expect(starting.status).toBe(503);
    expect(starting.headers.get("content-type")).toStartWith("application/problem+json");
    expect(await starting.json()).toMatchObject({ status: 503, detail: "rpcapp is starting" });

    lifecycle.markReady();
    const ready = await fetch(`${base}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ status: "ready" });

    // drainDelayMs is long: shutdown() stays in its drain phase for the rest of this file.
    void lifecycle.shutdown();
    const draining = await fetch(`${base}/readyz`);
    expect(draining.status).toBe(503);
    expect(await draining.json()).toMatchObject({ detail: "rpcapp is draining before shutdown" });
    expect((await fetch(`${base}/healthz`)).status).toBe(200);
  });

  test("/version answers the service identity as JSON", async () => {
    const res = await fetch(`${base}/version`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ service: "rpcapp", version: "1.2.3-test", instance: "rpcapp-test-1" });
  });

  test("every answer carries the identity headers and echoes x-request-id", async () => {
    const res = await fetch(`${base}/version`, { headers: { "x-request-id": "http-req-9" } });
    expect(res.headers.get("x-served-by")).toBe("rpcapp-test-1");
    expect(res.headers.get("x-service-version")).toBe("1.2.3-test");
    expect(res.headers.get("x-request-id")).toBe("http-req-9");
    const generated = await fetch(`${base}/healthz`);
    expect(generated.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
  });

  test("an unknown path answers 404 problem+json naming the routes", async () => {
    const res = await fetch(`${base}/nope`);
    expect(res.status).toBe(404);
    expect(res.headers.get("x-served-by")).toBe("rpcapp-test-1");
    expect(await res.json()).toMatchObject({ status: 404, title: "Not Found" });
  });
});
