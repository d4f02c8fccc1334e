/**
 * `make canary` in the cluster (scripts/canary.ts → scripts/cluster/canary.ts) against fake
 * minikube, kubectl and docker (fakes.ts), two stand-in gateway admin APIs on 127.0.0.1 reached
 * through a fake `kubectl port-forward` that prints their ports, and a stand-in gateway for the
 * load. The stand-ins append what they are asked to the fakes' log, so each test reads one
 * sequence of commands and admin calls, in order: promoted (the stable Deployment rolled, the
 * canary removed, the gateways reset), rolled back (exit 1, the canary removed after its pods are
 * gone, the stable Deployment untouched), a canary already running (nothing applied), a canary pod
 * that never gets ready (the gateways' canaries aborted and reset, the Deployment removed). In
 * every case the port-forwards end, and the admin token never shows on a command line or in the
 * output.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import type { Server } from "bun";
import { parse } from "yaml";
import { canaryDeployment, stableDeployment } from "../cluster/canary.ts";
import { freePort } from "../stack/testing/ports.ts";
import { type Fakes, HAPPY, makeFakes, runScript } from "./fakes.ts";

const TOKEN = "test-admin-token-0123456789abcdef";
const TOKEN_B64 = Buffer.from(TOKEN).toString("base64");
const PODS = ["gateway-5d8f-aaaaa", "gateway-5d8f-bbbbb"] as const;

let fakes: Fakes | undefined;
let servers: Server<undefined>[] = [];
afterEach(() => {
  // A port-forward left running by a failed test must not outlive it.
  for (const pid of fakes ? forwardPids(fakes) : []) if (alive(pid)) process.kill(pid, "SIGKILL");
  fakes?.cleanup();
  fakes = undefined;
  for (const s of servers) s.stop(true);
  servers = [];
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The PIDs the fake port-forwards wrote: each `exec`s /bin/sleep, so the PID is the process kubectl would be. */
function forwardPids(f: Fakes): number[] {
  return existsSync(`${f.log}.pf`) ? readFileSync(`${f.log}.pf`, "utf8").split("\n").filter(Boolean).map(Number) : [];
}

/**
 * kubectl for a cluster whose deployment/webapp runs `$FAKE_STABLE` (v1), with two running gateway
 * pods and one terminating; `port-forward` prints the port of that pod's stand-in admin API and
 * keeps running; the canary's pod is listed once after its Deployment is deleted, then gone.
 */
function kubectlScript(ports: Record<(typeof PODS)[number], number>): string {
  const forward = (pod: string, port: number) =>
    `  *"port-forward pod/${pod} "*) echo "$$" >> "$FAKE_LOG.pf"; echo "Forwarding from 127.0.0.1:${port} -> 9901"; echo "Forwarding from [::1]:${port} -> 9901"; exec /bin/sleep 30 ;;`;
  return `prev=""
for a in "$@"; do
  if [ "$prev" = "-f" ] && [ "$a" = "-" ]; then /bin/mkdir -p "$FAKE_LOG.stdin" && /bin/cat > "$FAKE_LOG.stdin/$$.yaml"; fi
  prev="$a"
done
case "$*" in
  *"get deployment/webapp -o jsonpath={.spec.template.spec.containers[0].image}"*) echo "portico/webapp:\${FAKE_STABLE:-v1}" ;;
  *"get deployment/webapp -o jsonpath={.spec.template.metadata.labels"*) echo "\${FAKE_STABLE:-v1}" ;;
  *"get pods -l app.kubernetes.io/name=gateway "*) echo "${PODS[0]} "; echo "${PODS[1]} "; echo "gateway-5d8f-zzzzz 2030-01-01T00:00:00Z" ;;
  *"get secret portico-admin"*) printf '%s' "${TOKEN_B64}" ;;
${forward(PODS[0], ports[PODS[0]])}
${forward(PODS[1], ports[PODS[1]])}
  *"rollout status deployment/webapp-canary"*)
    if [ -n "$FAKE_CANARY_STUCK" ]; then echo 'error: deployment "webapp-canary" exceeded its progress deadline' >&2; exit 1; fi
    echo 'deployment "webapp-canary" successfully rolled out' ;;
  *"rollout status"*) echo "deployment successfully rolled out" ;;
  *"get pods -l app.kubernetes.io/name=webapp,portico.dev/track=canary -o name"*)
    if [ -f "$FAKE_LOG.deleted" ] && [ ! -f "$FAKE_LOG.gone" ]; then : > "$FAKE_LOG.gone"; echo "pod/webapp-canary-6b7c9-q2x4z"; fi ;;
  *" delete "*) : > "$FAKE_LOG.deleted"; echo 'deployment.apps "webapp-canary" deleted' ;;
esac`;
}

interface CanaryObject {
  metadata: { labels: Record<string, string> };
}

type Behaviour = "passes" | "fails" | "keeps-running" | "already-running";

interface StepView {
  step: number;
  weight: number;
  durationMs: number;
  canary: { requests: number; errors: number; errorRate: number; p99Ms: number };
  stable: { requests: number; errors: number; errorRate: number; p99Ms: number };
  measuredShare: number;
  verdict: "passed" | "failed";
  reason: string;
}

function stepView(step: number, weight: number, verdict: StepView["verdict"], reason: string): StepView {
  const errors = verdict === "failed" ? 1 : 0;
  return {
    step,
    weight,
    durationMs: 1_000,
    canary: { requests: 20, errors, errorRate: errors * 5, p99Ms: 3 },
    stable: { requests: 380, errors: 0, errorRate: 0, p99Ms: 4 },
    measuredShare: weight,
    verdict,
    reason,
  };
}

/**
 * One gateway's admin API (gateway/src/admin/canary.ts), as far as the script uses it: the token
 * required; /upstreams lists the canary's endpoint once its Deployment was applied; the canary's
 * state moves one step per poll (`passes`: 5 → 25 → promoted; `fails`: the first step fails and it
 * aborts itself; `keeps-running`: no verdict of its own). POSTs are appended to the fakes' log.
 */
async function adminStub(pod: string, f: Fakes, behaviour: Behaviour, port: number) {
  let state = behaviour === "already-running" ? "running" : "idle";
  let version: string | null = behaviour === "already-running" ? "v0-other" : null;
  let weight = behaviour === "already-running" ? 25 : 0;
  let history: StepView[] = [];
  let polls = 0;
  let unauthorized = 0;
  const view = () => ({ upstream: "webapp", state, version, weight, step: null, history });
  const conflict = (detail: string) => Response.json({ title: "Conflict", status: 409, detail }, { status: 409 });
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port,
    async fetch(req) {
      if (req.headers.get("authorization") !== `Bearer ${TOKEN}`) {
        unauthorized++;
        return Response.json({ title: "Unauthorized", status: 401, detail: "bearer token required" }, { status: 401 });
      }
      const { pathname } = new URL(req.url);
      const body = req.method === "POST" ? await req.text() : "";
      if (req.method === "POST") {
        appendFileSync(f.log, `admin ${pod} POST ${pathname}${body && body !== "{}" ? ` ${body}` : ""}\n`);
      }
      if (pathname === "/upstreams") {
        // The canary's pod reports the version label of the Deployment applied, once there is one.
        const applied = f.appliedStdin()[0];
        const canary = applied ? (parse(applied) as CanaryObject).metadata.labels["app.kubernetes.io/version"] : "";
        const endpoints = [
          { address: "10.244.0.11:8080", available: true, version: "v1" },
          ...(canary ? [{ address: "10.244.0.19:8080", available: true, version: canary }] : []),
        ];
        return Response.json([{ name: "webapp", protocol: "http", endpoints }]);
      }
      if (pathname === "/canary/webapp" && req.method === "GET") {
        if (state === "running" && behaviour !== "already-running") {
          polls++;
          if (behaviour === "passes" && polls === 1) {
            history = [stepView(1, 5, "passed", "error rate 0% ≤ 1%, p99 3 ms ≤ 9 ms")];
            weight = 25;
          } else if (behaviour === "passes" && polls >= 2) {
            history = [
              ...history,
              stepView(2, 25, "passed", "error rate 0% ≤ 1%, p99 3 ms ≤ 9 ms"),
              stepView(3, 50, "passed", "error rate 0% ≤ 1%, p99 3 ms ≤ 9 ms"),
            ];
            state = "promoted";
            weight = 100;
          } else if (behaviour === "fails") {
            history = [stepView(1, 5, "failed", "error rate 5% > stable 0% + 1 points")];
            state = "aborted";
            weight = 0;
          }
        }
        return Response.json(view());
      }
      if (pathname === "/canary/webapp/start") {
        if (state === "running") return conflict(`a canary of webapp (version ${version}) is running`);
        ({ version } = JSON.parse(body) as { version: string });
        state = "running";
        weight = 5;
        history = [];
        return Response.json(view());
      }
      if (pathname === "/canary/webapp/abort") {
        if (!["running", "paused", "promoted"].includes(state)) return conflict(`it is ${state}`);
        state = "aborted";
        weight = 0;
        return Response.json(view());
      }
      if (pathname === "/canary/webapp/reset") {
        state = "idle";
        version = null;
        weight = 0;
        return Response.json(view());
      }
      return Response.json({ title: "Not Found", status: 404, detail: pathname }, { status: 404 });
    },
  });
  servers.push(server);
  return { unauthorized: () => unauthorized };
}

/** The gateway's Service for the load: webapp's answers, with its version. */
async function gatewayStub() {
  const paths: string[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: await freePort(),
    fetch(req) {
      paths.push(`${req.method} ${new URL(req.url).pathname}`);
      return Response.json(
        { id: 1, title: "An awesome project" },
        { status: 201, headers: { "x-gateway-version": "g1", "x-service-version": "v1", "x-served-by": "webapp-1" } },
      );
    },
  });
  servers.push(server);
  return { url: `http://127.0.0.1:${server.port}`, paths };
}

async function setup(behaviours: [Behaviour, Behaviour]) {
  const ports = { [PODS[0]]: await freePort(), [PODS[1]]: await freePort() } as Record<(typeof PODS)[number], number>;
  const f = makeFakes({ ...HAPPY, kubectl: kubectlScript(ports) });
  fakes = f;
  const a = await adminStub(PODS[0], f, behaviours[0], ports[PODS[0]]);
  const b = await adminStub(PODS[1], f, behaviours[1], ports[PODS[1]]);
  const gateway = await gatewayStub();
  const env = {
    ROLLOUT_TARGET: "minikube",
    CANARY_VERSION: "v2",
    LOAD_RPS: "50",
    CANARY_TIMEOUT_S: "10",
    FAKE_SERVICE_URL: gateway.url,
  };
  return { f, a, b, gateway, env };
}

/** Each run takes a few seconds (a 2 s poll while the canary's pod goes); `bun test` alone gives 5 s. */
const RUN_TIMEOUT_MS = 30_000;

const K = "kubectl --context=minikube -n portico";
const PF = (pod: string) => `${K} port-forward pod/${pod} --address=127.0.0.1 :9901`;

/** What every run does before the canary is judged, in order. */
const BEFORE = [
  `${K} get deployment/webapp -o jsonpath={.spec.template.spec.containers[0].image}`,
  `${K} get deployment/webapp -o jsonpath={.spec.template.metadata.labels.app\\.kubernetes\\.io/version}`,
  "minikube docker-env --shell none",
  "docker build -f webapp/Dockerfile -t portico/webapp:v2 .",
  "docker env: DOCKER_HOST=tcp://minikube.test:2376",
  `${K} get pods -l app.kubernetes.io/name=gateway --field-selector=status.phase=Running -o jsonpath={range .items[*]}{.metadata.name} {.metadata.deletionTimestamp}{"\\n"}{end}`,
  `${K} get secret portico-admin -o jsonpath={.data.token}`,
  PF(PODS[0]),
  PF(PODS[1]),
];
const APPLY = [`${K} apply -f -`, `${K} rollout status deployment/webapp-canary --timeout=180s`];
/** Every gateway starts its canary before the canary pod exists (it gets the first step's share from its first request). */
const STARTED = [
  `admin ${PODS[0]} POST /canary/webapp/start {"version":"v2"}`,
  `admin ${PODS[1]} POST /canary/webapp/start {"version":"v2"}`,
];
const LOAD = ["minikube service gateway -n portico --url"];
const REMOVE_CANARY = [
  `${K} delete deployment/webapp-canary --ignore-not-found`,
  `${K} get pods -l app.kubernetes.io/name=webapp,portico.dev/track=canary -o name`,
  // Listed once more after the delete: it waited for the pod to go.
  `${K} get pods -l app.kubernetes.io/name=webapp,portico.dev/track=canary -o name`,
];
const RESET = [`admin ${PODS[0]} POST /canary/webapp/reset`, `admin ${PODS[1]} POST /canary/webapp/reset`];

/** The port-forwards ended, and the token stayed off every command line and out of the output. */
function expectCleanAndSecret(f: Fakes, run: { stdout: string; stderr: string }) {
  const pids = forwardPids(f);
  expect(pids).toHaveLength(2);
  expect(pids.filter(alive)).toEqual([]);
  for (const secret of [TOKEN, TOKEN_B64]) {
    expect(f.calls().filter((c) => c.includes(secret))).toEqual([]);
    expect(run.stdout).not.toContain(secret);
    expect(run.stderr).not.toContain(secret);
  }
  // Nothing secret in the object applied either: the Secrets are references.
  for (const applied of f.appliedStdin()) expect(applied).not.toContain(TOKEN);
}

describe("make canary SERVICE=webapp in the cluster", () => {
  test(
    "every gateway promotes it: the stable Deployment is rolled to v2, the canary removed, the gateways reset; exit 0",
    async () => {
      const { f, a, b, gateway, env } = await setup(["passes", "passes"]);
      const run = await runScript("canary", f, env, ["webapp"]);
      expect(run.stderr).toBe("");
      expect(run.exitCode).toBe(0);
      expect(f.calls()).toEqual([
        ...BEFORE,
        ...STARTED,
        ...APPLY,
        ...LOAD,
        expect.stringMatching(/^kubectl --context=minikube -n portico patch deployment\/webapp --type=strategic -p /),
        `${K} rollout status deployment/webapp --timeout=180s`,
        ...REMOVE_CANARY,
        expect.stringMatching(
          /^kubectl --context=minikube -n portico get pods -l app.kubernetes.io\/name=webapp -o jsonpath=/,
        ),
        ...RESET,
      ]);
      // The object applied is the canary Deployment the code derives from k8s/webapp.yaml, no drill.
      const applied = f.appliedStdin();
      expect(applied).toHaveLength(1);
      expect(parse(applied[0]!)).toEqual(
        canaryDeployment(stableDeployment("webapp"), { service: "webapp", tag: "v2" }),
      );
      expect(applied[0]).not.toContain("FAULT_");
      // Promotion is `make rollout`'s patch: image and version label together.
      const patch = JSON.parse(
        f
          .calls()
          .find((c) => c.includes(" patch "))!
          .split(" -p ")[1]!,
      );
      expect(patch.spec.template.spec.containers).toEqual([{ name: "webapp", image: "portico/webapp:v2" }]);
      expect(patch.spec.template.metadata.labels).toEqual({ "app.kubernetes.io/version": "v2" });
      // The load went through the gateway's Service, on webapp's route only, and read only: it
      // must not fill webapp's store.
      expect(gateway.paths.length).toBeGreaterThan(20);
      expect(new Set(gateway.paths)).toEqual(new Set(["GET /projects/"]));
      // Half of it on a new connection per request, so kube-proxy spreads it over every gateway pod.
      const clients = /keep-alive (\d+) sent, 0 failed; a new connection per request (\d+) sent/.exec(run.stdout);
      expect(clients).not.toBeNull();
      expect(Number(clients![2])).toBeGreaterThan(10);
      expect(Math.abs(Number(clients![1]) - Number(clients![2]))).toBeLessThan(10);
      expect(a.unauthorized() + b.unauthorized()).toBe(0);
      expect(run.stdout).toContain(
        `every gateway (${PODS[0]}, ${PODS[1]}) started its canary: 5% of webapp's requests to v2`,
      );
      expect(run.stdout).toContain(`${PODS[1]} step 3 at 50%: PASSED`);
      expect(run.stdout).toMatch(/requests {3}\d+ sent in [\d.]+ s/);
      expect(run.stdout).toMatch(/verdict: PROMOTED — webapp runs v2 everywhere; 0 of \d+ requests failed/);
      expectCleanAndSecret(f, run);
    },
    RUN_TIMEOUT_MS,
  );

  test(
    "one gateway's analysis fails (a drill): every gateway aborts, the canary is removed once its pod is gone, the stable Deployment is untouched; exit 1",
    async () => {
      const { f, gateway, env } = await setup(["keeps-running", "fails"]);
      const run = await runScript("canary", f, { ...env, CANARY_FAULT: "errors" }, ["webapp"]);
      expect(run.exitCode).toBe(1);
      expect(run.stderr).toContain("the canary was rolled back (see the verdict above)");
      expect(f.calls()).toEqual([
        ...BEFORE,
        ...STARTED,
        ...APPLY,
        ...LOAD,
        // The failing gateway has aborted itself already (409, ignored); the other one is stopped now.
        `admin ${PODS[0]} POST /canary/webapp/abort`,
        `admin ${PODS[1]} POST /canary/webapp/abort`,
        ...REMOVE_CANARY,
        ...RESET,
      ]);
      expect(f.calls().some((c) => c.includes(" patch ") || c.includes("rollout status deployment/webapp "))).toBe(
        false,
      );
      // The drill's variable is on the canary only.
      const applied = parse(f.appliedStdin()[0]!);
      expect(applied).toEqual(
        canaryDeployment(stableDeployment("webapp"), { service: "webapp", tag: "v2", fault: "errors" }),
      );
      expect(applied.spec.template.spec.containers[0].env).toContainEqual({ name: "FAULT_ERROR_PERCENT", value: "5" });
      expect(gateway.paths.length).toBeGreaterThan(0);
      expect(run.stdout).toContain(`${PODS[1]} step 1 at 5%: FAILED`);
      expect(run.stdout).toContain(
        `verdict: ROLLED BACK — ${PODS[1]}: error rate 5% > stable 0% + 1 points; webapp stays on v1;`,
      );
      expectCleanAndSecret(f, run);
    },
    RUN_TIMEOUT_MS,
  );

  test(
    "a gateway already running a canary of webapp: nothing is applied, no gateway is touched; exit 1",
    async () => {
      const { f, env } = await setup(["passes", "already-running"]);
      const run = await runScript("canary", f, env, ["webapp"]);
      expect(run.exitCode).toBe(1);
      expect(run.stderr).toContain(
        `${PODS[1]} is already running a canary of webapp (version v0-other, running at 25%); nothing was changed`,
      );
      expect(f.calls()).toEqual(BEFORE);
      expect(f.appliedStdin()).toEqual([]);
      expectCleanAndSecret(f, run);
    },
    RUN_TIMEOUT_MS,
  );

  test(
    "a canary pod that never gets ready: every gateway's canary is aborted and reset, the Deployment removed; exit 1",
    async () => {
      const { f, gateway, env } = await setup(["passes", "passes"]);
      const run = await runScript("canary", f, { ...env, FAKE_CANARY_STUCK: "1" }, ["webapp"]);
      expect(run.exitCode).toBe(1);
      expect(run.stderr).toContain("deployment/webapp-canary did not become ready within 180s");
      expect(f.calls()).toEqual([
        ...BEFORE,
        ...STARTED,
        ...APPLY,
        `${K} get pods -l app.kubernetes.io/name=webapp,portico.dev/track=canary -o wide`,
        // Stopped like an abort: each gateway's canary aborted, the Deployment removed, the gateways reset.
        `admin ${PODS[0]} POST /canary/webapp/abort`,
        `admin ${PODS[1]} POST /canary/webapp/abort`,
        ...REMOVE_CANARY,
        ...RESET,
      ]);
      // No load was started for a canary that never served.
      expect(f.calls()).not.toContain(LOAD[0]);
      expect(gateway.paths).toEqual([]);
      expectCleanAndSecret(f, run);
    },
    RUN_TIMEOUT_MS,
  );

  test(
    "CANARY_VERSION is the version running: the canary is <tag>-canary — built, labelled, started and promoted as such",
    async () => {
      const { f, env } = await setup(["passes", "passes"]);
      const run = await runScript("canary", f, { ...env, FAKE_STABLE: "v2" }, ["webapp"]);
      expect(run.stderr).toBe("");
      expect(run.exitCode).toBe(0);
      expect(run.stdout).toContain("v2 is the version running: the canary is v2-canary");
      const calls = f.calls();
      expect(calls).toContain("docker build -f webapp/Dockerfile -t portico/webapp:v2-canary .");
      expect((parse(f.appliedStdin()[0]!) as CanaryObject).metadata.labels["app.kubernetes.io/version"]).toBe(
        "v2-canary",
      );
      expect(calls).toContain(`admin ${PODS[0]} POST /canary/webapp/start {"version":"v2-canary"}`);
      const patch = JSON.parse(calls.find((c) => c.includes(" patch "))!.split(" -p ")[1]!);
      expect(patch.spec.template.spec.containers).toEqual([{ name: "webapp", image: "portico/webapp:v2-canary" }]);
      expectCleanAndSecret(f, run);
    },
    RUN_TIMEOUT_MS,
  );
});
