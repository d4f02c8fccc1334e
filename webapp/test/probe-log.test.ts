/**
 * Probes are not access-logged unless LOG_PROBES asks: the gateways check /readyz every few seconds.
 * Nor does a scrape count itself in the in-flight gauge it reads.
 */
import { describe, expect, test } from "bun:test";
import { Fault } from "../../lib/fault.ts";
import { waitFor } from "../../scripts/stack/testing/processes.ts";
import { webappFixture } from "./fixture.ts";

describe("probe access lines", () => {
  test("/healthz and /readyz leave no access line by default; other requests do", async () => {
    const { request, logs, accessLogFor } = webappFixture();
    await request("GET", "/healthz", { headers: { "x-request-id": "probe-1" } });
    await request("GET", "/readyz", { headers: { "x-request-id": "probe-2" } });
    await request("GET", "/projects", { headers: { "x-request-id": "real-1" } });
    // Lines are written in order: once the last request's is there, the probes' would be too.
    await accessLogFor("real-1");
    expect(logs.filter((l) => l.msg === "request").map((l) => l.request_id)).toEqual(["real-1"]);
  });

  test("with logProbes they are logged like any request", async () => {
    const { request, accessLogFor } = webappFixture({ logProbes: true });
    await request("GET", "/healthz", { headers: { "x-request-id": "probe-3" } });
    expect(await accessLogFor("probe-3")).toMatchObject({ path: "/healthz", status: 200 });
  });
});

describe("the in-flight gauge", () => {
  test("an idle webapp reads 0 in flight: the scrape that reads it is not counted; a request in flight is", async () => {
    const { request, postJson } = webappFixture({ fault: new Fault(0, 2000) });
    const gauge = async () =>
      Number(
        /^http_server_requests_in_flight\{[^}]*\} (\d+)$/m.exec(await (await request("GET", "/metrics")).text())?.[1],
      );
    expect(await gauge()).toBe(0);
    expect(await gauge()).toBe(0);
    // A create held 2 s by the fault's delay is in flight while it waits, and counted.
    const slow = postJson("/projects", { title: "slow" });
    await waitFor("the held create to be counted", async () => (await gauge()) === 1, {
      timeoutMs: 5000,
      intervalMs: 5,
    });
    expect((await slow).status).toBe(201);
    // Its count ends a turn after its response (onAfterResponse).
    await waitFor("the create to leave the count", async () => (await gauge()) === 0, {
      timeoutMs: 5000,
      intervalMs: 5,
    });
  });
});
