/**
 * The cluster's security and availability posture, checked on the manifests: what review found
 * missing once (docs/security.md, "In the cluster"), each as a check that fails if it comes back.
 * k8s/test/hardening.test.ts runs each one on the real k8s/ and on an edit that breaks it.
 */
import type { IHorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import type { IPodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import type { IConfigMap } from "kubernetes-models/v1/ConfigMap";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IService } from "kubernetes-models/v1/Service";
import { parse as parseYaml } from "yaml";
import { CLUSTER_SECRETS } from "../../../scripts/cluster/secrets.ts";
import { TLS_SECRET_KEYS, TLS_SECRETS } from "../../../scripts/cluster/tls.ts";
import { IMAGE_REPOSITORY_PREFIX } from "../../../scripts/cluster/images.ts";
import {
  allContainers,
  type Check,
  CONTAINERS,
  matchesSelector,
  NAME_LABEL,
  NAMESPACE,
  ofKind,
  selects,
  type Workload,
  workloadsOf,
} from "./cross-checks.ts";
import { type Manifest, type Path, type Problem, problemAt } from "./manifests.ts";

type PodSpec = NonNullable<NonNullable<Workload["deployment"]["spec"]>["template"]["spec"]>;

function podSpecOf(w: Workload): PodSpec | undefined {
  return w.deployment.spec?.template.spec;
}

// ---- Pod Security: the "restricted" profile --------------------------------------------------

/** Volume types the restricted profile allows (https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted). */
const RESTRICTED_VOLUME_TYPES = new Set([
  "configMap",
  "csi",
  "downwardAPI",
  "emptyDir",
  "ephemeral",
  "persistentVolumeClaim",
  "projected",
  "secret",
]);

/** The namespace enforces "restricted", and every pod template meets it (and baseline with it). */
export const checkPodSecurityRestricted: Check = (manifests) => {
  const problems: Problem[] = [];
  const ns = manifests.find((m) => m.object.kind === "Namespace" && m.object.metadata?.name === NAMESPACE);
  const labels = (ns?.object.metadata as { labels?: Record<string, string> } | undefined)?.labels ?? {};
  if (ns && labels["pod-security.kubernetes.io/enforce"] !== "restricted")
    problems.push(
      problemAt(
        ns,
        ["metadata", "labels", "pod-security.kubernetes.io/enforce"],
        'must be "restricted": every pod here meets it',
      ),
    );
  for (const w of workloadsOf(manifests)) {
    const spec = podSpecOf(w);
    const at = (path: Path, message: string) => problems.push(problemAt(w.m, path, message));
    const podPath: Path = ["spec", "template", "spec"];
    const pod = spec?.securityContext ?? {};
    for (const host of ["hostNetwork", "hostPID", "hostIPC"] as const)
      if (spec?.[host]) at([...podPath, host], "host namespaces are not allowed (restricted)");
    if (pod.runAsUser === 0) at([...podPath, "securityContext", "runAsUser"], "must not be 0 (restricted)");
    for (const sysctl of pod.sysctls ?? [])
      at([...podPath, "securityContext", "sysctls"], `sysctl ${sysctl.name}: none is needed here`);
    (spec?.volumes ?? []).forEach((v, i) => {
      const type = Object.keys(v).find((k) => k !== "name");
      if (!type || !RESTRICTED_VOLUME_TYPES.has(type))
        at(
          [...podPath, "volumes", i],
          `volume type ${type ?? "(none)"} is not allowed by the restricted profile (hostPath and the like)`,
        );
    });
    for (const { c, path } of allContainers(w)) {
      const sc = c.securityContext ?? {};
      if ((sc.runAsNonRoot ?? pod.runAsNonRoot) !== true)
        at([...path, "securityContext", "runAsNonRoot"], "must be true (restricted)");
      if (sc.runAsUser === 0) at([...path, "securityContext", "runAsUser"], "must not be 0 (restricted)");
      if (sc.privileged) at([...path, "securityContext", "privileged"], "must not be privileged");
      if (sc.allowPrivilegeEscalation !== false)
        at([...path, "securityContext", "allowPrivilegeEscalation"], "must be false (restricted)");
      if (!sc.capabilities?.drop?.includes("ALL"))
        at([...path, "securityContext", "capabilities", "drop"], "must drop ALL (restricted)");
      for (const cap of sc.capabilities?.add ?? [])
        if (cap !== "NET_BIND_SERVICE")
          at(
            [...path, "securityContext", "capabilities", "add"],
            `${cap}: only NET_BIND_SERVICE may be added (restricted)`,
          );
      const seccomp = (sc.seccompProfile ?? pod.seccompProfile)?.type;
      if (seccomp !== "RuntimeDefault" && seccomp !== "Localhost")
        at([...path, "securityContext", "seccompProfile", "type"], "must be RuntimeDefault or Localhost (restricted)");
      if (sc.procMount && sc.procMount !== "Default") at([...path, "securityContext", "procMount"], "must be Default");
      (c.ports ?? []).forEach((p, j) => {
        if (p.hostPort) at([...path, "ports", j, "hostPort"], "host ports are not allowed");
      });
    }
  }
  return problems;
};

// ---- credentials -------------------------------------------------------------------------------

/** Names of settings that hold a credential. */
const CREDENTIAL_NAME = /(PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|PRIVATE_KEY|CREDENTIALS?|AUTH)$/i;
/** A URL with a password in it: scheme://user:password@host. */
const URL_WITH_PASSWORD = /[a-z][a-z0-9+.-]*:\/\/[^/\s:@]*:([^@\s/]+)@/i;
/** Redis/Sentinel directives or arguments carrying a password: `masterauth <pw>`, `sentinel auth-pass <master> <pw>`. */
const PASSWORD_DIRECTIVES = [
  /(?:^|[\s"'-])(requirepass|masterauth|sentinel-pass)\s+(\S+)/gm,
  /(?:^|[\s"'-])(auth-pass)\s+\S+\s+(\S+)/gm,
];
/** An ACL rule setting a clear-text password (`>secret`); a hash (`#…`) is fine. */
const ACL_CLEAR_PASSWORD = /\buser\s+\S+.*\s>\S+/;
const KEY_WITH_LITERAL =
  /^\s*["']?(password|passwd|token|secret|api_?key|admin_password)["']?\s*[:=]\s*["']?([^\s"']+)/gim;

/** A value that is not itself a secret: a shell expansion (`$(cat file)`, `${VAR}`) or a file path. */
function isReference(value: string): boolean {
  return /^["']?\$/.test(value) || /^["']?\//.test(value);
}

function literalCredentialIn(text: string): string | undefined {
  const url = URL_WITH_PASSWORD.exec(text);
  if (url && !isReference(url[1]!)) return `a URL with a password (${url[0].replace(url[1]!, "***")})`;
  for (const pattern of PASSWORD_DIRECTIVES)
    for (const match of text.matchAll(pattern)) if (!isReference(match[2]!)) return `a literal \`${match[1]}\``;
  if (ACL_CLEAR_PASSWORD.test(text)) return "an ACL rule with a clear-text password (>…)";
  for (const match of text.matchAll(KEY_WITH_LITERAL)) if (!isReference(match[2]!)) return `a literal ${match[1]}`;
  return undefined;
}

/**
 * No object in k8s/ carries a credential: no Secret objects (`make up` generates them), no
 * credential-named env var with a literal value, no password in a URL, argument or config file.
 */
export const checkNoPlaintextCredentials: Check = (manifests) => {
  const problems: Problem[] = [];
  for (const m of manifests) {
    if (m.object.kind === "Secret")
      problems.push(
        problemAt(
          m,
          ["kind"],
          "no Secret belongs in k8s/: `make up` generates them (scripts/cluster/secrets.ts), so none is ever committed",
        ),
      );
    if (m.object.kind === "ConfigMap") {
      for (const [key, text] of Object.entries((m.object as IConfigMap).data ?? {})) {
        const found = literalCredentialIn(text);
        if (found) problems.push(problemAt(m, ["data", key], `holds ${found}: read it from a Secret instead`));
      }
    }
  }
  for (const w of workloadsOf(manifests)) {
    for (const { c, path } of allContainers(w)) {
      (c.env ?? []).forEach((e, j) => {
        if (e.value === undefined) return;
        const isPathToFile = /__FILE$|_FILE$/.test(e.name);
        if (CREDENTIAL_NAME.test(e.name) && !isPathToFile && e.value !== "")
          problems.push(
            problemAt(w.m, [...path, "env", j, "value"], `${e.name} is a credential: use valueFrom.secretKeyRef`),
          );
        const found = literalCredentialIn(e.value);
        if (found)
          problems.push(problemAt(w.m, [...path, "env", j, "value"], `holds ${found}: use valueFrom.secretKeyRef`));
      });
      for (const field of ["args", "command"] as const) {
        const text = (c[field] ?? []).join(" ");
        const found = literalCredentialIn(text);
        if (found) problems.push(problemAt(w.m, [...path, field], `holds ${found}: mount a Secret instead`));
      }
    }
  }
  return problems;
};

/**
 * The Secrets `make up` creates for the pods, with their keys: the passwords (scripts/cluster/secrets.ts)
 * and the certificates (scripts/cluster/tls.ts). Not the CA's own Secret: its key stays out of pods.
 */
export const POD_SECRETS: Readonly<Record<string, readonly string[]>> = {
  ...CLUSTER_SECRETS,
  ...Object.fromEntries(Object.keys(TLS_SECRETS).map((name) => [name, TLS_SECRET_KEYS])),
};

/** Every Secret and key the manifests read (env, secret and projected volumes) is one `make up` creates. */
export const checkSecretReferences: Check = (manifests) => {
  const problems: Problem[] = [];
  const known = POD_SECRETS;
  const check = (m: Manifest, path: Path, name: string | undefined, key: string | undefined) => {
    const keys = name === undefined ? undefined : known[name];
    if (!keys)
      problems.push(
        problemAt(
          m,
          path,
          `Secret "${name}" is not one \`make up\` creates for pods (scripts/cluster/secrets.ts, scripts/cluster/tls.ts: ${Object.keys(known).join(", ")})`,
        ),
      );
    else if (key !== undefined && !keys.includes(key))
      problems.push(problemAt(m, path, `Secret "${name}" has no key "${key}" (${keys.join(", ")})`));
  };
  for (const w of workloadsOf(manifests)) {
    for (const { c, path } of allContainers(w)) {
      (c.env ?? []).forEach((e, j) => {
        const ref = e.valueFrom?.secretKeyRef;
        if (ref) check(w.m, [...path, "env", j, "valueFrom", "secretKeyRef"], ref.name, ref.key);
      });
    }
    (podSpecOf(w)?.volumes ?? []).forEach((v, i) => {
      const volume: Path = ["spec", "template", "spec", "volumes", i];
      const sources = [
        ...(v.secret ? [{ path: [...volume, "secret"], name: v.secret.secretName, items: v.secret.items }] : []),
        ...(v.projected?.sources ?? []).flatMap((src, j) =>
          src.secret
            ? [
                {
                  path: [...volume, "projected", "sources", j, "secret"],
                  name: src.secret.name,
                  items: src.secret.items,
                },
              ]
            : [],
        ),
      ];
      for (const source of sources) {
        const items = source.items ?? [];
        if (items.length === 0) check(w.m, source.path, source.name, undefined);
        items.forEach((item, j) => {
          check(w.m, [...source.path, "items", j], source.name, item.key);
        });
      }
    });
  }
  return problems;
};

// ---- the Kubernetes API: service accounts and RBAC ----------------------------------------------

/**
 * The pods that call the Kubernetes API, each with the reason; every other pod template sets
 * `automountServiceAccountToken: false`, so a compromised container holds no API credential.
 */
export const API_CLIENTS: Readonly<Record<string, string>> = {
  prometheus:
    "Kubernetes service discovery (kubernetes_sd_configs in monitoring/prometheus.yaml) lists and watches the namespace's pods",
};

/** What a Role may grant: reading pods (service discovery), nothing more. */
const ROLE_API_GROUPS = [""];
const ROLE_RESOURCES = ["pods"];
const ROLE_VERBS = ["get", "list", "watch"];

interface PolicyRule {
  apiGroups?: string[];
  resources?: string[];
  verbs?: string[];
  resourceNames?: string[];
  nonResourceURLs?: string[];
}

const list = (values: readonly string[]) => `[${values.map((v) => (v === "" ? '""' : v)).join(", ")}]`;

/**
 * Least privilege towards the API: no pod mounts a token but the API_CLIENTS, which run under a
 * ServiceAccount of their own; no ClusterRole or ClusterRoleBinding (nothing here needs the
 * cluster); a Role only reads pods; a RoleBinding binds one of k8s/'s Roles to ServiceAccounts
 * of this namespace defined in k8s/.
 */
export const checkServiceAccounts: Check = (manifests) => {
  const problems: Problem[] = [];
  const accounts = new Set(
    manifests.filter((m) => m.object.kind === "ServiceAccount").map((m) => String(m.object.metadata?.name)),
  );
  const roles = new Set(manifests.filter((m) => m.object.kind === "Role").map((m) => String(m.object.metadata?.name)));
  for (const w of workloadsOf(manifests)) {
    const spec = podSpecOf(w);
    const podPath: Path = ["spec", "template", "spec"];
    const reason = API_CLIENTS[w.name];
    if (reason === undefined) {
      if (spec?.automountServiceAccountToken !== false)
        problems.push(
          problemAt(
            w.m,
            [...podPath, "automountServiceAccountToken"],
            `must be false: ${w.name} does not call the Kubernetes API, so its pods hold no token (hardening.ts API_CLIENTS lists the pods that do)`,
          ),
        );
    } else if (
      !spec?.serviceAccountName ||
      spec.serviceAccountName === "default" ||
      !accounts.has(spec.serviceAccountName)
    )
      problems.push(
        problemAt(
          w.m,
          [...podPath, "serviceAccountName"],
          `${w.name} mounts an API token (${reason}): it must run under a ServiceAccount of its own, defined in k8s/, not "${spec?.serviceAccountName ?? "default"}"`,
        ),
      );
  }
  for (const m of manifests) {
    const kind = String(m.object.kind);
    if (kind === "ClusterRole" || kind === "ClusterRoleBinding")
      problems.push(
        problemAt(
          m,
          ["kind"],
          `a ${kind} grants access across the cluster: nothing in k8s/ needs more than this namespace (use a Role and RoleBinding)`,
        ),
      );
    if (kind === "Role")
      ((m.object.rules as PolicyRule[] | undefined) ?? []).forEach((rule, i) => {
        const at = (field: string, message: string) => problems.push(problemAt(m, ["rules", i, field], message));
        const outside = (values: string[] | undefined, allowed: string[]) =>
          (values ?? []).length === 0 || (values ?? []).some((v) => !allowed.includes(v));
        if (outside(rule.apiGroups, ROLE_API_GROUPS))
          at(
            "apiGroups",
            `${list(rule.apiGroups ?? [])}: a Role here reads the core API group only, ${list(ROLE_API_GROUPS)}`,
          );
        if (outside(rule.resources, ROLE_RESOURCES))
          at(
            "resources",
            `${list(rule.resources ?? [])}: a Role here reads ${list(ROLE_RESOURCES)} only (service discovery), never secrets or "*"`,
          );
        if (outside(rule.verbs, ROLE_VERBS))
          at("verbs", `${list(rule.verbs ?? [])}: a Role here is read-only, verbs within ${list(ROLE_VERBS)}`);
        if (rule.nonResourceURLs?.length) at("nonResourceURLs", "not for a Role: no non-resource URL is needed");
      });
    if (kind === "RoleBinding") {
      const ref = m.object.roleRef as { kind?: string; name?: string } | undefined;
      if (ref?.kind !== "Role" || !roles.has(String(ref.name)))
        problems.push(
          problemAt(
            m,
            ["roleRef"],
            `must name one of k8s/'s Roles (${[...roles].join(", ") || "none"}), not ${ref?.kind}/${ref?.name}: a ClusterRole (admin, edit…) grants far more`,
          ),
        );
      const subjects = (m.object.subjects as { kind?: string; name?: string; namespace?: string }[] | undefined) ?? [];
      subjects.forEach((subject, i) => {
        if (subject.kind !== "ServiceAccount" || subject.namespace !== NAMESPACE || !accounts.has(String(subject.name)))
          problems.push(
            problemAt(
              m,
              ["subjects", i],
              `${subject.kind} ${subject.namespace ? `${subject.namespace}/` : ""}${subject.name}: bind only ServiceAccounts of namespace ${NAMESPACE} defined in k8s/ (${[...accounts].join(", ") || "none"})`,
            ),
          );
      });
    }
  }
  return problems;
};

// ---- exposure ----------------------------------------------------------------------------------

/**
 * Only the gateway is reachable from outside the cluster, and it keeps the client's address
 * (externalTrafficPolicy Local): the monitoring UIs are ClusterIP, reached by port-forward.
 */
export const checkExposure: Check = (manifests) => {
  const problems: Problem[] = [];
  for (const { m, o } of ofKind<IService>(manifests, "Service")) {
    const external = o.spec?.type === "NodePort" || o.spec?.type === "LoadBalancer";
    if (!external) continue;
    if (o.metadata?.name !== "gateway")
      problems.push(
        problemAt(
          m,
          ["spec", "type"],
          `a ${o.spec?.type} exposes ${o.metadata?.name} outside the cluster: use ClusterIP and \`kubectl port-forward\` (make ${o.metadata?.name})`,
        ),
      );
    else if (o.spec?.externalTrafficPolicy !== "Local")
      problems.push(
        problemAt(
          m,
          ["spec", "externalTrafficPolicy"],
          "must be Local: with Cluster, kube-proxy rewrites every client address to a node's, and all clients share one rate-limit budget",
        ),
      );
  }
  return problems;
};

// ---- availability ------------------------------------------------------------------------------

/** The replicas a workload runs: its `replicas`, or its autoscaler's minimum. */
export function replicasOf(manifests: Manifest[], w: Workload): number {
  const fixed = w.deployment.spec?.replicas;
  if (fixed !== undefined) return fixed;
  const hpa = ofKind<IHorizontalPodAutoscaler>(manifests, "HorizontalPodAutoscaler").find(
    ({ o }) => o.spec?.scaleTargetRef.name === w.deployment.metadata?.name,
  );
  if (hpa) return hpa.o.spec?.minReplicas ?? 1;
  const scaled = manifests.find(
    (m) =>
      m.object.kind === "ScaledObject" &&
      (m.object.spec as { scaleTargetRef?: { name?: string } })?.scaleTargetRef?.name === w.deployment.metadata?.name,
  );
  if (scaled) return (scaled.object.spec as { minReplicaCount?: number }).minReplicaCount ?? 0;
  return 1; // the API's default
}

/**
 * A workload of several replicas has a PodDisruptionBudget that lets a drain proceed and keeps
 * most of them; a single-replica one has none (maxUnavailable 1 would allow every eviction,
 * minAvailable 1 would block drains forever). A Deployment's lets a pod that is not ready go
 * (unhealthyPodEvictionPolicy: AlwaysAllow); a StatefulSet's keeps the default, under which an
 * unready member of a quorum (redis-store) is evicted only within the budget.
 */
export const checkDisruptionBudgets: Check = (manifests) => {
  const problems: Problem[] = [];
  const pdbs = ofKind<IPodDisruptionBudget>(manifests, "PodDisruptionBudget");
  const workloads = workloadsOf(manifests);
  for (const w of workloads) {
    const replicas = replicasOf(manifests, w);
    const mine = pdbs.filter(({ o }) => matchesSelector(o.spec?.selector, w.podLabels));
    if (replicas <= 1) {
      for (const { m } of mine)
        problems.push(
          problemAt(
            m,
            ["spec"],
            `${w.name} runs one replica: a budget either allows every eviction (maxUnavailable 1) or blocks drains forever (minAvailable 1); leave it out`,
          ),
        );
      continue;
    }
    if (mine.length === 0) {
      problems.push(
        problemAt(w.m, ["metadata", "name"], `${replicas} replicas but no PodDisruptionBudget selects them`),
      );
      continue;
    }
    for (const { m, o } of mine) {
      // A Deployment's pod that is not ready (webapp while its store is down; every replica at
      // once in an outage) counts against the default policy's budget, and a node drain then
      // waits for the outage to end. A stateless pod that serves nothing may be evicted at once.
      if (w.m.object.kind === "Deployment" && o.spec?.unhealthyPodEvictionPolicy !== "AlwaysAllow")
        problems.push(
          problemAt(
            m,
            ["spec"],
            `unhealthyPodEvictionPolicy: AlwaysAllow is needed: a ${w.name} pod that is not ready would block a node drain until it is`,
          ),
        );
      const { maxUnavailable, minAvailable } = o.spec ?? {};
      const allowed =
        typeof maxUnavailable === "number"
          ? maxUnavailable
          : typeof minAvailable === "number"
            ? replicas - minAvailable
            : undefined;
      if (allowed === undefined) continue; // a percentage: left to the API
      if (allowed < 1)
        problems.push(
          problemAt(m, ["spec"], `allows no disruption of ${w.name}'s ${replicas} replicas: node drains would hang`),
        );
      if (replicas - allowed < Math.ceil(replicas / 2))
        problems.push(
          problemAt(
            m,
            ["spec"],
            `lets a drain take ${allowed} of ${replicas} ${w.name} replicas: fewer than half would remain`,
          ),
        );
    }
  }
  for (const { m, o } of pdbs)
    if (!workloads.some((w) => matchesSelector(o.spec?.selector, w.podLabels)))
      problems.push(problemAt(m, ["spec", "selector"], "selects no pods of any workload in k8s/"));
  return problems;
};

/** Workloads of three replicas or more spread their pods over nodes. */
export const checkTopologySpread: Check = (manifests) => {
  const problems: Problem[] = [];
  for (const w of workloadsOf(manifests)) {
    if (replicasOf(manifests, w) < 3) continue;
    const constraints = podSpecOf(w)?.topologySpreadConstraints ?? [];
    const byNode = constraints.find(
      (t) => t.topologyKey === "kubernetes.io/hostname" && t.labelSelector?.matchLabels?.[NAME_LABEL] === w.name,
    );
    if (!byNode)
      problems.push(
        problemAt(
          w.m,
          ["spec", "template", "spec", "topologySpreadConstraints"],
          `${w.name} runs ${replicasOf(manifests, w)}+ replicas: spread them over kubernetes.io/hostname, selecting its own pods`,
        ),
      );
  }
  return problems;
};

/** Every container has a startup probe, so a slow start is neither killed by liveness nor reported ready early. */
export const checkStartupProbes: Check = (manifests) =>
  workloadsOf(manifests).flatMap((w) =>
    (podSpecOf(w)?.containers ?? []).flatMap((c, i) =>
      c.startupProbe
        ? []
        : [problemAt(w.m, [...CONTAINERS, i, "startupProbe"], "every container needs a startup probe")],
    ),
  );

// ---- images ------------------------------------------------------------------------------------

/** An exact release: a digest, or a tag with major.minor.patch (`7.2.12-alpine`, `v3.5.0`). */
const PINNED_TAG = /^v?\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.-]+)?$/;

export function parseImage(image: string): { repository: string; tag?: string; digest?: string } {
  const [name, digest] = image.split("@") as [string, string | undefined];
  const colon = name.lastIndexOf(":");
  const slash = name.lastIndexOf("/");
  return colon > slash
    ? { repository: name.slice(0, colon), tag: name.slice(colon + 1), digest }
    : { repository: name, digest };
}

/**
 * Third-party images are pinned to an exact release (a digest where one is known, else a full
 * version tag; never `latest`, a major, a minor or a moving tag such as `nonroot`), and the
 * version label says the same version.
 */
export const checkImagesPinned: Check = (manifests) => {
  const problems: Problem[] = [];
  for (const w of workloadsOf(manifests)) {
    for (const { c, path } of allContainers(w)) {
      const image = c.image ?? "";
      if (image.startsWith(`${IMAGE_REPOSITORY_PREFIX}/`)) continue; // built by `make up`, tagged per build
      const { tag, digest } = parseImage(image);
      if (digest && /^sha256:[0-9a-f]{64}$/.test(digest)) continue;
      if (!tag || !PINNED_TAG.test(tag)) {
        problems.push(
          problemAt(
            w.m,
            [...path, "image"],
            `"${image}" is not pinned: name an exact release (x.y.z) or a sha256 digest`,
          ),
        );
        continue;
      }
      const version = w.podLabels["app.kubernetes.io/version"];
      const bare = tag.replace(/-.*$/, "");
      if (version !== undefined && version !== bare && version !== tag)
        problems.push(
          problemAt(
            w.m,
            ["spec", "template", "metadata", "labels", "app.kubernetes.io/version"],
            `"${version}" but the image is ${image}`,
          ),
        );
    }
  }
  return problems;
};

function versionAtLeast(version: string, minimum: string): boolean {
  const a = version.replace(/^v/, "").split(/[.-]/).map(Number);
  const b = minimum.split(".").map(Number);
  for (let i = 0; i < 3; i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  return true;
}

/** The first release of each line with a fix, for images a known CVE hit (the line must be listed: older ones are not patched). */
export const PATCHED_RELEASES: Record<string, { cve: string; firstFixed: Record<string, string> }> = {
  redis: {
    cve: "CVE-2025-49844 (Lua use-after-free, remote code execution)",
    firstFixed: { "7.2": "7.2.11", "7.4": "7.4.6", "8.0": "8.0.4", "8.2": "8.2.2", "8.4": "8.4.0", "8.6": "8.6.0" },
  },
  "grafana/grafana": {
    cve: "CVE-2025-4123 (open redirect to stored XSS)",
    firstFixed: {
      "11.6": "11.6.2",
      "12.0": "12.0.1",
      "12.1": "12.1.0",
      "12.2": "12.2.0",
      "12.3": "12.3.0",
      "12.4": "12.4.0",
    },
  },
};

/** Images a known CVE hit run a release with its fix; end-of-life images are gone (Jaeger v1's all-in-one). */
export const checkImagesPatched: Check = (manifests) => {
  const problems: Problem[] = [];
  for (const w of workloadsOf(manifests)) {
    for (const { c, path } of allContainers(w)) {
      const { repository, tag = "" } = parseImage(c.image ?? "");
      if (repository === "jaegertracing/all-in-one" || (repository === "jaegertracing/jaeger" && !/^2\./.test(tag)))
        problems.push(
          problemAt(
            w.m,
            [...path, "image"],
            "Jaeger v1 reached end of life on 31 Dec 2025: use jaegertracing/jaeger:2.x",
          ),
        );
      const patched = PATCHED_RELEASES[repository];
      if (!patched) continue;
      const line = tag.split(".").slice(0, 2).join(".");
      const firstFixed = patched.firstFixed[line];
      if (!firstFixed || !versionAtLeast(tag.replace(/-.*$/, ""), firstFixed))
        problems.push(
          problemAt(
            w.m,
            [...path, "image"],
            `${c.image} predates the fix for ${patched.cve}: use ${Object.values(patched.firstFixed).join(", ")} or later in its line`,
          ),
        );
    }
  }
  return problems;
};

// ---- Redis ---------------------------------------------------------------------------------------

function redisContainers(w: Workload): { c: IContainer; path: Path }[] {
  return allContainers(w).filter(({ c }) => parseImage(c.image ?? "").repository === "redis");
}

function configMapText(manifests: Manifest[], name: string | undefined): string {
  const cm = ofKind<IConfigMap>(manifests, "ConfigMap").find(({ o }) => o.metadata?.name === name);
  return Object.values(cm?.o.data ?? {}).join("\n");
}

/**
 * Two Redis roles: the limiter's (gateways only, nothing on disk) and the store's (StatefulSet of
 * three, each with a volume and a Sentinel). Both authenticate every client with an ACL file from
 * a Secret (the default user off) and leave protected mode alone.
 */
export const checkRedis: Check = (manifests) => {
  const problems: Problem[] = [];
  const workloads = workloadsOf(manifests).filter((w) => redisContainers(w).length > 0);
  for (const w of workloads) {
    const spec = podSpecOf(w);
    const scripts = (spec?.volumes ?? []).map((v) => configMapText(manifests, v.configMap?.name)).join("\n");
    for (const { c, path } of redisContainers(w)) {
      const args = [...(c.command ?? []), ...(c.args ?? [])].join(" ");
      if (/protected-mode\s+"?no/.test(`${args}\n${scripts}`))
        problems.push(
          problemAt(
            w.m,
            [...path, "args"],
            "protected mode off: Redis must require authentication, not rely on the network alone",
          ),
        );
    }
    const text = `${redisContainers(w)
      .map(({ c }) => [...(c.command ?? []), ...(c.args ?? [])].join(" "))
      .join("\n")}\n${scripts}`;
    const aclFile = /aclfile\s+"?(\S+?)"?(\s|$)/.exec(text)?.[1]?.replace(/\$\{secret\}|\$secret/, "/etc/redis/secret");
    const mounts = redisContainers(w).flatMap(({ c }) => c.volumeMounts ?? []);
    const mount = aclFile ? mounts.find((vm) => aclFile.startsWith(`${vm.mountPath}/`)) : undefined;
    const volume = spec?.volumes?.find((v) => v.name === mount?.name);
    if (!volume?.secret)
      problems.push(
        problemAt(
          w.m,
          CONTAINERS,
          "Redis must load its users from an ACL file (aclfile) mounted from a Secret: without it the default user needs no password",
        ),
      );
  }
  const limiter = workloads.find((w) => w.name === "redis-limiter");
  const store = workloads.find((w) => w.name === "redis-store");
  if (!limiter)
    problems.push({
      file: "k8s/",
      object: "Deployment/redis-limiter",
      field: "",
      message: "the gateways' limiter Redis is missing",
    });
  if (!store)
    problems.push({
      file: "k8s/",
      object: "StatefulSet/redis-store",
      field: "",
      message: "webapp's store Redis is missing",
    });
  if (limiter) {
    const args = redisContainers(limiter).flatMap(({ c }) => c.args ?? []);
    const after = (flag: string) => args[args.indexOf(flag) + 1];
    if (after("--appendonly") !== "no" || after("--save") !== "")
      problems.push(
        problemAt(
          limiter.m,
          [...CONTAINERS, 0, "args"],
          'the limiter keeps nothing on disk: --appendonly no and --save ""',
        ),
      );
    if ((podSpecOf(limiter)?.volumes ?? []).some((v) => v.persistentVolumeClaim))
      problems.push(
        problemAt(
          limiter.m,
          ["spec", "template", "spec", "volumes"],
          "the limiter's buckets refill in seconds: no PersistentVolumeClaim",
        ),
      );
  }
  if (store) {
    if (store.m.object.kind !== "StatefulSet" || replicasOf(manifests, store) !== 3)
      problems.push(
        problemAt(
          store.m,
          ["spec", "replicas"],
          "the store runs as a StatefulSet of 3 (a master, 2 replicas, 3 Sentinels)",
        ),
      );
    const claims = (store.deployment.spec as { volumeClaimTemplates?: { metadata?: { name?: string } }[] } | undefined)
      ?.volumeClaimTemplates;
    if (
      !claims?.some((t) =>
        (podSpecOf(store)?.containers ?? []).some((c) =>
          c.volumeMounts?.some((vm) => vm.name === t.metadata?.name && vm.mountPath === "/data"),
        ),
      )
    )
      problems.push(
        problemAt(
          store.m,
          ["spec", "volumeClaimTemplates"],
          "each store pod keeps its data on its own claim, mounted at /data",
        ),
      );
    const scripts = (podSpecOf(store)?.volumes ?? [])
      .map((v) => configMapText(manifests, v.configMap?.name))
      .join("\n");
    const monitor = /sentinel monitor (\S+) \S+ 6379 (\d+)/.exec(scripts);
    if (!redisContainers(store).some(({ c }) => (c.ports ?? []).some((p) => p.containerPort === 26379)) || !monitor)
      problems.push(problemAt(store.m, CONTAINERS, "each store pod runs a Sentinel on 26379 that monitors the master"));
    else if (Number(monitor[2]) !== 2)
      problems.push(problemAt(store.m, CONTAINERS, `the Sentinels' quorum must be 2 of 3, not ${monitor[2]}`));
  }
  problems.push(...redisMemoryBudget(manifests, limiter, store));
  return problems;
};

/** MiB in a Kubernetes quantity ("320Mi", "1Gi") or a Redis size ("96mb", "1gb"); NaN otherwise. */
function mebibytes(quantity: string | undefined): number {
  const m = /^(\d+)(Mi|Gi|mb|gb)$/.exec(quantity ?? "");
  if (!m) return Number.NaN;
  return Number(m[1]) * (m[2] === "Gi" || m[2] === "gb" ? 1024 : 1);
}

/** What a redis-server process needs beside its data (code, connections, fragmentation), in MiB. */
const REDIS_PROCESS_MIB = 32;

/**
 * A Redis must fit its memory limit at its worst, or the kernel kills it (and the store fails
 * over): `maxmemory` bounds the data only. A Redis that forks — an append-only-file rewrite, a
 * snapshot, a replica's full sync — can need the data twice (copy-on-write under writes), and a
 * master holds an output buffer per replica (Redis's default allows 256 MB each), so the store's
 * must cap them.
 */
function redisMemoryBudget(
  manifests: Manifest[],
  limiter: Workload | undefined,
  store: Workload | undefined,
): Problem[] {
  const problems: Problem[] = [];
  const redisServer = (w: Workload) =>
    redisContainers(w).find(({ c }) => (c.ports ?? []).some((p) => p.containerPort === 6379));
  const limitOf = (w: Workload) => {
    const server = redisServer(w);
    return { server, limit: mebibytes(server?.c.resources?.limits?.memory as string | undefined) };
  };
  if (limiter) {
    const { server, limit } = limitOf(limiter);
    const args = server?.c.args ?? [];
    const data = mebibytes(args[args.indexOf("--maxmemory") + 1]);
    if (server && !(data + REDIS_PROCESS_MIB <= limit))
      problems.push(
        problemAt(
          limiter.m,
          [...server.path, "resources", "limits", "memory"],
          `the limiter's Redis needs --maxmemory (${data} MiB) + ${REDIS_PROCESS_MIB} MiB for the process within its memory limit (${limit} MiB)`,
        ),
      );
  }
  if (store) {
    const { server, limit } = limitOf(store);
    const scripts = (podSpecOf(store)?.volumes ?? [])
      .map((v) => configMapText(manifests, v.configMap?.name))
      .join("\n");
    const data = mebibytes(/^\s*echo "maxmemory (\S+)"/m.exec(scripts)?.[1]);
    const buffer = /^\s*echo "client-output-buffer-limit replica (\S+) /m.exec(scripts)?.[1];
    const replicas = replicasOf(manifests, store) - 1;
    if (server && buffer === undefined)
      problems.push(
        problemAt(
          store.m,
          [...server.path, "resources", "limits", "memory"],
          "the store's Redis must cap its replicas' output buffers (client-output-buffer-limit replica): Redis's default lets each grow to 256 MB",
        ),
      );
    else if (server) {
      const need = 2 * data + replicas * mebibytes(buffer) + REDIS_PROCESS_MIB;
      if (!(need <= limit))
        problems.push(
          problemAt(
            store.m,
            [...server.path, "resources", "limits", "memory"],
            `the store's Redis can need 2 × maxmemory (a fork's copy-on-write) + ${replicas} × its replica output buffer + ${REDIS_PROCESS_MIB} MiB = ${need} MiB, over its memory limit (${limit} MiB)`,
          ),
        );
    }
  }
  return problems;
}

// ---- Grafana and the monitoring path -------------------------------------------------------------

function envOf(w: Workload | undefined, name: string) {
  return w?.containers.flatMap((c) => c.env ?? []).find((e) => e.name === name);
}

/** Grafana: no anonymous access, its admin password read from a Secret file. */
export const checkGrafana: Check = (manifests) => {
  const problems: Problem[] = [];
  const grafana = workloadsOf(manifests).find((w) => w.name === "grafana");
  if (!grafana) return [];
  const at = (message: string) => problems.push(problemAt(grafana.m, [...CONTAINERS, 0, "env"], message));
  if (envOf(grafana, "GF_AUTH_ANONYMOUS_ENABLED")?.value !== "false") at('GF_AUTH_ANONYMOUS_ENABLED must be "false"');
  const file = envOf(grafana, "GF_SECURITY_ADMIN_PASSWORD__FILE")?.value;
  const mount = file
    ? grafana.containers[0]?.volumeMounts?.find((vm) => file.startsWith(`${vm.mountPath}/`))
    : undefined;
  const volume = podSpecOf(grafana)?.volumes?.find((v) => v.name === mount?.name);
  if (!volume?.secret)
    at("GF_SECURITY_ADMIN_PASSWORD__FILE must name a file in a mounted Secret (else Grafana starts as admin/admin)");
  return problems;
};

/** Container port of `w` named or numbered `port`. */
function hasPort(w: Workload | undefined, port: number): boolean {
  return !!w?.containers.some((c) => (c.ports ?? []).some((p) => p.containerPort === port));
}

/** A Service `name` on `port` that selects pods of workload `target`. */
function serviceReaches(manifests: Manifest[], host: string, port: number, target: string): boolean {
  const svc = ofKind<IService>(manifests, "Service").find(({ o }) => o.metadata?.name === host)?.o;
  const w = workloadsOf(manifests).find((x) => x.name === target);
  const p = svc?.spec?.ports?.find((sp) => sp.port === port);
  if (!svc || !w || !p || !selects(svc.spec?.selector, w.podLabels)) return false;
  const targetPort = p.targetPort ?? p.port;
  return w.containers.some((c) =>
    (c.ports ?? []).some((cp) => cp.name === targetPort || cp.containerPort === targetPort),
  );
}

/**
 * Spans: services → OpenTelemetry Collector (memory_limiter first, batch last) → Jaeger.
 * Alerts: Prometheus → Alertmanager → a receiver that exists.
 */
export const checkMonitoringWiring: Check = (manifests) => {
  const problems: Problem[] = [];
  const workloads = workloadsOf(manifests);
  const byName = (n: string) => workloads.find((w) => w.name === n);
  const yamlOf = (name: string, key: string) => {
    const cm = ofKind<IConfigMap>(manifests, "ConfigMap").find(({ o }) => o.metadata?.name === name);
    return cm ? { m: cm.m, doc: parseYaml(cm.o.data?.[key] ?? "") as Record<string, unknown> } : undefined;
  };
  // The services export to the collector.
  for (const w of workloads.filter((x) => x.own)) {
    const endpoint = envOf(w, "OTEL_EXPORTER_OTLP_ENDPOINT")?.value ?? "";
    const match = /^https?:\/\/([^:/]+):(\d+)$/.exec(endpoint);
    if (!match || !serviceReaches(manifests, match[1]!, Number(match[2]), "otel-collector"))
      problems.push(
        problemAt(
          w.m,
          [...CONTAINERS, 0, "env"],
          `OTEL_EXPORTER_OTLP_ENDPOINT=${endpoint || "(unset)"} must be the OpenTelemetry Collector's Service (https://otel-collector:4318)`,
        ),
      );
  }
  const collector = yamlOf("otel-collector-config", "config.yaml");
  if (!collector)
    problems.push({
      file: "k8s/monitoring/",
      object: "ConfigMap/otel-collector-config",
      field: "",
      message: "missing",
    });
  else {
    type Pipelines = Record<string, { receivers?: string[]; processors?: string[]; exporters?: string[] }>;
    const service = collector.doc.service as { pipelines?: Pipelines } | undefined;
    const traces = service?.pipelines?.traces;
    const at = (message: string) =>
      problems.push({ ...problemAt(collector.m, ["data", "config.yaml"], message), field: 'data["config.yaml"]' });
    if (traces?.processors?.[0] !== "memory_limiter") at("the traces pipeline must start with memory_limiter");
    if (traces?.processors?.at(-1) !== "batch") at("the traces pipeline must end with batch");
    for (const [name, pipeline] of Object.entries(service?.pipelines ?? {}))
      for (const kind of ["receivers", "processors", "exporters"] as const)
        for (const id of pipeline[kind] ?? [])
          if (!(id in ((collector.doc[kind] as Record<string, unknown> | undefined) ?? {})))
            at(`pipeline ${name} uses ${kind.slice(0, -1)} ${id}, which is not defined`);
    const exporters = (collector.doc.exporters ?? {}) as Record<string, { endpoint?: string }>;
    const toJaeger = (traces?.exporters ?? [])
      .map((id) => exporters[id]?.endpoint ?? "")
      .find((e) => /^[^:]+:\d+$/.test(e));
    const [host, port] = (toJaeger ?? ":").split(":");
    if (!serviceReaches(manifests, host!, Number(port), "jaeger"))
      at(
        `the traces pipeline must export to Jaeger's OTLP Service (jaeger-collector:4317), not ${toJaeger ?? "nowhere"}`,
      );
  }
  // Prometheus → Alertmanager.
  const prometheus = yamlOf("prometheus-config", "prometheus.yml");
  const targets = (
    (prometheus?.doc.alerting as { alertmanagers?: { static_configs?: { targets?: string[] }[] }[] } | undefined)
      ?.alertmanagers ?? []
  )
    .flatMap((a) => a.static_configs ?? [])
    .flatMap((s) => s.targets ?? []);
  if (!targets.some((t) => serviceReaches(manifests, t.split(":")[0]!, Number(t.split(":")[1]), "alertmanager")))
    problems.push(
      prometheus
        ? {
            ...problemAt(
              prometheus.m,
              ["data", "prometheus.yml"],
              "alerting.alertmanagers must name the Alertmanager Service (alertmanager:9093): alerts that fire must reach someone",
            ),
            field: 'data["prometheus.yml"]',
          }
        : { file: "k8s/monitoring/", object: "ConfigMap/prometheus-config", field: "", message: "missing" },
    );
  const am = yamlOf("alertmanager-config", "alertmanager.yml");
  if (!am || !hasPort(byName("alertmanager"), 9093))
    problems.push({
      file: "k8s/monitoring/",
      object: "Deployment/alertmanager",
      field: "",
      message: "Alertmanager (its Deployment on 9093 and ConfigMap alertmanager-config) is missing",
    });
  else {
    const receivers = (am.doc.receivers as { name: string; webhook_configs?: { url: string }[] }[] | undefined) ?? [];
    const route = am.doc.route as { receiver?: string } | undefined;
    const at = (message: string) =>
      problems.push({ ...problemAt(am.m, ["data", "alertmanager.yml"], message), field: 'data["alertmanager.yml"]' });
    const root = receivers.find((r) => r.name === route?.receiver);
    if (!root) at(`route.receiver "${route?.receiver}" is not a receiver`);
    for (const hook of root?.webhook_configs ?? []) {
      const u = new URL(hook.url);
      if (
        !serviceReaches(manifests, u.hostname, Number(u.port || 80), "otel-collector") &&
        !serviceReaches(manifests, u.hostname, Number(u.port || 80), u.hostname)
      )
        at(`webhook ${hook.url} does not reach a Service in k8s/`);
    }
    if (!root?.webhook_configs?.length)
      at("the default receiver must deliver somewhere (a webhook): a receiver without one drops every alert");
  }
  return problems;
};

export const HARDENING_CHECKS: Record<string, Check> = {
  checkPodSecurityRestricted,
  checkNoPlaintextCredentials,
  checkSecretReferences,
  checkServiceAccounts,
  checkExposure,
  checkDisruptionBudgets,
  checkTopologySpread,
  checkStartupProbes,
  checkImagesPinned,
  checkImagesPatched,
  checkRedis,
  checkGrafana,
  checkMonitoringWiring,
};
