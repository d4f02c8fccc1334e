/**
 * The cluster's posture (checks/hardening.ts, checks/network-policies.ts): each check passes on
 * k8s/ as it is, and each gap review once found fails again, with file and line, when an edit
 * brings it back.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type Check, matchesSelector, PENDING_APP_ENV, sourcesOf } from "./checks/cross-checks.ts";
import {
  checkDisruptionBudgets,
  checkExposure,
  checkGrafana,
  checkImagesPatched,
  checkImagesPinned,
  checkMonitoringWiring,
  checkNoPlaintextCredentials,
  checkPodSecurityRestricted,
  checkRedis,
  checkSecretReferences,
  checkServiceAccounts,
  checkStartupProbes,
  checkTopologySpread,
  HARDENING_CHECKS,
} from "./checks/hardening.ts";
import { formatProblem, loadManifests, parseManifests, REPO_ROOT, withEdit, withEdits } from "./checks/manifests.ts";
import { allowedFlows, checkNetworkPolicies } from "./checks/network-policies.ts";

const manifests = loadManifests();

describe("k8s/ as it is", () => {
  test.each(Object.entries({ ...HARDENING_CHECKS, checkNetworkPolicies }))("%s finds nothing wrong", (_name, check) => {
    expect(check(manifests).map(formatProblem)).toEqual([]);
  });

  test("the policies allow the documented flows, and the walk is not vacuous", () => {
    const flows = allowedFlows(manifests).map((f) => f.flow);
    expect(flows).toContain("gateway -> redis-limiter:redis");
    expect(flows).toContain("prometheus -> gateway:admin");
    expect(flows).not.toContain("webapp -> redis-limiter:redis");
    expect(flows).not.toContain("webapp -> gateway:admin");
    expect(flows).not.toContain("(anywhere) -> gateway:admin");
    expect(flows).not.toContain("(anywhere) -> grafana:http");
  });
});

describe("label selectors, as the API server reads them (checks/cross-checks.ts matchesSelector)", () => {
  const pod = { "app.kubernetes.io/name": "webapp", tier: "backend" };
  test.each([
    ["{} selects every pod", {}, true],
    ["a missing selector selects none", undefined, false],
    ["matchLabels, all of them", { matchLabels: { "app.kubernetes.io/name": "webapp", tier: "backend" } }, true],
    ["matchLabels, one differing", { matchLabels: { "app.kubernetes.io/name": "webapp", tier: "db" } }, false],
    ["In", { matchExpressions: [{ key: "tier", operator: "In", values: ["db", "backend"] }] }, true],
    ["In, no value matching", { matchExpressions: [{ key: "tier", operator: "In", values: ["db"] }] }, false],
    ["NotIn", { matchExpressions: [{ key: "tier", operator: "NotIn", values: ["db"] }] }, true],
    ["NotIn, on a missing label", { matchExpressions: [{ key: "zone", operator: "NotIn", values: ["a"] }] }, true],
    ["NotIn, the value listed", { matchExpressions: [{ key: "tier", operator: "NotIn", values: ["backend"] }] }, false],
    ["Exists", { matchExpressions: [{ key: "tier", operator: "Exists" }] }, true],
    ["DoesNotExist", { matchExpressions: [{ key: "tier", operator: "DoesNotExist" }] }, false],
    [
      "matchLabels AND matchExpressions",
      { matchLabels: { tier: "backend" }, matchExpressions: [{ key: "zone", operator: "Exists" }] },
      false,
    ],
    ["an unknown operator", { matchExpressions: [{ key: "tier", operator: "Equals", values: ["backend"] }] }, false],
  ] as const)("%s", (_what, selector, expected) => {
    expect(matchesSelector(selector as Parameters<typeof matchesSelector>[0], pod)).toBe(expected);
  });
});

interface Gap {
  gap: string;
  file: string;
  from: string;
  to: string;
  /** Further edits to the same file, made after the first: a flow needs both of its sides. */
  also?: { from: string; to: string }[];
  check: Check;
  /** A problem (or each of several) the edited manifests must show. */
  expected: string | string[];
}

const gaps: Gap[] = [
  // Redis
  {
    gap: "Redis without authentication (protected mode off)",
    file: "k8s/redis-limiter.yaml",
    from: "            - --port\n",
    to: '            - --protected-mode\n            - "no"\n            - --port\n',
    check: checkRedis,
    expected: "Deployment/redis-limiter spec.template.spec.containers[0].args: protected mode off",
  },
  {
    gap: "Redis without its ACL file",
    file: "k8s/redis-limiter.yaml",
    from: "            - --aclfile\n            - /etc/redis/acl/users.acl\n",
    to: "",
    check: checkRedis,
    expected: "Deployment/redis-limiter spec.template.spec.containers: Redis must load its users from an ACL file",
  },
  {
    gap: "a Redis image before the CVE-2025-49844 fix",
    file: "k8s/redis-limiter.yaml",
    from: "image: redis:7.2.12-alpine",
    to: "image: redis:7.2.10-alpine",
    check: checkImagesPatched,
    expected: "redis:7.2.10-alpine predates the fix for CVE-2025-49844",
  },
  {
    gap: "the limiter's Redis persisting to disk",
    file: "k8s/redis-limiter.yaml",
    from: '            - --appendonly\n            - "no"',
    to: '            - --appendonly\n            - "yes"',
    check: checkRedis,
    expected: "the limiter keeps nothing on disk",
  },
  {
    gap: "the store's Redis back to a single pod",
    file: "k8s/redis-store.yaml",
    from: "  replicas: 3",
    to: "  replicas: 1",
    check: checkRedis,
    expected: "StatefulSet/redis-store spec.replicas: the store runs as a StatefulSet of 3",
  },
  {
    gap: "a Sentinel quorum of one",
    file: "k8s/redis-store.yaml",
    from: "portico ${master} 6379 2",
    to: "portico ${master} 6379 1",
    check: checkRedis,
    expected: "the Sentinels' quorum must be 2 of 3, not 1",
  },
  {
    gap: "the store's Redis given data up to its whole memory limit (a fork would be killed)",
    file: "k8s/redis-store.yaml",
    from: 'echo "maxmemory 96mb"',
    to: 'echo "maxmemory 256mb"',
    check: checkRedis,
    expected:
      "StatefulSet/redis-store spec.template.spec.containers[0].resources.limits.memory: the store's Redis can need 2 × maxmemory",
  },
  {
    gap: "the store's replica output buffers left at Redis's default (256 MB each)",
    file: "k8s/redis-store.yaml",
    from: '      echo "client-output-buffer-limit replica 32mb 16mb 60"\n',
    to: "",
    check: checkRedis,
    expected: "the store's Redis must cap its replicas' output buffers",
  },
  {
    gap: "the limiter's Redis with more data than its memory limit",
    file: "k8s/redis-limiter.yaml",
    from: "            - --maxmemory\n            - 192mb",
    to: "            - --maxmemory\n            - 250mb",
    check: checkRedis,
    expected:
      "the limiter's Redis needs --maxmemory (250 MiB) + 32 MiB for the process within its memory limit (256 MiB)",
  },
  {
    gap: "any pod reaching the limiter's Redis",
    file: "k8s/networkpolicy.yaml",
    from: "  ingress:\n    - from:\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: gateway\n      ports:\n        - port: redis",
    to: "  ingress:\n    - ports:\n        - port: redis",
    check: checkNetworkPolicies,
    expected: "NetworkPolicy/redis-limiter spec.ingress[0]: allows (anywhere) -> redis-limiter:redis",
  },
  {
    gap: "a peer podSelector: {} on both sides (every pod of the namespace) opening gateway -> redis-store",
    file: "k8s/networkpolicy.yaml",
    from: "  egress:\n    - to:\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: webapp\n",
    to: "  egress:\n    - to:\n        - podSelector: {}\n    - to:\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: webapp\n",
    also: [
      {
        from: "  ingress:\n    - from:\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: webapp\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: redis-store\n",
        to: "  ingress:\n    - from:\n        - podSelector: {}\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: webapp\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: redis-store\n",
      },
    ],
    check: checkNetworkPolicies,
    expected: [
      "NetworkPolicy/redis-store spec.ingress[0]: allows gateway -> redis-store:redis,",
      "NetworkPolicy/redis-store spec.ingress[0]: allows gateway -> redis-store:sentinel,",
    ],
  },
  {
    gap: "gateway -> webapp widened to a port range (endPort 9999 takes in webapp's plain metrics port 9090)",
    file: "k8s/networkpolicy.yaml",
    from: "              app.kubernetes.io/name: webapp\n      ports:\n        - port: https\n",
    to: "              app.kubernetes.io/name: webapp\n      ports:\n        - port: 8080\n          endPort: 9999\n",
    also: [
      {
        from: "              app.kubernetes.io/name: gateway\n      ports:\n        - port: https\n",
        to: "              app.kubernetes.io/name: gateway\n      ports:\n        - port: 8080\n          endPort: 9999\n",
      },
    ],
    check: checkNetworkPolicies,
    expected: "NetworkPolicy/webapp spec.ingress[0]: allows gateway -> webapp:metrics,",
  },
  {
    gap: "peers selecting by matchExpressions (Exists, NotIn) opening webapp -> redis-limiter",
    file: "k8s/networkpolicy.yaml",
    from: "      ports:\n        - port: redis\n          protocol: TCP\n        - port: sentinel\n          protocol: TCP\n",
    to: "      ports:\n        - port: redis\n          protocol: TCP\n        - port: sentinel\n          protocol: TCP\n    - to:\n        - podSelector:\n            matchExpressions:\n              - {key: app.kubernetes.io/name, operator: Exists}\n      ports:\n        - port: redis\n          protocol: TCP\n",
    also: [
      {
        from: "  ingress:\n    - from:\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: gateway\n      ports:\n        - port: redis\n",
        to: "  ingress:\n    - from:\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: gateway\n        - podSelector:\n            matchExpressions:\n              - {key: app.kubernetes.io/name, operator: NotIn, values: [grafana]}\n      ports:\n        - port: redis\n",
      },
    ],
    check: checkNetworkPolicies,
    expected: "NetworkPolicy/redis-limiter spec.ingress[0]: allows webapp -> redis-limiter:redis,",
  },
  {
    gap: "a selector operator the API server does not know",
    file: "k8s/networkpolicy.yaml",
    from: "  podSelector:\n    matchLabels:\n      app.kubernetes.io/name: jaeger\n",
    to: "  podSelector:\n    matchExpressions:\n      - {key: app.kubernetes.io/name, operator: Equals, values: [jaeger]}\n",
    check: checkNetworkPolicies,
    expected:
      'NetworkPolicy/jaeger spec.podSelector.matchExpressions[0]: operator "Equals" is not one of In, NotIn, Exists, DoesNotExist',
  },
  // The Kubernetes API: tokens and RBAC
  {
    gap: "Prometheus' Role widened to secrets and every verb",
    file: "k8s/monitoring/prometheus.yaml",
    from: "    resources: [pods]\n    verbs: [get, list, watch]\n",
    to: '    resources: [pods, secrets]\n    verbs: ["*"]\n',
    check: checkServiceAccounts,
    expected: [
      "Role/prometheus-discovery rules[0].resources: [pods, secrets]: a Role here reads [pods] only",
      "Role/prometheus-discovery rules[0].verbs: [*]: a Role here is read-only, verbs within [get, list, watch]",
    ],
  },
  {
    gap: "a Role over another API group",
    file: "k8s/monitoring/prometheus.yaml",
    from: '  - apiGroups: [""]\n    resources: [pods]',
    to: '  - apiGroups: ["", apps]\n    resources: [pods]',
    check: checkServiceAccounts,
    expected: 'Role/prometheus-discovery rules[0].apiGroups: ["", apps]: a Role here reads the core API group only',
  },
  {
    gap: "webapp's pods mounting an API token",
    file: "k8s/webapp.yaml",
    from: "      automountServiceAccountToken: false\n",
    to: "      automountServiceAccountToken: true\n",
    check: checkServiceAccounts,
    expected: "Deployment/webapp spec.template.spec.automountServiceAccountToken: must be false",
  },
  {
    gap: "the gateway's pods left with the default token (automountServiceAccountToken unset)",
    file: "k8s/gateway.yaml",
    from: "      automountServiceAccountToken: false # nothing here calls the Kubernetes API\n",
    to: "",
    check: checkServiceAccounts,
    expected: "Deployment/gateway spec.template.spec.automountServiceAccountToken: must be false",
  },
  {
    gap: "Prometheus' token under the namespace's default ServiceAccount",
    file: "k8s/monitoring/prometheus.yaml",
    from: "      serviceAccountName: prometheus\n",
    to: "",
    check: checkServiceAccounts,
    expected: "Deployment/prometheus spec.template.spec.serviceAccountName: prometheus mounts an API token",
  },
  {
    gap: "Prometheus' discovery made cluster-wide (ClusterRole and ClusterRoleBinding)",
    file: "k8s/monitoring/prometheus.yaml",
    from: "kind: Role\nmetadata:\n  name: prometheus-discovery\n",
    to: "kind: ClusterRole\nmetadata:\n  name: prometheus-discovery\n",
    also: [{ from: "kind: RoleBinding\n", to: "kind: ClusterRoleBinding\n" }],
    check: checkServiceAccounts,
    expected: [
      "ClusterRole/prometheus-discovery kind: a ClusterRole grants access across the cluster",
      "ClusterRoleBinding/prometheus-discovery kind: a ClusterRoleBinding grants access across the cluster",
    ],
  },
  {
    gap: "a RoleBinding to the built-in ClusterRole admin",
    file: "k8s/monitoring/prometheus.yaml",
    from: "  kind: Role\n  name: prometheus-discovery\n",
    to: "  kind: ClusterRole\n  name: admin\n",
    check: checkServiceAccounts,
    expected:
      "RoleBinding/prometheus-discovery roleRef: must name one of k8s/'s Roles (prometheus-discovery), not ClusterRole/admin",
  },
  {
    gap: "a RoleBinding to another namespace's ServiceAccount",
    file: "k8s/monitoring/prometheus.yaml",
    from: "  - kind: ServiceAccount\n    name: prometheus\n    namespace: portico\n",
    to: "  - kind: ServiceAccount\n    name: prometheus\n    namespace: kube-system\n",
    check: checkServiceAccounts,
    expected:
      "RoleBinding/prometheus-discovery subjects[0]: ServiceAccount kube-system/prometheus: bind only ServiceAccounts of namespace portico",
  },
  // Client addresses
  {
    gap: "the gateway's NodePort rewriting client addresses (externalTrafficPolicy Cluster)",
    file: "k8s/gateway.yaml",
    from: "  externalTrafficPolicy: Local\n",
    to: "",
    check: checkExposure,
    expected: "Service/gateway spec.externalTrafficPolicy: must be Local",
  },
  // Admin surfaces
  {
    gap: "the gateway's admin port open to any pod",
    file: "k8s/networkpolicy.yaml",
    from: "    - from:\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: prometheus\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: gateway\n      ports:\n        - port: admin",
    to: "    - ports:\n        - port: admin",
    check: checkNetworkPolicies,
    expected: "NetworkPolicy/gateway spec.ingress[1]: allows (anywhere) -> gateway:admin",
  },
  // Grafana
  {
    gap: "Grafana's anonymous viewers",
    file: "k8s/monitoring/grafana.yaml",
    from: 'name: GF_AUTH_ANONYMOUS_ENABLED\n              value: "false"',
    to: 'name: GF_AUTH_ANONYMOUS_ENABLED\n              value: "true"',
    check: checkGrafana,
    expected: 'GF_AUTH_ANONYMOUS_ENABLED must be "false"',
  },
  {
    gap: "Grafana's admin/admin (no password file)",
    file: "k8s/monitoring/grafana.yaml",
    from: "            - name: GF_SECURITY_ADMIN_PASSWORD__FILE\n              value: /etc/grafana/secret/admin-password\n",
    to: "",
    check: checkGrafana,
    expected: "GF_SECURITY_ADMIN_PASSWORD__FILE must name a file in a mounted Secret",
  },
  {
    gap: "a Grafana release before the CVE-2025-4123 fix",
    file: "k8s/monitoring/grafana.yaml",
    from: "image: grafana/grafana:12.4.5",
    to: "image: grafana/grafana:11.6.0",
    check: checkImagesPatched,
    expected: "grafana/grafana:11.6.0 predates the fix for CVE-2025-4123",
  },
  {
    gap: "Grafana on a NodePort",
    file: "k8s/monitoring/grafana.yaml",
    from: "spec:\n  type: ClusterIP",
    to: "spec:\n  type: NodePort",
    check: checkExposure,
    expected: "Service/grafana spec.type: a NodePort exposes grafana outside the cluster",
  },
  {
    gap: "Prometheus on a NodePort",
    file: "k8s/monitoring/prometheus.yaml",
    from: "spec:\n  type: ClusterIP",
    to: "spec:\n  type: NodePort",
    check: checkExposure,
    expected: "Service/prometheus spec.type: a NodePort exposes prometheus",
  },
  {
    gap: "Jaeger's UI on a NodePort",
    file: "k8s/monitoring/jaeger.yaml",
    from: "spec:\n  type: ClusterIP",
    to: "spec:\n  type: NodePort",
    check: checkExposure,
    expected: "Service/jaeger spec.type: a NodePort exposes jaeger",
  },
  // Monitoring that tells nobody
  {
    gap: "Prometheus without Alertmanager",
    file: "k8s/monitoring/prometheus.yaml",
    from: "            - targets: [alertmanager:9093]",
    to: "            - targets: [alertmanagr:9093]",
    check: checkMonitoringWiring,
    expected: "alerting.alertmanagers must name the Alertmanager Service",
  },
  {
    gap: "Jaeger v1 (end of life)",
    file: "k8s/monitoring/jaeger.yaml",
    from: "image: jaegertracing/jaeger:2.21.0",
    to: "image: jaegertracing/all-in-one:1.65.0",
    check: checkImagesPatched,
    expected: "Jaeger v1 reached end of life",
  },
  {
    gap: "a service sending spans to Jaeger directly, around the collector",
    file: "k8s/webapp.yaml",
    from: "value: https://otel-collector:4318",
    to: "value: https://jaeger-collector:4318",
    check: checkMonitoringWiring,
    expected: "OTEL_EXPORTER_OTLP_ENDPOINT=https://jaeger-collector:4318 must be the OpenTelemetry Collector's Service",
  },
  {
    gap: "a collector without memory_limiter",
    file: "k8s/monitoring/otel-collector.yaml",
    from: "processors: [memory_limiter, batch]",
    to: "processors: [batch]",
    check: checkMonitoringWiring,
    expected: "the traces pipeline must start with memory_limiter",
  },
  // Posture
  {
    gap: "the namespace enforcing only baseline",
    file: "k8s/namespace.yaml",
    from: "pod-security.kubernetes.io/enforce: restricted",
    to: "pod-security.kubernetes.io/enforce: baseline",
    check: checkPodSecurityRestricted,
    expected: 'Namespace/portico metadata.labels["pod-security.kubernetes.io/enforce"]: must be "restricted"',
  },
  {
    gap: "a container allowed to escalate privileges",
    file: "k8s/monitoring/grafana.yaml",
    from: "allowPrivilegeEscalation: false",
    to: "allowPrivilegeEscalation: true",
    check: checkPodSecurityRestricted,
    expected:
      "Deployment/grafana spec.template.spec.containers[0].securityContext.allowPrivilegeEscalation: must be false",
  },
  {
    gap: "a hostPath volume",
    file: "k8s/monitoring/jaeger.yaml",
    from: "        - name: tmp\n          emptyDir:\n            sizeLimit: 16Mi",
    to: "        - name: tmp\n          hostPath:\n            path: /tmp",
    check: checkPodSecurityRestricted,
    expected: "volume type hostPath is not allowed",
  },
  {
    gap: "NetworkPolicies that isolate ingress only (no default-deny egress)",
    file: "k8s/networkpolicy.yaml",
    from: "  podSelector: {} # every pod in the namespace\n  policyTypes: [Ingress, Egress]",
    to: "  podSelector: {} # every pod in the namespace\n  policyTypes: [Ingress]",
    check: checkNetworkPolicies,
    expected: "no policy denies all ingress AND egress for every pod",
  },
  {
    gap: "a flow allowed on one side only (the gateway's egress to its Redis dropped)",
    file: "k8s/networkpolicy.yaml",
    from: "    - to:\n        - podSelector:\n            matchLabels:\n              app.kubernetes.io/name: redis-limiter\n      ports:\n        - port: redis\n          protocol: TCP\n",
    to: "",
    check: checkNetworkPolicies,
    expected: "gateway -> redis-limiter:redis is needed but not allowed",
  },
  {
    gap: "a PodDisruptionBudget on a single-replica pod",
    file: "k8s/monitoring/prometheus.yaml",
    from: "# No PodDisruptionBudget: one replica",
    to: "---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: prometheus\n  namespace: portico\nspec:\n  maxUnavailable: 1\n  selector:\n    matchLabels:\n      app.kubernetes.io/name: prometheus\n# No PodDisruptionBudget: one replica",
    check: checkDisruptionBudgets,
    expected: "PodDisruptionBudget/prometheus spec: prometheus runs one replica",
  },
  {
    gap: "a 3-replica workload without topology spread",
    file: "k8s/rpcapp.yaml",
    from: "      topologySpreadConstraints:\n        - maxSkew: 1\n          topologyKey: kubernetes.io/hostname",
    to: "      topologySpreadConstraints:\n        - maxSkew: 1\n          topologyKey: topology.kubernetes.io/zone",
    check: checkTopologySpread,
    expected: "Deployment/rpcapp spec.template.spec.topologySpreadConstraints: rpcapp runs 3+ replicas",
  },
  {
    gap: "a container without a startup probe",
    file: "k8s/monitoring/alertmanager.yaml",
    from: "          startupProbe:\n            httpGet:\n              path: /-/ready\n              port: http\n            periodSeconds: 2\n            failureThreshold: 30\n",
    to: "",
    check: checkStartupProbes,
    expected:
      "Deployment/alertmanager spec.template.spec.containers[0].startupProbe: every container needs a startup probe",
  },
  {
    gap: "an image on a moving tag",
    file: "k8s/monitoring/alertmanager.yaml",
    from: "image: prom/alertmanager:v0.32.1",
    to: "image: prom/alertmanager:latest",
    check: checkImagesPinned,
    expected: '"prom/alertmanager:latest" is not pinned',
  },
  // Secrets
  {
    gap: "a password written into a manifest (REDIS_URL with user:password)",
    file: "k8s/gateway.yaml",
    from: "            - name: REDIS_URL\n              valueFrom:\n                secretKeyRef:\n                  name: portico-redis-limiter\n                  key: url",
    to: "            - name: REDIS_URL\n              value: redis://gateway:hunter2hunter2@redis-limiter:6379",
    check: checkNoPlaintextCredentials,
    expected: "holds a URL with a password (redis://gateway:***@)",
  },
  {
    gap: "Grafana's password as a plain env value",
    file: "k8s/monitoring/grafana.yaml",
    from: "            - name: GF_USERS_ALLOW_SIGN_UP",
    to: "            - name: GF_SECURITY_ADMIN_PASSWORD\n              value: admin\n            - name: GF_USERS_ALLOW_SIGN_UP",
    check: checkNoPlaintextCredentials,
    expected: "GF_SECURITY_ADMIN_PASSWORD is a credential: use valueFrom.secretKeyRef",
  },
  {
    gap: "a Secret committed in k8s/",
    file: "k8s/namespace.yaml",
    from: "    pod-security.kubernetes.io/audit: restricted\n",
    to: "    pod-security.kubernetes.io/audit: restricted\n---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: portico-admin\n  namespace: portico\nstringData:\n  token: not-so-secret\n",
    check: checkNoPlaintextCredentials,
    expected: "Secret/portico-admin kind: no Secret belongs in k8s/",
  },
  {
    gap: "a Redis password literal in a startup script",
    file: "k8s/redis-store.yaml",
    from: 'echo "masterauth $(cat "${secret}/replica-password")"',
    to: 'echo "masterauth s3cretpassw0rd"',
    check: checkNoPlaintextCredentials,
    expected: 'ConfigMap/redis-store-scripts data["redis.sh"]: holds a literal `masterauth`',
  },
  {
    gap: "a Secret key `make up` does not create",
    file: "k8s/gateway.yaml",
    from: "                  name: portico-admin\n                  key: token",
    to: "                  name: portico-admin\n                  key: admin-token",
    check: checkSecretReferences,
    expected: 'Secret "portico-admin" has no key "admin-token" (token)',
  },
];

describe("each gap review found fails again when an edit brings it back", () => {
  test.each(gaps)("$gap ($file)", ({ file, from, to, also = [], check, expected }) => {
    const { manifests: edited } = withEdits(file, [{ from, to }, ...also]);
    const problems = check(edited).map(formatProblem);
    for (const e of [expected].flat()) expect(problems).toContainEqual(expect.stringContaining(e));
  });

  test("the reported line is the edited line", () => {
    const { manifests: edited, line } = withEdit(
      "k8s/gateway.yaml",
      "  externalTrafficPolicy: Local\n",
      "  externalTrafficPolicy: Cluster\n",
    );
    expect(checkExposure(edited).map(formatProblem)).toEqual([
      `k8s/gateway.yaml:${line}: Service/gateway spec.externalTrafficPolicy: must be Local: with Cluster, kube-proxy rewrites every client address to a node's, and all clients share one rate-limit budget`,
    ]);
  });

  test("a third-party workload added without a spread, budget or pinned image is caught too", () => {
    const extra = parseManifests(
      `apiVersion: apps/v1
kind: StatefulSet
metadata: {name: queue, namespace: portico, labels: {app.kubernetes.io/name: queue}}
spec:
  replicas: 3
  serviceName: queue
  selector: {matchLabels: {app.kubernetes.io/name: queue}}
  template:
    metadata: {labels: {app.kubernetes.io/name: queue}}
    spec:
      containers:
        - name: queue
          image: nats:2
`,
      "k8s/queue.yaml",
    );
    const all = [...manifests, ...extra];
    const problems = [
      checkTopologySpread,
      checkDisruptionBudgets,
      checkImagesPinned,
      checkStartupProbes,
      checkPodSecurityRestricted,
    ]
      .flatMap((c) => c(all))
      .map(formatProblem)
      .filter((p) => p.startsWith("k8s/queue.yaml"));
    expect(problems).toEqual(
      expect.arrayContaining([
        expect.stringContaining("topologySpreadConstraints: queue runs 3+ replicas"),
        expect.stringContaining("3 replicas but no PodDisruptionBudget"),
        expect.stringContaining('"nats:2" is not pinned'),
        expect.stringContaining("startupProbe: every container needs a startup probe"),
        expect.stringContaining("securityContext.runAsNonRoot: must be true"),
      ]),
    );
  });
});

describe("env variables the manifests set ahead of the apps (checks/cross-checks.ts PENDING_APP_ENV)", () => {
  const pending = Object.entries(PENDING_APP_ENV).flatMap(([service, vars]) =>
    Object.keys(vars).map((name) => ({ service, name })),
  );
  test.each(pending)(
    "$service does not read $name yet (once it does, remove it from the list)",
    ({ service, name }) => {
      expect(sourcesOf(service)).not.toMatch(new RegExp(`["'\`]${name}["'\`]`));
    },
  );

  test("each is set on the workload it is listed for", () => {
    for (const { service, name } of pending) {
      const text = readFileSync(join(REPO_ROOT, `k8s/${service}.yaml`), "utf8");
      expect(`${service}: ${text.includes(`- name: ${name}\n`)}`).toBe(`${service}: true`);
    }
  });
});

describe("the UIs are reached by port-forward (Makefile)", () => {
  const makefile = readFileSync(join(REPO_ROOT, "Makefile"), "utf8");
  const forwards = [...makefile.matchAll(/^([a-z-]+):[^\n]*\n\t\$\(PORT_FORWARD\) svc\/([a-z-]+) (\d+)$/gm)].map(
    ([, target, service, port]) => ({ target: target!, service: service!, port: Number(port) }),
  );

  test("make dashboard, grafana, prometheus, alertmanager and jaeger each forward to a ClusterIP Service port", () => {
    expect(forwards.map((f) => f.target).sort()).toEqual([
      "alertmanager",
      "dashboard",
      "grafana",
      "jaeger",
      "prometheus",
    ]);
    for (const f of forwards) {
      const svc = manifests.find((m) => m.object.kind === "Service" && m.object.metadata?.name === f.service)?.object as
        | { spec?: { type?: string; ports?: { port: number }[] } }
        | undefined;
      expect({
        target: f.target,
        type: svc?.spec?.type ?? "(missing)",
        hasPort: !!svc?.spec?.ports?.some((p) => p.port === f.port),
      }).toEqual({
        target: f.target,
        type: "ClusterIP",
        hasPort: true,
      });
    }
  });
});
