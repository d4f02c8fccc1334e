/**
 * Checks that span several objects, or an object and the code it runs: what a schema cannot see.
 * Each check returns problems naming file, line, object and field, so a failing test says what
 * to fix; k8s/test/cross-object.test.ts runs one test per check.
 */
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import type { IDeployment } from "kubernetes-models/apps/v1/Deployment";
import type { IConfigMap } from "kubernetes-models/v1/ConfigMap";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IProbe } from "kubernetes-models/v1/Probe";
import type { IService } from "kubernetes-models/v1/Service";
import { parse as parseYaml } from "yaml";
import {
  dockerfileOf,
  IMAGE_REPOSITORY_PREFIX,
  imageName,
  SERVICES,
  type Service,
} from "../../../scripts/cluster/images.ts";
import { isAutoscaled } from "./autoscaling.ts";
import { K8S_DIR, type Manifest, manifestFiles, type Path, type Problem, problemAt, REPO_ROOT } from "./manifests.ts";

export const NAMESPACE = "portico";
export const REPLICAS = 3;
/** distroless' nonroot user. */
export const NONROOT_UID = 65532;
export const NAME_LABEL = "app.kubernetes.io/name";
const VERSION_LABEL = "app.kubernetes.io/version";
const REQUIRED_LABELS = [NAME_LABEL, "app.kubernetes.io/part-of", "app.kubernetes.io/component", VERSION_LABEL];
/** The env variables that choose a listening port, as the services read them (lib/env.ts envPort). */
const PORT_ENV = ["PORT", "HTTPS_PORT", "ADMIN_PORT", "METRICS_PORT"];
/** The container ports a NodePort may expose: the gateway's routes, in plain HTTP and over TLS. */
const PUBLIC_PORTS = ["http", "https"];
/** Kinds whose objects belong to the cluster, not to a namespace. */
const CLUSTER_SCOPED = new Set([
  "Namespace",
  "ClusterRole",
  "ClusterRoleBinding",
  "PersistentVolume",
  "StorageClass",
  "PriorityClass",
  "CustomResourceDefinition",
  "APIService",
]);

export type Labels = Record<string, string>;

/** Kinds that run pods from a template; the cross-object checks see their pods through it. */
const WORKLOAD_KINDS = new Set(["Deployment", "StatefulSet", "DaemonSet"]);

export interface Workload {
  m: Manifest;
  /** Deployment, StatefulSet or DaemonSet: the fields the checks read have the same shape. */
  deployment: IDeployment;
  /** The app.kubernetes.io/name label, which is also the service directory and the image name. */
  name: string;
  /**
   * One of Portico's own services (scripts/cluster/images.ts): built here, so its image, ports, env
   * and probes are checked against its code. Third-party workloads added later (Redis,
   * Prometheus…) get the checks that hold for any container.
   */
  own: boolean;
  podLabels: Labels;
  containers: IContainer[];
  /** The pod's init containers: plain ones run to completion first, sidecars (restartPolicy Always) run alongside. */
  initContainers: IContainer[];
}

export const CONTAINERS: Path = ["spec", "template", "spec", "containers"];
export const INIT_CONTAINERS: Path = ["spec", "template", "spec", "initContainers"];

/** A container of a pod template with its path: the rules on containers hold for init containers too. */
export interface PodContainer {
  c: IContainer;
  path: Path;
  /** An init container… */
  init: boolean;
  /** …that keeps running beside the others (restartPolicy Always): it serves, so it is probed like them. */
  sidecar: boolean;
}

/** Init containers, then containers, each with its path in the manifest. */
export function allContainers(w: Workload): PodContainer[] {
  return [
    ...w.initContainers.map((c, i) => ({
      c,
      path: [...INIT_CONTAINERS, i],
      init: true,
      sidecar: c.restartPolicy === "Always",
    })),
    ...w.containers.map((c, i) => ({ c, path: [...CONTAINERS, i], init: false, sidecar: false })),
  ];
}

export function workloadsOf(manifests: Manifest[]): Workload[] {
  return manifests
    .filter((m) => WORKLOAD_KINDS.has(String(m.object.kind)))
    .map((m) => {
      const deployment = m.object as unknown as IDeployment;
      const podLabels = deployment.spec?.template.metadata?.labels ?? {};
      const name = podLabels[NAME_LABEL] ?? String(deployment.metadata?.name);
      const own = m.object.kind === "Deployment" && (SERVICES as readonly string[]).includes(name);
      const spec = deployment.spec?.template.spec;
      return {
        m,
        deployment,
        name,
        own,
        podLabels,
        containers: spec?.containers ?? [],
        initContainers: spec?.initContainers ?? [],
      };
    });
}

function ownWorkloadsOf(manifests: Manifest[]): Workload[] {
  return workloadsOf(manifests).filter((w) => w.own);
}

export function ofKind<T>(manifests: Manifest[], kind: string): { m: Manifest; o: T }[] {
  return manifests.filter((m) => m.object.kind === kind).map((m) => ({ m, o: m.object as unknown as T }));
}

/**
 * A Service's `selector` (a plain map): an empty or missing one selects no pod (the Service's
 * endpoints are then managed by hand). Not for the LabelSelectors of Deployments, NetworkPolicies
 * or disruption budgets, where an empty selector selects every pod: matchesSelector.
 */
export function selects(selector: Labels | undefined, labels: Labels): boolean {
  const entries = Object.entries(selector ?? {});
  return entries.length > 0 && entries.every(([k, v]) => labels[k] === v);
}

export interface LabelSelectorRequirement {
  key: string;
  operator: string;
  values?: string[];
}

/** A LabelSelector (NetworkPolicy, PodDisruptionBudget, Deployment…). */
export interface LabelSelector {
  matchLabels?: Labels;
  matchExpressions?: LabelSelectorRequirement[];
}

export const SELECTOR_OPERATORS = ["In", "NotIn", "Exists", "DoesNotExist"] as const;

/** No term at all: `{}` selects every pod of the namespace. */
export function isEmptySelector(selector: LabelSelector | undefined): boolean {
  return Object.keys(selector?.matchLabels ?? {}).length === 0 && (selector?.matchExpressions ?? []).length === 0;
}

/**
 * Whether a LabelSelector selects a pod with `labels`, as the API server decides: every
 * matchLabels entry and every matchExpressions requirement holds, so an empty selector selects
 * every pod; a missing (null) one selects none. An operator the API does not know selects nothing
 * (the API server rejects it anyway).
 */
export function matchesSelector(selector: LabelSelector | undefined, labels: Labels): boolean {
  if (!selector) return false;
  const byLabels = Object.entries(selector.matchLabels ?? {}).every(([k, v]) => labels[k] === v);
  return (
    byLabels &&
    (selector.matchExpressions ?? []).every(({ key, operator, values = [] }) => {
      switch (operator) {
        case "In":
          return key in labels && values.includes(labels[key]!);
        case "NotIn":
          return !(key in labels) || !values.includes(labels[key]!);
        case "Exists":
          return key in labels;
        case "DoesNotExist":
          return !(key in labels);
        default:
          return false;
      }
    })
  );
}

function env(container: IContainer, name: string): string | undefined {
  return container.env?.find((e) => e.name === name)?.value;
}

/** A containerPort of `workload` by name or number, or undefined. */
export function findPort(
  workload: Workload,
  port: string | number,
): { container: IContainer; containerPort: number; name?: string } | undefined {
  for (const container of workload.containers) {
    for (const p of container.ports ?? []) {
      if (typeof port === "number" ? p.containerPort === port : p.name === port)
        return { container, containerPort: p.containerPort, name: p.name };
    }
  }
  return undefined;
}

export function describePorts(workload: Workload): string {
  return (
    workload.containers
      .flatMap((c) => (c.ports ?? []).map((p) => `${p.name ?? "(unnamed)"}=${p.containerPort}`))
      .join(", ") || "none"
  );
}

// ---- the services' sources, for the checks against the code they run --------------------------

function tsFiles(dir: string): string[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).flatMap((entry) => {
    const full = join(dir, entry);
    if (statSync(full).isDirectory()) return entry === "testing" || entry === "test" ? [] : tsFiles(full);
    return /\.ts$/.test(entry) && !/\.test\.ts$/.test(entry) ? [full] : [];
  });
}

const sourceCache = new Map<string, string>();
/** All TypeScript a service runs: `<service>/src` and the shared `lib/` (tests excluded). */
export function sourcesOf(service: string): string {
  let text = sourceCache.get(service);
  if (text === undefined) {
    text = [...tsFiles(join(REPO_ROOT, service, "src")), ...tsFiles(join(REPO_ROOT, "lib"))]
      .map((f) => readFileSync(f, "utf8"))
      .join("\n");
    sourceCache.set(service, text);
  }
  return text;
}

/** Whether the source holds `value` as a whole string literal ("/readyz", 'PORT', `…`). */
function hasStringLiteral(source: string, value: string): boolean {
  const escaped = value.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`["'\`]${escaped}["'\`]`).test(source);
}

/** Whether the source reads env variable `name`: by name as a string (`envInt("PORT", …)`) or as a property (`env.TLS_CLIENT_CA_FILE`). */
function readsEnv(source: string, name: string): boolean {
  return hasStringLiteral(source, name) || new RegExp(`\\benv\\.${name}\\b`).test(source);
}

// ---- checks ------------------------------------------------------------------------------------

export type Check = (manifests: Manifest[]) => Problem[];

/** Labels and selector of every workload; replicas and the zero-downtime rollout of Portico's own. */
export const checkDeploymentShape: Check = (manifests) => {
  const problems: Problem[] = [];
  for (const w of workloadsOf(manifests)) {
    const at = (path: Path, message: string) => problems.push(problemAt(w.m, path, message));
    const { deployment: d } = w;
    const kind = String(w.m.object.kind);
    for (const [where, labels] of [
      [["metadata", "labels"], d.metadata?.labels ?? {}],
      [["spec", "template", "metadata", "labels"], w.podLabels],
    ] as const) {
      for (const key of REQUIRED_LABELS) if (!labels[key]) at([...where, key], "required label is missing");
      if (labels[NAME_LABEL] && labels[NAME_LABEL] !== d.metadata?.name)
        at([...where, NAME_LABEL], `must equal the ${kind}'s name "${d.metadata?.name}"`);
      if (labels["app.kubernetes.io/part-of"] && labels["app.kubernetes.io/part-of"] !== "portico")
        at([...where, "app.kubernetes.io/part-of"], 'must be "portico"');
    }
    if (d.metadata?.labels?.[VERSION_LABEL] !== w.podLabels[VERSION_LABEL])
      at(["spec", "template", "metadata", "labels", VERSION_LABEL], `must equal the ${kind}'s own version label`);
    const selector = d.spec?.selector;
    const matchLabels = selector?.matchLabels ?? {};
    if (Object.keys(matchLabels).join() !== NAME_LABEL || selector?.matchExpressions) {
      at(
        ["spec", "selector"],
        `must select on ${NAME_LABEL} only (selectors are immutable; a version in them breaks every upgrade)`,
      );
    }
    if (!selects(matchLabels, w.podLabels))
      at(["spec", "selector", "matchLabels"], "does not match the pod template's labels");
    if (!w.own) continue;
    // With an autoscaler in k8s/ the count is its own (autoscaling.ts checks minReplicas ≥ 3 there).
    if (!isAutoscaled(manifests, w.name) && d.spec?.replicas !== REPLICAS)
      at(["spec", "replicas"], `must be ${REPLICAS} (or left to an autoscaler)`);
    const strategy = d.spec?.strategy;
    if (
      strategy?.type !== "RollingUpdate" ||
      strategy.rollingUpdate?.maxSurge !== 1 ||
      strategy.rollingUpdate?.maxUnavailable !== 0
    ) {
      at(
        ["spec", "strategy"],
        "must be RollingUpdate with maxSurge: 1 and maxUnavailable: 0 (upgrades without downtime)",
      );
    }
    if (!((d.spec?.minReadySeconds ?? 0) > 0))
      at(
        ["spec", "minReadySeconds"],
        "must be set above 0, so a pod that crashes right after becoming ready stops the rollout",
      );
  }
  return problems;
};

/**
 * Probes, resources and a locked-down security context on every container, init containers
 * included (probes only where the container keeps running: not on a plain init container, which
 * runs to completion and may not have any, but on a sidecar, restartPolicy Always); for
 * Portico's own, also the nonroot uid and pull policy, and on its main containers the preStop,
 * shutdown timing and identity env.
 */
export const checkContainers: Check = (manifests) => {
  const problems: Problem[] = [];
  for (const w of workloadsOf(manifests)) {
    const podSpec = w.deployment.spec?.template.spec;
    const pod = podSpec?.securityContext ?? {};
    for (const { c, path, init, sidecar } of allContainers(w)) {
      const at = (field: Path, message: string) => problems.push(problemAt(w.m, [...path, ...field], message));
      const what = sidecar ? "a sidecar (restartPolicy Always) init container" : "every container";
      if (!init || sidecar) {
        if (!c.readinessProbe) at(["readinessProbe"], `${what} needs a readiness probe`);
        if (!c.livenessProbe) at(["livenessProbe"], `${what} needs a liveness probe`);
      }
      for (const kind of ["requests", "limits"] as const) {
        for (const resource of ["cpu", "memory"])
          if (c.resources?.[kind]?.[resource] === undefined) at(["resources", kind, resource], "must be set");
      }
      const sc = c.securityContext ?? {};
      if ((sc.runAsNonRoot ?? pod.runAsNonRoot) !== true) at(["securityContext", "runAsNonRoot"], "must be true");
      if (sc.readOnlyRootFilesystem !== true) at(["securityContext", "readOnlyRootFilesystem"], "must be true");
      if (sc.allowPrivilegeEscalation !== false) at(["securityContext", "allowPrivilegeEscalation"], "must be false");
      if (!sc.capabilities?.drop?.includes("ALL"))
        at(["securityContext", "capabilities", "drop"], "must drop ALL capabilities");
      if ((sc.seccompProfile ?? pod.seccompProfile)?.type !== "RuntimeDefault")
        at(["securityContext", "seccompProfile", "type"], "must be RuntimeDefault");
      if (!w.own) continue;
      if ((sc.runAsUser ?? pod.runAsUser) !== NONROOT_UID)
        at(["securityContext", "runAsUser"], `must be ${NONROOT_UID} (distroless nonroot)`);
      if (c.imagePullPolicy !== "IfNotPresent")
        at(["imagePullPolicy"], "must be IfNotPresent (images are built inside minikube with unique tags)");
      if (init) continue; // the drain below is the serving container's
      const preStop = c.lifecycle?.preStop;
      if (preStop?.exec)
        at(
          ["lifecycle", "preStop", "exec"],
          "the distroless images have no shell or sleep binary; use `sleep: {seconds: N}`",
        );
      const preStopSeconds = preStop?.sleep?.seconds;
      if (preStopSeconds === undefined)
        at(
          ["lifecycle", "preStop", "sleep", "seconds"],
          "a preStop sleep must give the endpoints time to drop the pod before SIGTERM",
        );
      const drain = Number(env(c, "DRAIN_DELAY_MS"));
      const shutdown = Number(env(c, "SHUTDOWN_TIMEOUT_MS"));
      if (!Number.isInteger(drain)) at(["env"], "DRAIN_DELAY_MS must be set (the services default to 0: no drain)");
      if (!Number.isInteger(shutdown)) at(["env"], "SHUTDOWN_TIMEOUT_MS must be set");
      const grace = podSpec?.terminationGracePeriodSeconds ?? 30;
      if (preStopSeconds !== undefined && Number.isInteger(drain) && Number.isInteger(shutdown)) {
        const total = preStopSeconds + drain / 1000 + shutdown / 1000;
        if (total >= grace) {
          problems.push(
            problemAt(
              w.m,
              ["spec", "template", "spec", "terminationGracePeriodSeconds"],
              `${grace} s does not cover preStop ${preStopSeconds} s + DRAIN_DELAY_MS ${drain} ms + SHUTDOWN_TIMEOUT_MS ${shutdown} ms = ${total} s: the kubelet would SIGKILL mid-drain`,
            ),
          );
        }
      }
      const fieldRef = (name: string) => c.env?.find((e) => e.name === name)?.valueFrom?.fieldRef?.fieldPath;
      if (fieldRef("SERVICE_VERSION") !== `metadata.labels['${VERSION_LABEL}']`)
        at(["env"], `SERVICE_VERSION must come from the pod's ${VERSION_LABEL} label (fieldRef)`);
      if (fieldRef("INSTANCE_ID") !== "metadata.name")
        at(["env"], "INSTANCE_ID must come from metadata.name (fieldRef), so x-served-by names the pod");
    }
  }
  return problems;
};

/**
 * Portico's Deployments run exactly the images scripts/up.ts builds, from Dockerfiles that exist:
 * each main container its own service's image; an init container there may run any image up.ts
 * builds (or a third-party one, pinned by hardening.ts). No other workload runs a Portico image.
 */
export const checkImages: Check = (manifests) => {
  const problems: Problem[] = [];
  const workloads = workloadsOf(manifests);
  const built = SERVICES.map(imageName);
  for (const w of workloads) {
    for (const { c, path, init } of allContainers(w)) {
      const image = c.image ?? "";
      const [repository, tag, ...rest] = image.split(":");
      const ours = repository?.startsWith(`${IMAGE_REPOSITORY_PREFIX}/`);
      const at = (message: string) => problems.push(problemAt(w.m, [...path, "image"], message));
      if (w.own && !init && (repository !== imageName(w.name as Service) || !tag || rest.length > 0))
        at(`"${image}" must be ${imageName(w.name as Service)}:<tag>, the image scripts/up.ts builds`);
      else if (w.own && init && ours && (!built.includes(repository!) || !tag || rest.length > 0))
        at(`"${image}" is not an image scripts/up.ts builds (${built.map((b) => `${b}:<tag>`).join(", ")})`);
      else if (!w.own && ours) at(`"${image}" is not an image scripts/up.ts builds (${built.join(", ")})`);
    }
  }
  for (const service of SERVICES) {
    if (!workloads.some((w) => w.own && w.name === service))
      problems.push({
        file: "k8s/",
        object: `Deployment/${service}`,
        field: "",
        message: "scripts/up.ts builds this image but no Deployment runs it",
      });
    if (!existsSync(join(REPO_ROOT, dockerfileOf(service))))
      problems.push({
        file: dockerfileOf(service),
        object: `image ${imageName(service)}`,
        field: "",
        message: "the Dockerfile scripts/up.ts builds from is missing",
      });
  }
  // Only the root kustomization sets tags: kustomize applies its `images:` to nested folders too.
  for (const k of manifests.filter((m) => m.object.kind === "Kustomization" && m.file === "k8s/kustomization.yaml")) {
    const images = (k.object.images as { name: string }[] | undefined) ?? [];
    const named = new Set(images.map((i) => i.name));
    for (const service of SERVICES)
      if (!named.has(imageName(service)))
        problems.push(problemAt(k, ["images"], `needs an entry for ${imageName(service)} so its tag can be set`));
    images.forEach((img, i) => {
      if (!SERVICES.some((s) => imageName(s) === img.name))
        problems.push(problemAt(k, ["images", i, "name"], `"${img.name}" is not an image scripts/up.ts builds`));
    });
  }
  return problems;
};

/** Every Service selects the pods of one Deployment, and each targetPort is one of their ports. */
export const checkServices: Check = (manifests) => {
  const problems: Problem[] = [];
  const workloads = workloadsOf(manifests);
  for (const { m, o: svc } of ofKind<IService>(manifests, "Service")) {
    const selector = svc.spec?.selector;
    const matching = workloads.filter((w) => selects(selector, w.podLabels));
    if (matching.length !== 1) {
      problems.push(
        problemAt(
          m,
          ["spec", "selector"],
          matching.length === 0
            ? "selects no pods of any Deployment in k8s/"
            : `selects pods of several Deployments (${matching.map((w) => w.name).join(", ")})`,
        ),
      );
      continue;
    }
    const w = matching[0]!;
    const external = svc.spec?.type === "NodePort" || svc.spec?.type === "LoadBalancer";
    (svc.spec?.ports ?? []).forEach((p, i) => {
      const target = p.targetPort ?? p.port;
      const found = findPort(w, target);
      if (!found) {
        problems.push(
          problemAt(
            m,
            ["spec", "ports", i, p.targetPort === undefined ? "port" : "targetPort"],
            `${JSON.stringify(target)} is not a containerPort of Deployment/${w.name} (${describePorts(w)})`,
          ),
        );
      } else if (external && !PUBLIC_PORTS.includes(found.name ?? "")) {
        problems.push(
          problemAt(
            m,
            ["spec", "ports", i, "targetPort"],
            `a ${svc.spec?.type} Service exposes only the public ${PUBLIC_PORTS.map((n) => `"${n}"`).join(" and ")} ports, not "${found.name ?? found.containerPort}"`,
          ),
        );
      }
    });
  }
  return problems;
};

/**
 * Container ports are the ports the app listens on: each PORT/ADMIN_PORT/METRICS_PORT the app
 * reads is set, its value is a containerPort, and every containerPort is one of them.
 */
export const checkPortsMatchEnv: Check = (manifests) => {
  const problems: Problem[] = [];
  for (const w of ownWorkloadsOf(manifests)) {
    const source = sourcesOf(w.name);
    w.containers.forEach((c, i) => {
      const path: Path = [...CONTAINERS, i];
      const portEnv = new Map<number, string>();
      for (const name of PORT_ENV) {
        const value = env(c, name);
        const read = hasStringLiteral(source, name);
        if (read && value === undefined)
          problems.push(
            problemAt(
              w.m,
              [...path, "env"],
              `${name} is read by ${w.name}/src but not set here: the containerPort would silently depend on the code's default`,
            ),
          );
        if (value === undefined) continue;
        const index = c.env!.findIndex((e) => e.name === name);
        if (!(c.ports ?? []).some((p) => String(p.containerPort) === value)) {
          problems.push(
            problemAt(
              w.m,
              [...path, "env", index, "value"],
              `${name}=${value} but the container declares no containerPort ${value} (${describePorts(w)})`,
            ),
          );
        }
        portEnv.set(Number(value), name);
      }
      (c.ports ?? []).forEach((p, j) => {
        if (!portEnv.has(p.containerPort))
          problems.push(
            problemAt(
              w.m,
              [...path, "ports", j, "containerPort"],
              `${p.containerPort} is not the value of any of ${PORT_ENV.join("/")} set on this container: the app listens elsewhere`,
            ),
          );
      });
    });
  }
  return problems;
};

/**
 * Env variables the manifests set before the apps read them: each is a feature the cluster
 * hardening asked the apps for (listed in k8s/README.md). Until the code
 * reads one, setting it does nothing, which is why the list is explicit and checked both ways:
 * k8s/test/hardening.test.ts fails once the code reads a name still listed here, so the entry is
 * removed and checkEnvIsRead covers it like every other.
 */
export const PENDING_APP_ENV: Readonly<Record<string, Readonly<Record<string, string>>>> = {};

/**
 * `${VAR}` references in the ConfigMaps a workload mounts: the gateway reads these variables
 * through its routes.yaml (gateway/src/config/interpolate.ts), not by name in its code.
 */
export function configReferences(manifests: Manifest[], w: Workload): Set<string> {
  const mounted = new Set((w.deployment.spec?.template.spec?.volumes ?? []).map((v) => v.configMap?.name));
  const text = ofKind<IConfigMap>(manifests, "ConfigMap")
    .filter(({ o }) => mounted.has(o.metadata?.name))
    .flatMap(({ o }) => Object.values(o.data ?? {}))
    .join("\n");
  return new Set([...text.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)/g)].map((m) => m[1]!));
}

/**
 * Every env variable set on a container is one its code reads (a misspelt name does nothing), or
 * one a later variable of the container takes in as `$(NAME)` (Kubernetes' dependent variables);
 * and every such `$(NAME)` names a variable set before it, as Kubernetes expands only those (any
 * other stays in the value as written).
 */
export const checkEnvIsRead: Check = (manifests) => {
  const problems: Problem[] = [];
  for (const w of ownWorkloadsOf(manifests)) {
    const source = sourcesOf(w.name);
    const pending = PENDING_APP_ENV[w.name] ?? {};
    const referenced = configReferences(manifests, w);
    w.containers.forEach((c, i) => {
      const env = c.env ?? [];
      const expanded = new Set<string>();
      env.forEach((e, j) => {
        // `$$` is an escaped `$`: a reference is a `$(NAME)` after an even run of `$` before it.
        for (const [, dollars, name] of (e.value ?? "").matchAll(/(\$+)\(([A-Za-z_][A-Za-z0-9_]*)\)/g)) {
          if (dollars!.length % 2 === 0) continue;
          expanded.add(name!);
          if (!env.slice(0, j).some((before) => before.name === name))
            problems.push(
              problemAt(
                w.m,
                [...CONTAINERS, i, "env", j, "value"],
                `$(${name}) names no variable set before ${e.name} on this container: Kubernetes leaves it as written`,
              ),
            );
        }
      });
      env.forEach((e, j) => {
        if (!(e.name in pending) && !referenced.has(e.name) && !expanded.has(e.name) && !readsEnv(source, e.name))
          problems.push(
            problemAt(
              w.m,
              [...CONTAINERS, i, "env", j, "name"],
              `${e.name} is not read anywhere in ${w.name}/src or lib/, nor referenced in a ConfigMap it mounts or by another variable`,
            ),
          );
      });
    });
  }
  return problems;
};

/** Probe ports are container ports; for Portico's own, HTTP probe paths are routes in the app and gRPC probes hit its health service. */
export const checkProbes: Check = (manifests) => {
  const problems: Problem[] = [];
  for (const w of workloadsOf(manifests)) {
    const source = w.own ? sourcesOf(w.name) : "";
    w.containers.forEach((c, i) => {
      for (const kind of ["readinessProbe", "livenessProbe", "startupProbe"] as const) {
        const probe: IProbe | undefined = c[kind];
        if (!probe) continue;
        const path: Path = [...CONTAINERS, i, kind];
        if (probe.httpGet) {
          if (!findPort(w, probe.httpGet.port))
            problems.push(
              problemAt(
                w.m,
                [...path, "httpGet", "port"],
                `${JSON.stringify(probe.httpGet.port)} is not a containerPort (${describePorts(w)})`,
              ),
            );
          const route = probe.httpGet.path ?? "/";
          if (w.own && !hasStringLiteral(source, route))
            problems.push(
              problemAt(
                w.m,
                [...path, "httpGet", "path"],
                `"${route}" is not a route string anywhere in ${w.name}/src or lib/`,
              ),
            );
        } else if (probe.grpc) {
          if (!findPort(w, probe.grpc.port))
            problems.push(
              problemAt(
                w.m,
                [...path, "grpc", "port"],
                `${probe.grpc.port} is not a containerPort (${describePorts(w)})`,
              ),
            );
          if (w.own && !source.includes("grpc.health.v1"))
            problems.push(
              problemAt(
                w.m,
                [...path, "grpc"],
                `${w.name}/src does not implement grpc.health.v1.Health, which a grpc probe calls`,
              ),
            );
        } else if (w.own) {
          problems.push(
            problemAt(w.m, path, "use an httpGet or grpc probe (the images have no shell for exec probes)"),
          );
        }
      }
    });
  }
  return problems;
};

function endpointsOf(value: unknown): string[] {
  const list = Array.isArray(value) ? value.map(String) : typeof value === "string" ? value.split(",") : [];
  // `${VAR:-default}` in the cluster file would take its default: that is what is checked.
  return list
    .map((e) => e.trim().replace(/\$\{[A-Za-z_]\w*(?::-([^}]*))?\}/g, (_m, d: string | undefined) => d ?? ""))
    .filter(Boolean);
}

/** The gateway's routes ConfigMap: mounted where ROUTES_FILE points, upstreams are headless Services. */
export const checkGatewayRoutes: Check = (manifests) => {
  const problems: Problem[] = [];
  const gateway = workloadsOf(manifests).find((w) => w.name === "gateway");
  if (!gateway) return [{ file: "k8s/", object: "Deployment/gateway", field: "", message: "missing" }];
  const c = gateway.containers[0]!;
  const routesFile = env(c, "ROUTES_FILE");
  const podSpec = gateway.deployment.spec?.template.spec;
  const mount = c.volumeMounts?.find((v) => routesFile?.startsWith(`${v.mountPath.replace(/\/$/, "")}/`));
  const volume = podSpec?.volumes?.find((v) => v.name === mount?.name);
  const configMapName = volume?.configMap?.name;
  if (!routesFile || !mount || !configMapName) {
    return [
      problemAt(
        gateway.m,
        [...CONTAINERS, 0, "volumeMounts"],
        `ROUTES_FILE (${routesFile ?? "unset"}) must lie in a directory where a ConfigMap volume is mounted`,
      ),
    ];
  }
  const key = routesFile.slice(mount.mountPath.replace(/\/$/, "").length + 1);
  const cm = ofKind<IConfigMap>(manifests, "ConfigMap").find(({ o }) => o.metadata?.name === configMapName);
  if (!cm)
    return [
      problemAt(
        gateway.m,
        ["spec", "template", "spec", "volumes"],
        `ConfigMap "${configMapName}" is not defined in k8s/`,
      ),
    ];
  const text = cm.o.data?.[key];
  if (text === undefined) return [problemAt(cm.m, ["data"], `has no key "${key}" (ROUTES_FILE=${routesFile})`)];
  const at = (field: string, message: string) =>
    problems.push({ ...problemAt(cm.m, ["data", key], message), field: `data["${key}"] ${field}` });
  const routes = parseYaml(text) as { upstreams?: Record<string, { endpoints?: unknown; protocol?: string }> };
  const services = new Map(ofKind<IService>(manifests, "Service").map(({ o }) => [o.metadata?.name, o]));
  for (const [name, upstream] of Object.entries(routes.upstreams ?? {})) {
    const endpoints = endpointsOf(upstream.endpoints);
    if (endpoints.length === 0) at(`upstreams.${name}.endpoints`, "no endpoints");
    for (const endpoint of endpoints) {
      const match = /^(.+):(\d+)$/.exec(endpoint);
      if (!match) {
        at(`upstreams.${name}.endpoints`, `"${endpoint}" is not host:port`);
        continue;
      }
      const [, host, port] = match as unknown as [string, string, string];
      if (isIpLiteral(host)) {
        at(`upstreams.${name}.endpoints`, `"${endpoint}" is an IP address: name a Service instead`);
        continue;
      }
      // `webapp-headless`, `webapp-headless.portico` or `webapp-headless.portico.svc.cluster.local`.
      const [serviceName, namespace] = host.split(".");
      const svc = services.get(serviceName);
      if (!svc || (namespace !== undefined && namespace !== NAMESPACE)) {
        at(`upstreams.${name}.endpoints`, `"${host}" is not a Service in k8s/ (${[...services.keys()].join(", ")})`);
        continue;
      }
      if (svc.spec?.clusterIP !== "None")
        at(
          `upstreams.${name}.endpoints`,
          `Service "${serviceName}" is not headless: the gateway needs each pod's address to balance every request`,
        );
      if (!(svc.spec?.ports ?? []).some((p) => String(p.port) === port))
        at(`upstreams.${name}.endpoints`, `Service "${serviceName}" has no port ${port}`);
    }
  }
  return problems;
};

/** Outside test data, k8s/ names every address by DNS: no IP literal anywhere. */
export function checkNoIpLiterals(root = K8S_DIR): Problem[] {
  const problems: Problem[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      const full = join(dir, entry);
      if (statSync(full).isDirectory()) {
        if (entry !== "test") walk(full);
        continue;
      }
      if (/\.md$/.test(entry)) continue;
      readFileSync(full, "utf8")
        .split("\n")
        .forEach((line, i) => {
          for (const match of line.matchAll(
            /(?<![\w.])(\d{1,3}(?:\.\d{1,3}){3})(?![\w.])|\[[0-9a-fA-F:]*:[0-9a-fA-F:]*\]/g,
          )) {
            // A listener's "every interface" (0.0.0.0:4318) names no address to reach.
            if (match[0] === "0.0.0.0") continue;
            problems.push({
              file: relative(REPO_ROOT, full),
              line: i + 1,
              object: "",
              field: "",
              message: `IP literal "${match[0]}": name a Service or use DNS`,
            });
          }
        });
    }
  };
  walk(root);
  return problems;
}

function isIpLiteral(host: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.includes(":") || host.startsWith("[");
}

/** Everything namespaced is in the kustomization's namespace, which is created here. */
export const checkNamespaces: Check = (manifests) => {
  const problems: Problem[] = [];
  const root = manifests.find((m) => m.object.kind === "Kustomization" && m.file === "k8s/kustomization.yaml");
  const namespace = root?.object.namespace;
  if (namespace !== NAMESPACE)
    problems.push(
      root
        ? problemAt(root, ["namespace"], `must be "${NAMESPACE}"`)
        : { file: "k8s/kustomization.yaml", object: "", field: "", message: "missing" },
    );
  if (!manifests.some((m) => m.object.kind === "Namespace" && m.object.metadata?.name === NAMESPACE)) {
    problems.push({
      file: "k8s/",
      object: `Namespace/${NAMESPACE}`,
      field: "",
      message: "no manifest creates the namespace",
    });
  }
  for (const m of manifests) {
    if (m.object.kind === "Kustomization" || CLUSTER_SCOPED.has(String(m.object.kind))) continue;
    if (m.object.metadata?.namespace !== NAMESPACE)
      problems.push(
        problemAt(
          m,
          ["metadata", "namespace"],
          `must be "${NAMESPACE}", so the file also works with plain \`kubectl apply -f\``,
        ),
      );
  }
  return problems;
};

/** Files kustomize deploys from `kustomizationFile`, following directory resources. */
export function deployedFiles(kustomizationFile = join(K8S_DIR, "kustomization.yaml")): Set<string> {
  const out = new Set<string>([kustomizationFile]);
  const k = parseYaml(readFileSync(kustomizationFile, "utf8")) as { resources?: string[]; components?: string[] };
  for (const resource of [...(k.resources ?? []), ...(k.components ?? [])]) {
    const full = resolve(dirname(kustomizationFile), resource);
    if (existsSync(full) && statSync(full).isDirectory()) {
      const nested = ["kustomization.yaml", "kustomization.yml"].map((f) => join(full, f)).find(existsSync);
      if (nested) for (const f of deployedFiles(nested)) out.add(f);
    } else {
      out.add(full);
    }
  }
  return out;
}

/** Every manifest under k8s/ is deployed by `kubectl apply -k k8s/`: none is forgotten. */
export function checkEverythingDeployed(): Problem[] {
  const deployed = deployedFiles();
  return manifestFiles()
    .filter((f) => !deployed.has(f))
    .map((f) => ({
      file: relative(REPO_ROOT, f),
      object: "",
      field: "",
      message:
        "not listed in k8s/kustomization.yaml resources (directly or through a directory), so `make up` never applies it",
    }));
}

// NetworkPolicies, disruption budgets and the rest of the cluster's posture: hardening.ts and
// network-policies.ts (k8s/test/hardening.test.ts).

export const ALL_CHECKS: Record<string, Check> = {
  checkDeploymentShape,
  checkContainers,
  checkImages,
  checkServices,
  checkPortsMatchEnv,
  checkEnvIsRead,
  checkProbes,
  checkGatewayRoutes,
  checkNamespaces,
};
