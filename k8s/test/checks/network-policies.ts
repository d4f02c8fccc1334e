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
import { type Check, ofKind, selects, type Workload, workloadsOf } from "./cross-checks.ts";
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

function peerName(peer: INetworkPolicyPeer): string {
  if (peer.ipBlock) return `(ipBlock ${peer.ipBlock.cidr})`;
  const ns = peer.namespaceSelector?.matchLabels?.["kubernetes.io/metadata.name"] ?? "any namespace";
  const pods = Object.entries(peer.podSelector?.matchLabels ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
  return `(namespace ${ns}${pods ? `, ${pods}` : ""})`;
}

function portLabel(p: INetworkPolicyPort): string {
  return typeof p.port === "string" ? p.port : `${p.port ?? "*"}/${p.protocol ?? "TCP"}`;
}

/** The container ports of `w` a rule's port entries admit (all of them when it names none). */
function admittedPorts(w: Workload, ports: INetworkPolicyPort[] | undefined): { name?: string; number: number }[] {
  const all = w.containers.flatMap((c) =>
    (c.ports ?? []).map((p) => ({ name: p.name, number: p.containerPort, protocol: p.protocol ?? "TCP" })),
  );
  if (!ports || ports.length === 0) return all;
  return all.filter((cp) =>
    ports.some(
      (p) =>
        (p.protocol ?? "TCP") === cp.protocol &&
        (typeof p.port === "string" ? p.port === cp.name : p.port === cp.number),
    ),
  );
}

function rulesOf(manifests: Manifest[], w: Workload, kind: "ingress" | "egress"): Rule[] | undefined {
  const policyType = kind === "ingress" ? "Ingress" : "Egress";
  const policies = ofKind<INetworkPolicy>(manifests, "NetworkPolicy").filter(({ o }) => {
    const selector = o.spec?.podSelector?.matchLabels ?? {};
    const all = Object.keys(selector).length === 0 && !o.spec?.podSelector?.matchExpressions;
    return (all || selects(selector, w.podLabels)) && (o.spec?.policyTypes ?? ["Ingress"]).includes(policyType);
  });
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

function admitsPod(peer: INetworkPolicyPeer, w: Workload): boolean {
  return !peer.namespaceSelector && !peer.ipBlock && selects(peer.podSelector?.matchLabels, w.podLabels);
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
      Object.keys(o.spec?.podSelector?.matchLabels ?? {}).length === 0 &&
      !o.spec?.podSelector?.matchExpressions &&
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
    const selector = o.spec?.podSelector?.matchLabels ?? {};
    if (Object.keys(selector).length > 0 && !workloads.some((w) => selects(selector, w.podLabels)))
      problems.push(problemAt(m, ["spec", "podSelector"], "selects no pods of any workload in k8s/"));
    for (const kind of ["ingress", "egress"] as const) {
      (o.spec?.[kind] ?? []).forEach((rule, i) => {
        const peers =
          kind === "ingress"
            ? (rule as { from?: INetworkPolicyPeer[] }).from
            : (rule as { to?: INetworkPolicyPeer[] }).to;
        // A named port is looked up on the receiving pods: the selected ones for ingress, the peers for egress.
        const receivers =
          kind === "ingress"
            ? workloads.filter((w) => Object.keys(selector).length === 0 || selects(selector, w.podLabels))
            : workloads.filter((w) => (peers ?? []).some((p) => admitsPod(p, w)));
        (rule.ports ?? []).forEach((p, j) => {
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
