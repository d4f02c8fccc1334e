/**
 * The NetworkPolicies as the flows they allow. A connection from pod S to port P of pod D is
 * allowed when a policy selecting D admits S on P (ingress) AND a policy selecting S lets it out
 * to D on P (egress): with the namespace's default-deny both sides must say yes, and a rule
 * written on one side only does nothing. The check computes every allowed flow from the
 * manifests and compares it with EXPECTED_FLOWS, the list k8s/networkpolicy.yaml documents: a flow
 * missing breaks the stack, one too many is an opening nobody asked for.
 */
import type { INetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import type { INetworkPolicyPeer } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicyPeer";
import type { INetworkPolicyPort } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicyPort";
import {
  type Check,
  isEmptySelector,
  type LabelSelector,
  matchesSelector,
  ofKind,
  SELECTOR_OPERATORS,
  type Workload,
  workloadsOf,
} from "./cross-checks.ts";
import type { Manifest, Path, Problem } from "./manifests.ts";
import { problemAt } from "./manifests.ts";

/** Each flow the stack needs: `source -> destination:port` (a named containerPort, or number/protocol). */
export const EXPECTED_FLOWS: readonly string[] = [
  "(anywhere) -> gateway:http",
  "(anywhere) -> gateway:https",
  "gateway -> webapp:https",
  "gateway -> rpcapp:grpc",
  "gateway -> gateway:admin",
  "gateway -> redis-limiter:redis",
  "webapp -> redis-store:redis",
  "webapp -> redis-store:sentinel",
  "redis-store -> redis-store:redis",
  "redis-store -> redis-store:sentinel",
  "gateway -> otel-collector:otlp-http",
  "webapp -> otel-collector:otlp-http",
  "rpcapp -> otel-collector:otlp-http",
  "otel-collector -> jaeger:otlp-grpc",
  "prometheus -> gateway:admin",
  "prometheus -> webapp:metrics",
  "prometheus -> rpcapp:metrics",
  "prometheus -> alertmanager:http",
  "prometheus -> otel-collector:metrics",
  "prometheus -> jaeger:metrics",
  "prometheus -> (anywhere):443/TCP",
  "prometheus -> (anywhere):6443/TCP",
  "prometheus -> (anywhere):8443/TCP",
  // The rule above names ports only (the API server is no pod), so it reaches the gateway's HTTPS
  // port 8443 too: a port open to everyone anyway.
  "prometheus -> gateway:https",
  "alertmanager -> otel-collector:alerts",
  "grafana -> prometheus:http",
  "grafana -> jaeger:http",
  "(namespace keda) -> prometheus:http",
];

/** Every pod resolves names: these two flows are expected from each workload. */
export const DNS_FLOWS = [
  "(namespace kube-system, k8s-app=kube-dns):53/UDP",
  "(namespace kube-system, k8s-app=kube-dns):53/TCP",
];

interface Rule {
  m: Manifest;
  path: Path;
  peers: INetworkPolicyPeer[] | undefined;
  ports: INetworkPolicyPort[] | undefined;
}

const ANYWHERE = "(anywhere)";

/** `k=v,key In (a b),key` : a selector's terms, as a flow names them. */
function selectorTerms(selector: LabelSelector | undefined): string {
  return [
    ...Object.entries(selector?.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`),
    ...(selector?.matchExpressions ?? []).map(
      ({ key, operator, values }) => `${key} ${operator}${values?.length ? ` (${values.join(" ")})` : ""}`,
    ),
  ].join(",");
}

function peerName(peer: INetworkPolicyPeer): string {
  if (peer.ipBlock) return `(ipBlock ${peer.ipBlock.cidr})`;
  const byName = peer.namespaceSelector?.matchLabels?.["kubernetes.io/metadata.name"];
  const ns =
    byName && selectorTerms(peer.namespaceSelector) === `kubernetes.io/metadata.name=${byName}`
      ? byName
      : isEmptySelector(peer.namespaceSelector)
        ? "any namespace"
        : `(${selectorTerms(peer.namespaceSelector)})`;
  const pods = selectorTerms(peer.podSelector);
  return `(namespace ${ns}${pods ? `, ${pods}` : ""})`;
}

function portLabel(p: INetworkPolicyPort): string {
  if (typeof p.port === "string") return p.port;
  const range = p.port !== undefined && p.endPort !== undefined ? `${p.port}-${p.endPort}` : `${p.port ?? "*"}`;
  return `${range}/${p.protocol ?? "TCP"}`;
}

/** Whether a rule's port entry admits a container port: by name, by number, in [port, endPort], or any (no port). */
function portMatches(p: INetworkPolicyPort, cp: { name?: string; number: number; protocol: string }): boolean {
  if ((p.protocol ?? "TCP") !== cp.protocol) return false;
  if (p.port === undefined) return true; // every port of the protocol
  if (typeof p.port === "string") return p.port === cp.name;
  return p.endPort === undefined ? p.port === cp.number : p.port <= cp.number && cp.number <= p.endPort;
}

/** The container ports of `w` a rule's port entries admit (all of them when it names none). */
function admittedPorts(w: Workload, ports: INetworkPolicyPort[] | undefined): { name?: string; number: number }[] {
  const all = w.containers.flatMap((c) =>
    (c.ports ?? []).map((p) => ({ name: p.name, number: p.containerPort, protocol: p.protocol ?? "TCP" })),
  );
  if (!ports || ports.length === 0) return all;
  return all.filter((cp) => ports.some((p) => portMatches(p, cp)));
}

function rulesOf(manifests: Manifest[], w: Workload, kind: "ingress" | "egress"): Rule[] | undefined {
  const policyType = kind === "ingress" ? "Ingress" : "Egress";
  // The policy's own podSelector picks the pods it isolates: `{}` (the default-deny) picks them all.
  const policies = ofKind<INetworkPolicy>(manifests, "NetworkPolicy").filter(
    ({ o }) =>
      matchesSelector(o.spec?.podSelector ?? {}, w.podLabels) &&
      (o.spec?.policyTypes ?? ["Ingress"]).includes(policyType),
  );
  if (policies.length === 0) return undefined; // not isolated in this direction: everything allowed
  return policies.flatMap(({ m, o }) =>
    (o.spec?.[kind] ?? []).map((rule, i) => ({
      m,
      path: ["spec", kind, i],
      peers:
        kind === "ingress"
          ? (rule as { from?: INetworkPolicyPeer[] }).from
          : (rule as { to?: INetworkPolicyPeer[] }).to,
      ports: rule.ports,
    })),
  );
}

/**
 * Whether a peer admits a pod of this namespace: a podSelector alone does (`{}` selects every pod);
 * a namespaceSelector or ipBlock peer counts as outside (allowedFlows names it as such).
 */
function admitsPod(peer: INetworkPolicyPeer, w: Workload): boolean {
  return !peer.namespaceSelector && !peer.ipBlock && matchesSelector(peer.podSelector, w.podLabels);
}

/** A selector the API server would reject, or one this check would misread. */
function selectorProblems(m: Manifest, path: Path, selector: LabelSelector | undefined): Problem[] {
  return (selector?.matchExpressions ?? []).flatMap(({ operator, values }, i) => {
    const at = (message: string) => [problemAt(m, [...path, "matchExpressions", i], message)];
    if (!(SELECTOR_OPERATORS as readonly string[]).includes(operator))
      return at(`operator "${operator}" is not one of ${SELECTOR_OPERATORS.join(", ")}`);
    const needsValues = operator === "In" || operator === "NotIn";
    if (needsValues !== (values ?? []).length > 0)
      return at(`${operator} ${needsValues ? "needs values" : "takes no values"}`);
    return [];
  });
}

export interface Flow {
  flow: string;
  /** The rule that opens it (the destination's ingress rule, or the source's egress rule for a flow out of the namespace). */
  rule?: Rule;
}

/** Every flow the policies allow, as `source -> destination:port`. */
export function allowedFlows(manifests: Manifest[]): Flow[] {
  const workloads = workloadsOf(manifests);
  const flows = new Map<string, Flow>();
  const add = (flow: string, rule?: Rule) => {
    if (!flows.has(flow)) flows.set(flow, { flow, rule });
  };
  for (const dst of workloads) {
    const ingress = rulesOf(manifests, dst, "ingress");
    for (const src of workloads) {
      const egress = rulesOf(manifests, src, "egress");
      for (const port of admittedPorts(dst, undefined)) {
        const label = port.name ?? `${port.number}/TCP`;
        const inRule = ingress
          ? ingress.find(
              (r) =>
                (!r.peers || r.peers.length === 0 || r.peers.some((p) => admitsPod(p, src))) &&
                admittedPorts(dst, r.ports).some((p) => p.number === port.number),
            )
          : undefined;
        const inOk = !ingress || inRule !== undefined;
        const outOk =
          !egress ||
          egress.some(
            (r) =>
              (!r.peers || r.peers.length === 0 || r.peers.some((p) => admitsPod(p, dst))) &&
              admittedPorts(dst, r.ports).some((p) => p.number === port.number),
          );
        if (inOk && outOk) add(`${src.name} -> ${dst.name}:${label}`, inRule);
      }
    }
    // From outside the namespace's pods: a rule with no `from`, or a namespace/ipBlock peer.
    for (const r of ingress ?? [{ m: dst.m, path: [], peers: undefined, ports: undefined }]) {
      const outside =
        !r.peers || r.peers.length === 0
          ? [ANYWHERE]
          : r.peers.filter((p) => !admitsPod(p, dst) && (p.namespaceSelector || p.ipBlock)).map(peerName);
      for (const from of outside)
        for (const port of admittedPorts(dst, r.ports))
          add(`${from} -> ${dst.name}:${port.name ?? `${port.number}/TCP`}`, r);
    }
  }
  // To outside the namespace's pods: a rule with no `to`, or a namespace/ipBlock peer.
  for (const src of workloads) {
    for (const r of rulesOf(manifests, src, "egress") ?? [{ m: src.m, path: [], peers: undefined, ports: undefined }]) {
      const outside =
        !r.peers || r.peers.length === 0
          ? [ANYWHERE]
          : r.peers.filter((p) => p.namespaceSelector || p.ipBlock).map(peerName);
      for (const to of outside)
        for (const p of r.ports && r.ports.length > 0 ? r.ports : [{}]) add(`${src.name} -> ${to}:${portLabel(p)}`, r);
    }
  }
  return [...flows.values()];
}

export function expectedFlows(manifests: Manifest[]): string[] {
  const dns = workloadsOf(manifests).flatMap((w) => DNS_FLOWS.map((d) => `${w.name} -> ${d}`));
  return [...EXPECTED_FLOWS, ...dns];
}

/**
 * Default-deny in both directions, each policy selects pods that exist, its named ports exist,
 * and the flows allowed are exactly the expected ones.
 */
export const checkNetworkPolicies: Check = (manifests) => {
  const problems: Problem[] = [];
  const policies = ofKind<INetworkPolicy>(manifests, "NetworkPolicy");
  const workloads = workloadsOf(manifests);
  const denyAll = policies.find(
    ({ o }) =>
      isEmptySelector(o.spec?.podSelector) &&
      (["Ingress", "Egress"] as const).every((t) => o.spec?.policyTypes?.includes(t)) &&
      !o.spec?.ingress?.length &&
      !o.spec?.egress?.length,
  );
  if (!denyAll)
    problems.push({
      file: "k8s/networkpolicy.yaml",
      object: "NetworkPolicy/default-deny",
      field: "",
      message:
        "no policy denies all ingress AND egress for every pod (podSelector {}, policyTypes [Ingress, Egress], no rules)",
    });
  for (const { m, o } of policies) {
    const selector = o.spec?.podSelector ?? {};
    problems.push(...selectorProblems(m, ["spec", "podSelector"], selector));
    if (!isEmptySelector(selector) && !workloads.some((w) => matchesSelector(selector, w.podLabels)))
      problems.push(problemAt(m, ["spec", "podSelector"], "selects no pods of any workload in k8s/"));
    for (const kind of ["ingress", "egress"] as const) {
      (o.spec?.[kind] ?? []).forEach((rule, i) => {
        const peers =
          kind === "ingress"
            ? (rule as { from?: INetworkPolicyPeer[] }).from
            : (rule as { to?: INetworkPolicyPeer[] }).to;
        (peers ?? []).forEach((peer, j) => {
          const at: Path = ["spec", kind, i, kind === "ingress" ? "from" : "to", j];
          problems.push(...selectorProblems(m, [...at, "podSelector"], peer.podSelector));
          problems.push(...selectorProblems(m, [...at, "namespaceSelector"], peer.namespaceSelector));
        });
        // A named port is looked up on the receiving pods: the selected ones for ingress, the peers for egress.
        const receivers =
          kind === "ingress"
            ? workloads.filter((w) => matchesSelector(selector, w.podLabels))
            : workloads.filter((w) => (peers ?? []).some((p) => admitsPod(p, w)));
        (rule.ports ?? []).forEach((p, j) => {
          if (p.endPort !== undefined && (typeof p.port !== "number" || p.endPort < p.port))
            problems.push(
              problemAt(
                m,
                ["spec", kind, i, "ports", j, "endPort"],
                "needs a numeric port no greater than it (the API server rejects a named port with an endPort)",
              ),
            );
          if (typeof p.port !== "string") return;
          if (!receivers.some((w) => w.containers.some((c) => (c.ports ?? []).some((cp) => cp.name === p.port))))
            problems.push(
              problemAt(
                m,
                ["spec", kind, i, "ports", j, "port"],
                `"${p.port}" is not a named containerPort of ${receivers.map((w) => w.name).join(", ") || "any pod it admits"}`,
              ),
            );
        });
      });
    }
  }
  const allowed = allowedFlows(manifests);
  const expected = new Set(expectedFlows(manifests));
  for (const { flow, rule } of allowed) {
    if (expected.has(flow)) continue;
    const where = rule
      ? problemAt(rule.m, rule.path, "")
      : { file: "k8s/networkpolicy.yaml", object: "", field: "", message: "" };
    problems.push({
      ...where,
      message: `allows ${flow}, which is not one of the flows k8s/networkpolicy.yaml lists (k8s/test/checks/network-policies.ts EXPECTED_FLOWS)${flow.startsWith(ANYWHERE) ? ": it lets any pod, or anyone outside, in" : ""}`,
    });
  }
  const allowedSet = new Set(allowed.map((f) => f.flow));
  for (const flow of expected)
    if (!allowedSet.has(flow))
      problems.push({
        file: "k8s/networkpolicy.yaml",
        object: "",
        field: "",
        message: `${flow} is needed but not allowed: it needs the destination's ingress AND the source's egress`,
      });
  return problems;
};
