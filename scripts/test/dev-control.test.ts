/**
 * `make dev`'s control port (scripts/stack/control.ts) on a real, small stack (one replica of
 * each): what it reports, what it refuses, and a rollout and a rollback driven through it with
 * the client `make rollout` uses (scripts/stack/dev-control.ts).
 */
import { describe, expect, test } from "bun:test";
import { useControlledStack } from "../stack/testing/controlled-stack.ts";
import { type ControlEvent, controlStream, findDevStack } from "../stack/dev-control.ts";

const s = useControlledStack();

async function collect(path: "/rollout" | "/rollback", body: object): Promise<ControlEvent[]> {
  const events: ControlEvent[] = [];
  for await (const e of controlStream(s.url, path, body)) events.push(e);
  return events;
}

describe("make dev's control port", () => {
  test("GET /stack: the gateway URL, each service's version, nothing to roll back yet, every process", async () => {
    const view = await findDevStack(s.url);
    expect(view).toMatchObject({
      gatewayUrl: s.stack.gatewayUrl,
      versions: { gateway: "v1", webapp: "v1", rpcapp: "v1" },
      previous: { gateway: null, webapp: null, rpcapp: null },
      rolling: false,
    });
    expect(view!.processes.map((p) => [p.name, p.state]).sort()).toEqual([
      ["gateway-1", "serving"],
      ["rpcapp-1", "serving"],
      ["webapp-1", "serving"],
    ]);
  });

  test("GET /targets: each process's /metrics address for Prometheus' HTTP service discovery", async () => {
    const targets = (await (await fetch(`${s.url}/targets`)).json()) as {
      targets: string[];
      labels: Record<string, string>;
    }[];
    expect(targets.map((t) => t.labels.job).sort()).toEqual(["gateway", "rpcapp", "webapp"]);
    for (const t of targets) expect((await fetch(`http://${t.targets[0]}/metrics`)).status).toBe(200);
  });

  test("bad input is a 400 naming what is expected; a rollback with no history a 409", async () => {
    const post = (path: string, body: string) =>
      fetch(`${s.url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body });
    const notJson = await post("/rollout", "{");
    expect(notJson.status).toBe(400);
    expect((await notJson.json()).detail).toContain("the body must be JSON");
    expect((await (await post("/rollout", '{"service":"nginx","version":"v2"}')).json()).detail).toBe(
      '"service" must be one of webapp, rpcapp, gateway',
    );
    expect((await post("/rollout", '{"service":"webapp","version":"has space"}')).status).toBe(400);
    const nothing = await post("/rollback", '{"service":"webapp"}');
    expect(nothing.status).toBe(409);
    expect((await nothing.json()).detail).toContain("no previous version");
  });

  test("POST /rollout streams the replacement until the old replica has exited; POST /rollback goes back", async () => {
    const rollout = await collect("/rollout", { service: "webapp", version: "v2" });
    expect(rollout.map((e) => e.type)).toEqual(["starting", "ready", "draining", "routed", "settled", "done"]);
    expect(rollout.at(-1)).toMatchObject({ type: "done", service: "webapp", from: "v1", to: "v2" });
    expect(rollout.find((e) => e.type === "settled")).toMatchObject({ instance: "webapp-1", code: 0 });
    const view = (await findDevStack(s.url))!;
    expect(view.versions.webapp).toBe("v2");
    expect(view.previous.webapp).toBe("v1");
    expect(view.processes.filter((p) => p.kind === "webapp").map((p) => [p.name, p.version])).toEqual([
      ["webapp-1.2", "v2"],
    ]);
    // The gateway routes to it: the answer says so.
    const res = await fetch(`${s.stack.gatewayUrl}/projects/`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: '{"title":"after the rollout"}',
    });
    expect([res.status, res.headers.get("x-service-version"), res.headers.get("x-served-by")]).toEqual([
      201,
      "v2",
      "webapp-1.2",
    ]);

    const rollback = await collect("/rollback", { service: "webapp" });
    expect(rollback.at(-1)).toMatchObject({ type: "done", from: "v2", to: "v1" });
    expect((await findDevStack(s.url))!.versions.webapp).toBe("v1");
  });
});
