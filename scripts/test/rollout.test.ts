/**
 * scripts/rollout.ts, rollback.ts and load.ts against fake minikube, kubectl, docker and git (see
 * fakes.ts) and a stand-in gateway in this process: the commands they run, in order; the load
 * they drive and count; exit 1 when a request failed during the change; the `make dev` path
 * through a stand-in control port.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import type { Server } from "bun";
import { freePort } from "../stack/testing/ports.ts";
import { type Fakes, type FakeScripts, HAPPY, makeFakes, runScript } from "./fakes.ts";

let fakes: Fakes | undefined;
let servers: Server<undefined>[] = [];
afterEach(() => {
  fakes?.cleanup();
  fakes = undefined;
  for (const s of servers) s.stop(true);
  servers = [];
});

/** kubectl for a cluster running portico/webapp:old1234; `patch`/`undo` leave a mark the fake gateway can see. */
const KUBECTL = `case "$*" in
  *"get deployment/"*"jsonpath={.spec.template.spec.containers[0].image}"*) echo "\${FAKE_IMAGE:-portico/webapp:old1234}" ;;
  *"jsonpath={.spec.template.metadata.labels"*) echo "old1234" ;;
  *" patch "*|*"rollout restart"*) : > "$FAKE_LOG.changed" ;;
  *"rollout undo"*) : > "$FAKE_LOG.changed"; echo "deployment.apps/webapp rolled back" ;;
  *"rollout status"*) echo "deployment successfully rolled out" ;;
  *"rollout history"*) echo "REVISION  CHANGE-CAUSE"; echo "1  <none>"; echo "2  make rollout: portico/webapp:old1234" ;;
  *"get hpa"*) echo "NAME REFERENCE TARGETS MINPODS MAXPODS REPLICAS"; echo "gateway Deployment/gateway 120/50 3 10 5" ;;
esac`;

/** A gateway stand-in: the seed's answers with version headers; once `failAfterChange` sees the mark, 503s. */
async function fakeGateway(
  opts: { failAlways?: boolean; failAfterChange?: () => boolean } = {},
): Promise<{ url: string; hits: () => number; connections: () => number }> {
  let hits = 0;
  /** Client ports seen: one per connection (the loopback client's ephemeral ports are not reused this soon). */
  const clientPorts = new Set<number>();
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: await freePort(),
    fetch(req, srv) {
      hits++;
      const client = srv.requestIP(req);
      if (client) clientPorts.add(client.port);
      if (opts.failAlways || opts.failAfterChange?.())
        return Response.json({ title: "Upstream unavailable" }, { status: 503 });
      const path = new URL(req.url).pathname;
      const headers = {
        "x-gateway-version": "g1",
        "x-service-version": "old1234",
        "x-served-by": path.startsWith("/verify") ? "rpcapp-1" : "webapp-1",
      };
      return Response.json(
        path.startsWith("/verify") ? { message: "Verified: 121" } : { id: 1, url: "Project-An awesome project" },
        { status: path.startsWith("/verify") ? 200 : 201, headers },
      );
    },
  });
  servers.push(server);
  return { url: `http://127.0.0.1:${server.port}`, hits: () => hits, connections: () => clientPorts.size };
}

function withFakes(overrides: FakeScripts = {}, drop: string[] = []): Fakes {
  const scripts: FakeScripts = { ...HAPPY, kubectl: KUBECTL, ...overrides };
  for (const name of drop) delete scripts[name];
  fakes = makeFakes(scripts);
  return fakes;
}

/** Short load phases; always the cluster path unless a test says otherwise. */
function env(gatewayUrl: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    FAKE_SERVICE_URL: gatewayUrl,
    ROLLOUT_TARGET: "minikube",
    LOAD_RPS: "60",
    LOAD_NEW_CONN_RPS: "40",
    ROLLOUT_WARMUP_S: "0",
    ROLLOUT_SETTLE_S: "1",
    ...extra,
  };
}

/** `make <script> SERVICE=webapp` through a gateway that answers 503 once kubectl has changed the Deployment. */
async function runWithFailuresAfterChange(script: "rollout" | "rollback") {
  const f = withFakes();
  const gateway = await fakeGateway({ failAfterChange: () => existsSync(`${f.log}.changed`) });
  return runScript(script, f, env(gateway.url), ["webapp"]);
}

const nonGit = (calls: string[]) => calls.filter((c) => !c.startsWith("git "));

describe("make rollout SERVICE=webapp (minikube)", () => {
  test("builds the new tag in minikube's Docker, points the Deployment at it under load, waits for the rollout and the old pods' drain; 0 failed → exit 0", async () => {
    const f = withFakes();
    const gateway = await fakeGateway();
    const run = await runScript("rollout", f, env(gateway.url), ["webapp"]);
    expect(run.stderr).toBe("");
    expect(run.exitCode).toBe(0);
    const calls = nonGit(f.calls());
    expect(calls).toEqual([
      "kubectl --context=minikube -n portico get deployment/webapp -o jsonpath={.spec.template.spec.containers[0].image}",
      "minikube docker-env --shell none",
      "docker build -f webapp/Dockerfile -t portico/webapp:abc1234 .",
      "docker env: DOCKER_HOST=tcp://minikube.test:2376",
      "minikube service gateway -n portico --url",
      expect.stringMatching(/^kubectl --context=minikube -n portico patch deployment\/webapp --type=strategic -p /),
      "kubectl --context=minikube -n portico rollout status deployment/webapp --timeout=180s",
      expect.stringMatching(
        /^kubectl --context=minikube -n portico get pods -l app.kubernetes.io\/name=webapp -o jsonpath=/,
      ),
    ]);
    // One patch: the image and, on the Deployment and its pods, the version label SERVICE_VERSION reads.
    const patch = JSON.parse(calls[5]!.split(" -p ")[1]!);
    expect(patch.spec.template.spec.containers).toEqual([{ name: "webapp", image: "portico/webapp:abc1234" }]);
    expect(patch.spec.template.metadata.labels).toEqual({ "app.kubernetes.io/version": "abc1234" });
    expect(patch.metadata.labels).toEqual({ "app.kubernetes.io/version": "abc1234" });
    expect(gateway.hits()).toBeGreaterThanOrEqual(40);
    expect(run.stdout).toMatch(/requests {3}\d+ sent in [\d.]+ s \(\d+\/s\): \d+ ok, 0 failed \(0 %\)/);
    // Keep-alive clients and clients that open a new connection for each request, side by side.
    expect(run.stdout).toContain("60 requests/s over keep-alive connections + 40/s each on a new connection");
    const clients =
      /clients {4}keep-alive (\d+) sent, 0 failed; a new connection per request (\d+) sent, 0 failed/.exec(run.stdout);
    expect(clients).not.toBeNull();
    const [keepAlive, fresh] = [Number(clients![1]), Number(clients![2])];
    expect(fresh).toBeGreaterThanOrEqual(20);
    // Each new-connection request came on a connection of its own; the keep-alive ones shared few.
    expect(gateway.connections()).toBeGreaterThanOrEqual(fresh);
    expect(gateway.connections()).toBeLessThan(fresh + keepAlive);
    expect(run.stdout).toContain("x-service-version: old1234");
    expect(run.stdout).toMatch(/0 of \d+ requests failed during the rollout of webapp/);
  });

  test("requests that fail during the rollout: the count is printed and the exit code is 1", async () => {
    const run = await runWithFailuresAfterChange("rollout");
    expect(run.exitCode).toBe(1);
    const failed = /(\d+) of (\d+) requests failed during the rollout of webapp \(target: 0\)/.exec(run.stderr);
    expect(failed).not.toBeNull();
    expect(Number(failed![1])).toBeGreaterThan(0);
    expect(run.stdout).toContain("failures   HTTP 503 ×");
    expect(run.stdout).toContain("e.g. POST /");
  });

  test("an image tag the Deployment already runs: no build, the pods are restarted one by one instead", async () => {
    const f = withFakes();
    const gateway = await fakeGateway();
    const run = await runScript("rollout", f, env(gateway.url, { FAKE_IMAGE: "portico/webapp:abc1234" }), ["webapp"]);
    expect(run.exitCode).toBe(0);
    const calls = nonGit(f.calls());
    expect(calls.some((c) => c.startsWith("docker"))).toBe(false);
    expect(calls).toContain("kubectl --context=minikube -n portico rollout restart deployment/webapp");
    expect(calls.some((c) => c.includes(" patch "))).toBe(false);
    expect(run.stdout).toContain("restarted one by one instead");
  });

  test("a gateway that already fails before the rollout: nothing is changed, exit 1", async () => {
    const f = withFakes();
    const gateway = await fakeGateway({ failAlways: true });
    const run = await runScript("rollout", f, env(gateway.url, { ROLLOUT_WARMUP_S: "1" }), ["webapp"]);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toContain("before the rollout of webapp started, so nothing was changed");
    expect(f.calls().some((c) => c.includes(" patch ") || c.includes("rollout restart"))).toBe(false);
  });

  test("a rollout that does not finish stops the load, exits 1 and points to make rollback", async () => {
    const f = withFakes({
      kubectl: KUBECTL.replace(
        '*"rollout status"*) echo "deployment successfully rolled out" ;;',
        '*"rollout status"*) echo \'error: deployment "webapp" exceeded its progress deadline\' >&2; exit 1 ;;',
      ),
    });
    const gateway = await fakeGateway();
    const run = await runScript("rollout", f, env(gateway.url), ["webapp"]);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toContain("deployment/webapp did not finish rolling out within 180s");
    expect(run.stderr).toContain("make rollback SERVICE=webapp");
    expect(f.calls()).toContain(
      "kubectl --context=minikube -n portico get pods -l app.kubernetes.io/name=webapp -o wide",
    );
    expect(run.stdout).toContain("requests during the change");
  });
});

describe("make rollback SERVICE=webapp (minikube)", () => {
  test("kubectl rollout undo under load, then the rollout, the version label and the drain; 0 failed → exit 0", async () => {
    const f = withFakes();
    const gateway = await fakeGateway();
    const run = await runScript("rollback", f, env(gateway.url), ["webapp"]);
    expect(run.stderr).toBe("");
    expect(run.exitCode).toBe(0);
    expect(nonGit(f.calls())).toEqual([
      "kubectl --context=minikube -n portico get deployment/webapp -o jsonpath={.spec.template.spec.containers[0].image}",
      "kubectl --context=minikube -n portico rollout history deployment/webapp",
      "minikube service gateway -n portico --url",
      "kubectl --context=minikube -n portico rollout undo deployment/webapp",
      "kubectl --context=minikube -n portico rollout status deployment/webapp --timeout=180s",
      "kubectl --context=minikube -n portico get deployment/webapp -o jsonpath={.spec.template.metadata.labels.app\\.kubernetes\\.io/version}",
      "kubectl --context=minikube -n portico label deployment/webapp app.kubernetes.io/version=old1234 --overwrite",
      expect.stringMatching(
        /^kubectl --context=minikube -n portico get pods -l app.kubernetes.io\/name=webapp -o jsonpath=/,
      ),
      "kubectl --context=minikube -n portico get deployment/webapp -o jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    expect(run.stdout).toMatch(/0 of \d+ requests failed during the rollback of webapp/);
  });

  test("requests that fail during the rollback: exit 1 with the count", async () => {
    const run = await runWithFailuresAfterChange("rollback");
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toMatch(/\d+ of \d+ requests failed during the rollback of webapp \(target: 0\)/);
  });
});

describe("arguments and prerequisites", () => {
  test.each(["rollout", "rollback"])(
    "%s without SERVICE, or with an unknown one, exits 2 with the usage and runs nothing",
    async (script) => {
      const f = withFakes();
      for (const service of ["", "webap"]) {
        const run = await runScript(script, f, { ROLLOUT_TARGET: "minikube" }, service ? [service] : []);
        expect(run.exitCode).toBe(2);
        expect(run.stderr).toContain(`make ${script} SERVICE=<gateway|webapp|rpcapp>`);
      }
      expect(f.calls()).toEqual([]);
    },
  );

  test("without make dev and without minikube, rollout exits 2 naming both ways to get a stack", async () => {
    const f = withFakes({}, ["minikube"]);
    const run = await runScript("rollout", f, { DEV_CONTROL_PORT: String(await freePort()) }, ["webapp"]);
    expect(run.exitCode).toBe(2);
    expect(run.stderr).toContain("no `make dev` stack answers");
    expect(run.stderr).toContain("minikube is not installed");
    expect(f.calls()).toEqual([]);
  });
});

describe("make rollout / rollback against make dev", () => {
  /** A stand-in for make dev's control port (scripts/stack/control.ts): records what it is asked. */
  async function fakeDevStack(gatewayUrl: string) {
    const asked: { path: string; body: unknown }[] = [];
    const stream = (events: object[]) =>
      new Response(events.map((e) => `${JSON.stringify(e)}\n`).join(""), {
        headers: { "content-type": "application/x-ndjson" },
      });
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: await freePort(),
      routes: {
        "/stack": () =>
          Response.json({
            gatewayUrl,
            versions: { gateway: "dev", webapp: "dev", rpcapp: "dev" },
            previous: { gateway: null, webapp: "v0", rpcapp: null },
            rolling: false,
            processes: [1, 2, 3].map((r) => ({
              name: `webapp-${r}`,
              kind: "webapp",
              version: "dev",
              pid: r,
              state: "serving",
              ports: { PORT: 3000 + r },
            })),
          }),
        "/rollout": async (req) => {
          asked.push({ path: "/rollout", body: await req.json() });
          await Bun.sleep(300);
          return stream([
            { type: "starting", instance: "webapp-1.2", version: "v9", replacing: "webapp-1" },
            { type: "ready", instance: "webapp-1.2", readyMs: 400 },
            { type: "draining", instance: "webapp-1" },
            { type: "done", service: "webapp", from: "dev", to: "v9", tookMs: 300 },
          ]);
        },
        "/rollback": async (req) => {
          asked.push({ path: "/rollback", body: await req.json() });
          return stream([{ type: "error", message: "webapp-1.3 (version v0) did not become ready" }]);
        },
      },
    });
    servers.push(server);
    return { port: server.port, asked };
  }

  test("a running make dev is found on its control port and asked to replace the replicas, while the load goes through its gateway", async () => {
    const f = withFakes();
    const gateway = await fakeGateway();
    const dev = await fakeDevStack(gateway.url);
    const run = await runScript(
      "rollout",
      f,
      {
        LOAD_RPS: "60",
        ROLLOUT_WARMUP_S: "0",
        ROLLOUT_SETTLE_S: "1",
        DEV_CONTROL_PORT: String(dev.port),
        IMAGE_TAG: "v9",
      },
      ["webapp"],
    );
    expect(run.stderr).toBe("");
    expect(run.exitCode).toBe(0);
    expect(dev.asked).toEqual([{ path: "/rollout", body: { service: "webapp", version: "v9" } }]);
    expect(
      f.calls().filter((c) => c.startsWith("kubectl") || c.startsWith("docker") || c.startsWith("minikube")),
    ).toEqual([]);
    expect(run.stdout).toContain("start webapp-1.2 (version v9) to replace webapp-1");
    expect(run.stdout).toContain("webapp: dev → v9");
    expect(gateway.hits()).toBeGreaterThanOrEqual(40);
  });

  test("a rollback make dev reports as failed exits 1 with its message", async () => {
    const f = withFakes();
    const gateway = await fakeGateway();
    const dev = await fakeDevStack(gateway.url);
    const run = await runScript(
      "rollback",
      f,
      { LOAD_RPS: "40", ROLLOUT_WARMUP_S: "0", ROLLOUT_SETTLE_S: "0", DEV_CONTROL_PORT: String(dev.port) },
      ["webapp"],
    );
    expect(run.exitCode).toBe(1);
    expect(dev.asked).toEqual([{ path: "/rollback", body: { service: "webapp" } }]);
    expect(run.stderr).toContain("make dev: webapp-1.3 (version v0) did not become ready");
  });
});

describe("make load", () => {
  test("drives the rate for the duration through GATEWAY_URL and reports; exit 0 when none failed", async () => {
    const f = withFakes();
    const gateway = await fakeGateway();
    const run = await runScript("load", f, { GATEWAY_URL: gateway.url, LOAD_RPS: "50", LOAD_DURATION_S: "1" });
    expect(run.exitCode).toBe(0);
    expect(gateway.hits()).toBeGreaterThanOrEqual(45);
    expect(run.stdout).toMatch(/requests {3}\d+ sent in 1\.\d s \(\d+\/s\): \d+ ok, 0 failed/);
    expect(f.calls()).toEqual([]);
  });

  test("through minikube's gateway it shows the autoscalers (kubectl get hpa); failed requests exit 1", async () => {
    const f = withFakes();
    const gateway = await fakeGateway({ failAlways: true });
    const run = await runScript("load", f, {
      FAKE_SERVICE_URL: gateway.url,
      DEV_CONTROL_PORT: String(await freePort()),
      GATEWAY_PORT: String(await freePort()),
      LOAD_RPS: "20",
      LOAD_DURATION_S: "1",
    });
    expect(run.exitCode).toBe(1);
    expect(f.calls()).toEqual([
      "minikube service gateway -n portico --url",
      "kubectl --context=minikube -n portico get hpa",
    ]);
    expect(run.stdout).toContain("gateway Deployment/gateway 120/50 3 10 5");
    expect(run.stderr).toMatch(/\d+ of \d+ requests failed/);
  });
});
