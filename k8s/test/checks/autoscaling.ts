/**
 * What autoscaling and zero-downtime shutdown need from the manifests, beyond any schema:
 * every Portico Deployment is scaled by exactly one autoscaler, from at least 3 replicas, and sets
 * no `replicas` of its own; autoscalers target Deployments that exist and scale on what the pods
 * request; the shutdown (preStop → SIGTERM → drain → stop) fits in the grace period and outlasts
 * the gateway's discovery. Plus the PromQL and Prometheus-exposition reading the tests use to
 * check that the request-rate query names what the gateway really exports.
 */
import type { IHorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import type { IDeployment } from "kubernetes-models/apps/v1/Deployment";
import type { IConfigMap } from "kubernetes-models/v1/ConfigMap";
import { parse as parseYaml } from "yaml";
import { SERVICES } from "../../../scripts/cluster/images.ts";
import type { ScaledObject } from "./custom-resources.ts";
import { type Manifest, type Path, type Problem, problemAt } from "./manifests.ts";

export const MIN_REPLICAS = 3;

export interface Autoscaler {
  m: Manifest;
  kind: "HorizontalPodAutoscaler" | "ScaledObject";
  target: { apiVersion: string; kind: string; name: string };
  min: number;
  max: number;
  /** Where its minimum is written, for messages. */
  minPath: Path;
}

export function autoscalersOf(manifests: Manifest[]): Autoscaler[] {
  const out: Autoscaler[] = [];
  for (const m of manifests) {
    if (m.object.kind === "HorizontalPodAutoscaler") {
      const hpa = m.object as unknown as IHorizontalPodAutoscaler;
      const ref = hpa.spec?.scaleTargetRef;
      out.push({
        m,
        kind: "HorizontalPodAutoscaler",
        target: { apiVersion: ref?.apiVersion ?? "", kind: ref?.kind ?? "", name: ref?.name ?? "" },
        min: hpa.spec?.minReplicas ?? 1,
        max: hpa.spec?.maxReplicas ?? 0,
        minPath: ["spec", "minReplicas"],
      });
    } else if (m.object.kind === "ScaledObject") {
      const so = m.object as unknown as ScaledObject;
      const ref = so.spec?.scaleTargetRef;
      // KEDA's defaults: apps/v1 Deployment, 0 to 100 replicas.
      out.push({
        m,
        kind: "ScaledObject",
        target: { apiVersion: ref?.apiVersion ?? "apps/v1", kind: ref?.kind ?? "Deployment", name: ref?.name ?? "" },
        min: so.spec?.minReplicaCount ?? 0,
        max: so.spec?.maxReplicaCount ?? 100,
        minPath: ["spec", "minReplicaCount"],
      });
    }
  }
  return out;
}

/** Whether an autoscaler in `manifests` targets Deployment `name` (it then owns the replica count). */
export function isAutoscaled(manifests: Manifest[], name: string): boolean {
  return autoscalersOf(manifests).some((a) => a.target.kind === "Deployment" && a.target.name === name);
}

function deployments(manifests: Manifest[]): { m: Manifest; d: IDeployment }[] {
  return manifests
    .filter((m) => m.object.kind === "Deployment")
    .map((m) => ({ m, d: m.object as unknown as IDeployment }));
}

/** Every autoscaler targets a Deployment here; each of Portico's is scaled by exactly one, from ≥ 3, with no replicas of its own. */
export function checkAutoscaling(manifests: Manifest[]): Problem[] {
  const problems: Problem[] = [];
  const scalers = autoscalersOf(manifests);
  const byName = new Map(deployments(manifests).map((x) => [String(x.d.metadata?.name), x]));
  for (const a of scalers) {
    const at = (path: Path, message: string) => problems.push(problemAt(a.m, path, message));
    const refPath: Path = ["spec", "scaleTargetRef"];
    if (a.target.kind !== "Deployment" || a.target.apiVersion !== "apps/v1")
      at(
        [...refPath, "kind"],
        `targets ${a.target.apiVersion} ${a.target.kind}; Portico's workloads are apps/v1 Deployments`,
      );
    else if (!byName.has(a.target.name))
      at(
        [...refPath, "name"],
        `targets Deployment/${a.target.name}, which is not in k8s/ (${[...byName.keys()].join(", ")})`,
      );
    if (a.min < MIN_REPLICAS)
      at(a.minPath, `must be at least ${MIN_REPLICAS}: the stack runs 3 replicas of everything, whatever the load`);
    if (a.max < a.min)
      at(
        a.kind === "ScaledObject" ? ["spec", "maxReplicaCount"] : ["spec", "maxReplicas"],
        `is below the minimum (${a.min})`,
      );
  }
  for (const service of SERVICES) {
    const deployment = byName.get(service);
    if (!deployment) continue;
    const mine = scalers.filter((a) => a.target.kind === "Deployment" && a.target.name === service);
    if (mine.length === 0)
      problems.push(
        problemAt(
          deployment.m,
          ["metadata", "name"],
          "no HorizontalPodAutoscaler or ScaledObject in k8s/ scales this Deployment",
        ),
      );
    if (mine.length > 1) {
      problems.push(
        problemAt(
          mine[1]!.m,
          ["spec", "scaleTargetRef", "name"],
          `Deployment/${service} is already scaled by ${mine[0]!.kind}/${mine[0]!.m.object.metadata?.name}: two autoscalers fight over one replica count`,
        ),
      );
    }
    if (mine.length > 0 && deployment.d.spec?.replicas !== undefined) {
      problems.push(
        problemAt(
          deployment.m,
          ["spec", "replicas"],
          `must not be set: ${mine[0]!.kind}/${mine[0]!.m.object.metadata?.name} owns the replica count, and every \`kubectl apply\` would reset it`,
        ),
      );
    }
  }
  return problems;
}

/** HPAs on CPU utilisation need a CPU request on every container of their target. */
export function checkCpuTargets(manifests: Manifest[]): Problem[] {
  const problems: Problem[] = [];
  const byName = new Map(deployments(manifests).map((x) => [String(x.d.metadata?.name), x]));
  for (const a of autoscalersOf(manifests)) {
    const usesCpu =
      a.kind === "HorizontalPodAutoscaler"
        ? ((a.m.object as unknown as IHorizontalPodAutoscaler).spec?.metrics ?? []).some(
            (metric) => metric.type === "Resource" && metric.resource?.name === "cpu",
          )
        : (a.m.object as unknown as ScaledObject).spec.triggers.some((t) => t.type === "cpu");
    if (!usesCpu) {
      problems.push(
        problemAt(
          a.m,
          a.kind === "ScaledObject" ? ["spec", "triggers"] : ["spec", "metrics"],
          "scales on no CPU metric (every Portico service scales on CPU)",
        ),
      );
      continue;
    }
    const target = byName.get(a.target.name);
    (target?.d.spec?.template.spec?.containers ?? []).forEach((c, i) => {
      if (c.resources?.requests?.cpu === undefined)
        problems.push(
          problemAt(
            target!.m,
            ["spec", "template", "spec", "containers", i, "resources", "requests", "cpu"],
            `must be set: ${a.kind}/${a.m.object.metadata?.name} scales on CPU utilisation, a share of this request`,
          ),
        );
    });
  }
  return problems;
}

/** How often the gateway re-resolves its upstreams' names: the slowest upstream in the routes ConfigMap (default from gateway/src/config/schema.ts). */
export function gatewayRefreshMs(manifests: Manifest[]): number {
  const cm = manifests.find((m) => m.object.kind === "ConfigMap" && m.object.metadata?.name === "gateway-routes");
  const routes = parseYaml((cm?.object as unknown as IConfigMap | undefined)?.data?.["routes.yaml"] ?? "{}") as {
    upstreams?: Record<string, { discovery?: { refreshMs?: number } }>;
  };
  return Math.max(0, ...Object.values(routes.upstreams ?? {}).map((u) => u.discovery?.refreshMs ?? 5_000));
}

/**
 * The shutdown of each of Portico's pods (lib/lifecycle.ts): the kubelet runs preStop (sleep) and
 * removes the pod from the endpoints, then SIGTERM; the service turns not-ready and serves on for
 * DRAIN_DELAY_MS; SHUTDOWN_TIMEOUT_MS from SIGTERM bounds drain and stop. It must end before the
 * grace period's SIGKILL, and the time the pod still serves after leaving the endpoints
 * (preStop + drain) must outlast the gateway's DNS refresh, the way it learns the pod is gone.
 */
export function checkDrainTiming(manifests: Manifest[]): Problem[] {
  const problems: Problem[] = [];
  const refreshMs = gatewayRefreshMs(manifests);
  for (const { m, d } of deployments(manifests)) {
    if (!(SERVICES as readonly string[]).includes(String(d.metadata?.name))) continue;
    const podSpec = d.spec?.template.spec;
    const grace = podSpec?.terminationGracePeriodSeconds ?? 30;
    (podSpec?.containers ?? []).forEach((c, i) => {
      const at = (path: Path, message: string) =>
        problems.push(problemAt(m, ["spec", "template", "spec", "containers", i, ...path], message));
      const preStopS = c.lifecycle?.preStop?.sleep?.seconds;
      const env = (name: string) => Number(c.env?.find((e) => e.name === name)?.value);
      const drainMs = env("DRAIN_DELAY_MS");
      const shutdownMs = env("SHUTDOWN_TIMEOUT_MS");
      if (preStopS === undefined || !Number.isInteger(drainMs) || !Number.isInteger(shutdownMs)) {
        at(["lifecycle"], "needs a preStop sleep, DRAIN_DELAY_MS and SHUTDOWN_TIMEOUT_MS");
        return;
      }
      if (drainMs >= shutdownMs)
        at(
          ["env"],
          `DRAIN_DELAY_MS ${drainMs} must be below SHUTDOWN_TIMEOUT_MS ${shutdownMs}, which counts from SIGTERM and includes the drain (the service refuses to start otherwise)`,
        );
      if (preStopS * 1000 + drainMs >= grace * 1000)
        at(
          ["lifecycle", "preStop", "sleep", "seconds"],
          `preStop ${preStopS} s + DRAIN_DELAY_MS ${drainMs} ms reaches the ${grace} s grace period: SIGKILL before the drain ends`,
        );
      if (preStopS * 1000 + shutdownMs >= grace * 1000)
        at(
          ["env"],
          `preStop ${preStopS} s + SHUTDOWN_TIMEOUT_MS ${shutdownMs} ms reaches the ${grace} s grace period: the kubelet's SIGKILL would cut the shutdown short`,
        );
      if (preStopS * 1000 + drainMs <= refreshMs)
        at(
          ["env"],
          `preStop ${preStopS} s + DRAIN_DELAY_MS ${drainMs} ms ends before the gateway re-resolves its upstreams (every ${refreshMs} ms): it could still send here after the listener closed`,
        );
    });
  }
  return problems;
}

// ---- PromQL and the exposition format, as far as the checks need them ----------------------------

export interface Matcher {
  label: string;
  op: "=" | "!=" | "=~" | "!~";
  value: string;
}

/** PromQL words that are not metric names. */
const KEYWORDS = new Set([
  "by",
  "without",
  "on",
  "ignoring",
  "group_left",
  "group_right",
  "bool",
  "offset",
  "and",
  "or",
  "unless",
  "atan2",
  "inf",
  "nan",
]);

/**
 * The metric names a PromQL expression selects, with their label matchers. Strings, label
 * matchers and ranges are read; an identifier followed by `(` is a function or aggregation.
 */
export function selectorsOf(query: string): { metric: string; matchers: Matcher[] }[] {
  const out: { metric: string; matchers: Matcher[] }[] = [];
  const token = /"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\[[^\]]*\]|\{[^}]*\}|[A-Za-z_:][A-Za-z0-9_:]*|[\s\S]/g;
  const tokens = query.match(token) ?? [];
  let grouping = false;
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!;
    if (/^(by|without|on|ignoring|group_left|group_right)$/.test(t)) {
      grouping = true;
      continue;
    }
    if (t === "(" && grouping) {
      // `by (label, …)`: labels, not metrics.
      while (i < tokens.length && tokens[i] !== ")") i++;
      grouping = false;
      continue;
    }
    if (/^\s+$/.test(t)) continue;
    grouping = false;
    if (!/^[A-Za-z_:][A-Za-z0-9_:]*$/.test(t) || KEYWORDS.has(t)) continue;
    let j = i + 1;
    while (j < tokens.length && /^\s+$/.test(tokens[j]!)) j++;
    if (tokens[j] === "(") continue; // a function or an aggregation
    const braces = tokens[j]?.startsWith("{") ? tokens[j]! : "";
    out.push({ metric: t, matchers: matchersOf(braces) });
  }
  return out;
}

function matchersOf(braces: string): Matcher[] {
  const out: Matcher[] = [];
  for (const m of braces.matchAll(/([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"/g))
    out.push({ label: m[1]!, op: m[2] as Matcher["op"], value: m[3]! });
  return out;
}

/** Prometheus text exposition → metric name → the label sets of its samples (histogram parts under their family name too). */
export function seriesOf(exposition: string): Map<string, Record<string, string>[]> {
  const out = new Map<string, Record<string, string>[]>();
  for (const line of exposition.split("\n")) {
    const declared = /^# TYPE ([A-Za-z_:][A-Za-z0-9_:]*) /.exec(line);
    if (declared) {
      if (!out.has(declared[1]!)) out.set(declared[1]!, []);
      continue;
    }
    const sample = /^([A-Za-z_:][A-Za-z0-9_:]*)(\{([^}]*)\})?\s/.exec(line);
    if (!sample) continue;
    const labels: Record<string, string> = {};
    for (const l of (sample[3] ?? "").matchAll(/([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    const list = out.get(sample[1]!) ?? [];
    list.push(labels);
    out.set(sample[1]!, list);
  }
  return out;
}

/** Labels the Prometheus scrape config adds to the pods' series (relabel `target_label`s). */
export function relabelTargets(prometheusYml: string): Set<string> {
  const config = parseYaml(prometheusYml) as { scrape_configs?: { relabel_configs?: { target_label?: string }[] }[] };
  return new Set(
    (config.scrape_configs ?? [])
      .flatMap((s) => (s.relabel_configs ?? []).map((r) => r.target_label ?? ""))
      .filter((l) => l && !l.startsWith("__")),
  );
}
