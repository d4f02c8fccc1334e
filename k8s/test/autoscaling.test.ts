/**
 * Autoscaling and graceful shutdown in the manifests: the autoscalers scale the Deployments that
 * exist, from at least 3 replicas, on CPU and (the gateway) on its request rate; the request-rate
 * query is valid PromQL and names a metric a running gateway really exports; the shutdown fits
 * the grace period. Then edits a person could make, each caught with file, line and field.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { IHorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import type { IService } from "kubernetes-models/v1/Service";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { requireBinary, spawnProcess, spawnService, stopAll, waitFor } from "../../scripts/stack/testing/processes.ts";
import {
  autoscalersOf,
  checkAutoscaling,
  checkCpuTargets,
  checkDrainTiming,
  gatewayRefreshMs,
  MIN_REPLICAS,
  relabelTargets,
  selectorsOf,
  seriesOf,
} from "./checks/autoscaling.ts";
import type { ScaledObject } from "./checks/custom-resources.ts";
import { formatProblem, loadManifests, type Manifest, withEdit } from "./checks/manifests.ts";
import { StrictValidator } from "./checks/strict-schema.ts";

const manifests = loadManifests();
const scaledObject = manifests.find((m) => m.object.kind === "ScaledObject" && m.object.metadata?.name === "gateway")!
  .object as unknown as ScaledObject;
const requestTrigger = scaledObject.spec.triggers.find((t) => t.type === "prometheus")!;
const query = requestTrigger.metadata.query!;
const prometheusConfig = (() => {
  const cm = manifests.find((m) => m.object.kind === "ConfigMap" && m.object.metadata?.name === "prometheus-config");
  return (cm?.object.data as Record<string, string> | undefined)?.["prometheus.yml"] ?? "";
})();

afterAll(async () => {
  await stopAll();
});

describe("the autoscalers in k8s/", () => {
  test("scale each of gateway, webapp and rpcapp, from at least 3 replicas (HPAs for the backends, KEDA for the gateway)", () => {
    const found = autoscalersOf(manifests).map((a) => [a.kind, a.m.object.metadata?.name, a.target.name, a.min]);
    expect(found.sort()).toEqual(
      [
        ["HorizontalPodAutoscaler", "rpcapp", "rpcapp", MIN_REPLICAS],
        ["HorizontalPodAutoscaler", "webapp", "webapp", MIN_REPLICAS],
        ["ScaledObject", "gateway", "gateway", MIN_REPLICAS],
      ].sort(),
    );
    const hpas = manifests.filter((x) => x.object.kind === "HorizontalPodAutoscaler");
    expect(hpas.map((m) => [m.object.metadata?.name, m.object.apiVersion]).sort()).toEqual([
      ["rpcapp", "autoscaling/v2"],
      ["webapp", "autoscaling/v2"],
    ]);
  });

  test("target Deployments that exist, one autoscaler each, and those Deployments leave replicas to them", () => {
    expect(checkAutoscaling(manifests).map(formatProblem)).toEqual([]);
  });

  test("all scale on CPU, and every container they scale requests CPU", () => {
    expect(checkCpuTargets(manifests).map(formatProblem)).toEqual([]);
    const hpaMetrics = manifests
      .filter((m) => m.object.kind === "HorizontalPodAutoscaler")
      .map((m) => (m.object as unknown as IHorizontalPodAutoscaler).spec?.metrics?.[0]?.resource?.target);
    const cpu70 = { type: "Utilization", averageUtilization: 70 };
    expect(hpaMetrics).toEqual([cpu70, cpu70]);
    expect(scaledObject.spec.triggers.map((t) => [t.type, t.metricType ?? "AverageValue"])).toEqual([
      ["cpu", "Utilization"],
      ["prometheus", "AverageValue"],
    ]);
  });

  test("the gateway's request-rate trigger asks the Prometheus Service in k8s/, by its full name (KEDA runs in another namespace)", () => {
    const url = new URL(requestTrigger.metadata.serverAddress!);
    const [service, namespace, ...rest] = url.hostname.split(".");
    expect({ namespace, rest: rest.join(".") }).toEqual({ namespace: "portico", rest: "svc.cluster.local" });
    const svc = manifests.find((m) => m.object.kind === "Service" && m.object.metadata?.name === service)
      ?.object as unknown as IService | undefined;
    expect(svc?.spec?.ports?.map((p) => String(p.port))).toContain(url.port);
    expect(Number(requestTrigger.metadata.threshold)).toBeGreaterThan(0);
  });
});

// Under CI a missing promtool throws here (requireBinary); elsewhere the syntax check is skipped.
const hasPromtool = requireBinary("promtool");

describe("the request-rate query", () => {
  test.skipIf(!hasPromtool)("is valid PromQL (promtool parses it as a recording rule)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "portico-promql-"));
    try {
      writeFileSync(
        join(dir, "rules.yml"),
        JSON.stringify({
          groups: [{ name: "keda", rules: [{ record: "portico:gateway_requests:rate1m", expr: query }] }],
        }),
      );
      const check = spawnProcess("promtool", ["promtool", "check", "rules", join(dir, "rules.yml")]);
      const code = await check.exited;
      expect({ code, output: check.lines.join("\n") }).toMatchObject({ code: 0 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("selects one metric, by label", () => {
    expect(selectorsOf(query)).toEqual([
      {
        metric: "http_server_requests_total",
        matchers: [
          { label: "service", op: "=", value: "gateway" },
          { label: "namespace", op: "=", value: "portico" },
        ],
      },
    ]);
  });

  test("names a metric the running gateway exports on its admin /metrics, with labels it carries or Prometheus adds", async () => {
    const [port, adminPort, deadPort] = [await freePort(), await freePort(), await freePort()];
    const gateway = spawnService(
      "gateway",
      {
        HOST: "127.0.0.1",
        PORT: String(port),
        ADMIN_PORT: String(adminPort),
        INSTANCE_ID: "gateway-keda-test",
        WEBAPP_ENDPOINTS: `127.0.0.1:${deadPort}`,
        RPCAPP_ENDPOINTS: `127.0.0.1:${deadPort}`,
        LOG_LEVEL: "warn",
      },
      "gateway-keda-test",
    );
    await waitFor("the gateway's admin /readyz", async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).ok, {
      proc: gateway,
    });
    // Requests of every kind the counter sees: a route (its upstream is down: 502/503), no route (404).
    for (const path of ["/projects/", "/nowhere"]) await (await fetch(`http://127.0.0.1:${port}${path}`)).text();
    const exposition = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
    expect(problemsOfQuery(query, exposition)).toEqual([]);
  });

  test("a query naming something the gateway does not export is caught", () => {
    const exposition =
      '# TYPE http_server_requests_total counter\nhttp_server_requests_total{service="gateway",route="projects",method="GET",status_code="200"} 3\n';
    expect(problemsOfQuery('sum(rate(http_server_request_total{service="gateway"}[1m]))', exposition)).toEqual([
      "http_server_request_total is not a metric the gateway exports",
    ]);
    expect(problemsOfQuery('sum(rate(http_server_requests_total{service="gatway"}[1m]))', exposition)).toEqual([
      'no http_server_requests_total series has service="gatway" (seen: gateway)',
    ]);
    expect(problemsOfQuery('sum(rate(http_server_requests_total{pod="x"}[1m]))', exposition)).toEqual([
      "http_server_requests_total has no label pod, and the Prometheus scrape config adds none by that name",
    ]);
  });
});

/** What in `q` the gateway's `/metrics` text does not back: unknown metrics, labels, values. */
function problemsOfQuery(q: string, exposition: string): string[] {
  const series = seriesOf(exposition);
  const added = relabelTargets(prometheusConfig);
  const problems: string[] = [];
  for (const { metric, matchers } of selectorsOf(q)) {
    const samples = series.get(metric);
    if (!samples) {
      problems.push(`${metric} is not a metric the gateway exports`);
      continue;
    }
    for (const { label, op, value } of matchers) {
      if (samples.some((s) => label in s)) {
        if (op === "=" && !samples.some((s) => s[label] === value))
          problems.push(
            `no ${metric} series has ${label}="${value}" (seen: ${[...new Set(samples.map((s) => s[label]))].join(", ")})`,
          );
      } else if (!added.has(label)) {
        problems.push(`${metric} has no label ${label}, and the Prometheus scrape config adds none by that name`);
      }
    }
  }
  return problems;
}

describe("shutdown timing", () => {
  test("preStop sleep + drain < terminationGracePeriodSeconds, the shutdown timeout fits too, and the drain outlasts the gateway's DNS refresh", () => {
    expect(checkDrainTiming(manifests).map(formatProblem)).toEqual([]);
    expect(gatewayRefreshMs(manifests)).toBe(5_000);
  });
});

describe("an edit that breaks autoscaling or the drain fails with file, line and field", () => {
  const validator = new StrictValidator(manifests);
  const strictProblems = async (edited: Manifest[]) =>
    (await validator.validate(edited.filter((m) => m.file === "k8s/autoscaling.yaml"))).problems.map(formatProblem);
  const cases: {
    what: string;
    file: string;
    from: string;
    to: string;
    check: (m: Manifest[]) => Problem[] | Promise<string[]>;
    expected: string;
  }[] = [
    {
      what: "minReplicas below 3",
      file: "k8s/autoscaling.yaml",
      from: "minReplicas: 3",
      to: "minReplicas: 2",
      check: checkAutoscaling,
      expected: "HorizontalPodAutoscaler/webapp spec.minReplicas: must be at least 3",
    },
    {
      what: "a ScaledObject aimed at a Deployment that does not exist",
      file: "k8s/autoscaling.yaml",
      from: "    name: gateway\n  pollingInterval",
      to: "    name: gatewy\n  pollingInterval",
      check: checkAutoscaling,
      expected: "ScaledObject/gateway spec.scaleTargetRef.name: targets Deployment/gatewy, which is not in k8s/",
    },
    {
      what: "replicas set again on an autoscaled Deployment",
      file: "k8s/webapp.yaml",
      from: "\n  revisionHistoryLimit:",
      to: "\n  replicas: 3\n  revisionHistoryLimit:",
      check: checkAutoscaling,
      expected:
        "Deployment/webapp spec.replicas: must not be set: HorizontalPodAutoscaler/webapp owns the replica count",
    },
    {
      what: "a second autoscaler on one Deployment",
      file: "k8s/autoscaling.yaml",
      from: "    name: rpcapp\n  minReplicas",
      to: "    name: webapp\n  minReplicas",
      check: checkAutoscaling,
      expected:
        "HorizontalPodAutoscaler/rpcapp spec.scaleTargetRef.name: Deployment/webapp is already scaled by HorizontalPodAutoscaler/webapp",
    },
    {
      what: "a drain delay not below the shutdown timeout",
      file: "k8s/rpcapp.yaml",
      from: 'name: DRAIN_DELAY_MS\n              value: "5000"',
      to: 'name: DRAIN_DELAY_MS\n              value: "15000"',
      check: checkDrainTiming,
      expected:
        "Deployment/rpcapp spec.template.spec.containers[0].env: DRAIN_DELAY_MS 15000 must be below SHUTDOWN_TIMEOUT_MS 15000",
    },
    {
      what: "no drain: the gateway may still send after the listener closed",
      file: "k8s/webapp.yaml",
      from: 'name: DRAIN_DELAY_MS\n              value: "5000"',
      to: 'name: DRAIN_DELAY_MS\n              value: "0"',
      check: checkDrainTiming,
      expected:
        "Deployment/webapp spec.template.spec.containers[0].env: preStop 5 s + DRAIN_DELAY_MS 0 ms ends before the gateway re-resolves its upstreams (every 5000 ms)",
    },
    {
      what: "a preStop sleep that eats the grace period",
      file: "k8s/gateway.yaml",
      from: "sleep:\n                seconds: 5",
      to: "sleep:\n                seconds: 26",
      check: checkDrainTiming,
      expected:
        "Deployment/gateway spec.template.spec.containers[0].lifecycle.preStop.sleep.seconds: preStop 26 s + DRAIN_DELAY_MS 5000 ms reaches the 30 s grace period",
    },
    {
      what: "a misspelt ScaledObject key",
      file: "k8s/autoscaling.yaml",
      from: "minReplicaCount: 3",
      to: "minReplicaCont: 3",
      check: strictProblems,
      expected: "ScaledObject/gateway spec.minReplicaCont: unknown field",
    },
    {
      what: "a number where KEDA wants a string",
      file: "k8s/autoscaling.yaml",
      from: 'threshold: "50"',
      to: "threshold: 50",
      check: strictProblems,
      expected: "ScaledObject/gateway spec.triggers[1].metadata.threshold: Expected string",
    },
    {
      what: "a misspelt Prometheus trigger setting",
      file: "k8s/autoscaling.yaml",
      from: "serverAddress:",
      to: "serverAdress:",
      check: strictProblems,
      expected: "ScaledObject/gateway spec.triggers[1].metadata.serverAdress: unknown prometheus trigger metadata",
    },
  ];

  test.each(cases)("$what ($file)", async ({ file, from, to, check, expected }) => {
    const { manifests: edited } = withEdit(file, from, to);
    const raw = await check(edited);
    const problems = raw.map((p) => (typeof p === "string" ? p : formatProblem(p)));
    expect(problems).toContainEqual(expect.stringContaining(expected));
    expect(problems.find((p) => p.includes(expected))).toMatch(new RegExp(`^${file.replace(".", "\\.")}:\\d+: `));
  });
});

type Problem = ReturnType<typeof checkAutoscaling>[number];
