/** Probes are not access-logged unless LOG_PROBES asks: the gateways check /readyz every few seconds. */
import { describe, expect, test } from "bun:test";
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
