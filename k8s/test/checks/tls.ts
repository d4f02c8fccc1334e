/**
 * TLS on every hop, checked across objects: each certificate file a process reads (webapp's and
 * rpcapp's TLS_* env, the gateway's routes.yaml as its Deployment's env makes it) lies in a
 * read-only, whole-directory mount of the right Secret under the right key; the name the gateway
 * verifies each upstream by is in the certificate `make up` issues for it, and in no other; no
 * probe or scrape targets a port that speaks TLS only; the HTTPS port is exposed; and spans go to
 * the collector over TLS, to a name its certificate carries, with the CA that issued it. The
 * certificates themselves are made by scripts/cluster/tls.ts (k8s/test/tls.test.ts uses them for
 * real handshakes).
 */
import type { IConfigMap } from "kubernetes-models/v1/ConfigMap";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IService } from "kubernetes-models/v1/Service";
import { parseDocument, parse as parseYaml } from "yaml";
import { interpolateDocument } from "../../../gateway/src/config/interpolate.ts";
import { clusterIdentities, TLS_SECRETS, type TlsSecretName } from "../../../scripts/cluster/tls.ts";
import { type Check, CONTAINERS, findPort, ofKind, selects, type Workload, workloadsOf } from "./cross-checks.ts";
import { POD_SECRETS } from "./hardening.ts";
import { type Manifest, type Path, type Problem, problemAt } from "./manifests.ts";
import { allowedFlows } from "./network-policies.ts";

/** The Secret holding each identity's certificate (`edge` → portico-edge-tls). */
export const SECRET_OF: Readonly<Record<string, TlsSecretName>> = Object.fromEntries(
  Object.entries(TLS_SECRETS).map(([secret, identity]) => [identity, secret as TlsSecretName]),
);

/** webapp and rpcapp: the workloads that serve their API port over mutual TLS, each with its own certificate. */
export function tlsServers(manifests: Manifest[]): Workload[] {
  return workloadsOf(manifests).filter((w) => w.own && w.name in SECRET_OF);
}

/** What each service's TLS_* variable must name: a key of its own Secret. */
const SERVICE_FILES = { TLS_CERT_FILE: "tls.crt", TLS_KEY_FILE: "tls.key", TLS_CLIENT_CA_FILE: "ca.crt" } as const;

function envOf(c: IContainer, name: string): { value: string | undefined; index: number } {
  const index = (c.env ?? []).findIndex((e) => e.name === name);
  return { value: index < 0 ? undefined : c.env![index]!.value, index };
}

/** The env values written in the manifest (not the ones from a Secret or a field). */
function literalEnv(c: IContainer): Record<string, string> {
  return Object.fromEntries((c.env ?? []).flatMap((e) => (e.value === undefined ? [] : [[e.name, e.value]])));
}

type FileSource = { secret: string; key: string } | { problem: string };

/**
 * Where `file` comes from in container `c`: the Secret and key a read-only, whole-directory volume
 * mount puts there. A subPath mount, a writable one or a non-Secret volume is a problem.
 */
export function fileSource(w: Workload, c: IContainer, file: string): FileSource {
  const dir = (p: string) => p.replace(/\/$/, "");
  const mount = (c.volumeMounts ?? [])
    .filter((vm) => file === vm.mountPath || file.startsWith(`${dir(vm.mountPath)}/`))
    .sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  if (!mount) return { problem: `${file} is not under any volumeMount of container ${c.name}` };
  if (mount.subPath || mount.subPathExpr)
    return {
      problem: `${file} comes from volumeMount "${mount.name}" with a subPath, which never sees a renewed Secret: mount the whole directory`,
    };
  if (mount.readOnly !== true) return { problem: `volumeMount "${mount.name}" (${file}) must be readOnly` };
  const volume = w.deployment.spec?.template.spec?.volumes?.find((v) => v.name === mount.name);
  const sources = volume?.secret
    ? [{ name: volume.secret.secretName, items: volume.secret.items }]
    : (volume?.projected?.sources ?? []).flatMap((s) =>
        s.secret ? [{ name: s.secret.name, items: s.secret.items }] : [],
      );
  if (sources.length === 0) return { problem: `${file} is in volume "${mount.name}", which holds no Secret` };
  const relative = file.slice(dir(mount.mountPath).length + 1);
  for (const src of sources) {
    const name = src.name ?? "";
    if (src.items && src.items.length > 0) {
      const item = src.items.find((i) => i.path === relative);
      if (item) return { secret: name, key: item.key };
    } else if ((POD_SECRETS[name] ?? []).includes(relative)) {
      return { secret: name, key: relative };
    }
  }
  return {
    problem: `${file}: volume "${mount.name}" puts no key of ${sources.map((s) => s.name).join(", ")} at "${relative}"`,
  };
}

/** The files of every Secret-backed mount of `w`'s containers, as the kubelet writes them (path in the container → content). */
export function mountedFiles(w: Workload, secrets: Readonly<Record<string, Readonly<Record<string, string>>>>) {
  const files: Record<string, string> = {};
  for (const c of w.containers) {
    for (const vm of c.volumeMounts ?? []) {
      const volume = w.deployment.spec?.template.spec?.volumes?.find((v) => v.name === vm.name);
      const sources = volume?.secret
        ? [{ name: volume.secret.secretName, items: volume.secret.items }]
        : (volume?.projected?.sources ?? []).flatMap((s) =>
            s.secret ? [{ name: s.secret.name, items: s.secret.items }] : [],
          );
      for (const src of sources) {
        const data = secrets[src.name ?? ""] ?? {};
        const items = src.items?.length ? src.items : Object.keys(data).map((key) => ({ key, path: key }));
        for (const { key, path } of items)
          if (data[key] !== undefined) files[`${vm.mountPath.replace(/\/$/, "")}/${path}`] = data[key];
      }
    }
  }
  return files;
}

interface GatewayRoutes {
  gateway: Workload;
  container: IContainer;
  m: Manifest;
  key: string;
  /** routes.yaml as the gateway loads it: `${VAR}` replaced from the Deployment's own env values. */
  routes: {
    upstreams?: Record<
      string,
      {
        endpoints?: unknown;
        tls?: { enabled?: boolean; ca?: string; cert?: string; key?: string; serverName?: string };
      }
    >;
    tls?: { enabled?: boolean; certificates?: { cert?: string; key?: string }[] };
  };
}

/** The gateway's routes.yaml from the ConfigMap ROUTES_FILE lies in, interpolated with the Deployment's env. */
export function gatewayRoutes(manifests: Manifest[]): GatewayRoutes | undefined {
  const gateway = workloadsOf(manifests).find((w) => w.own && w.name === "gateway");
  const container = gateway?.containers[0];
  if (!gateway || !container) return undefined;
  const file = envOf(container, "ROUTES_FILE").value ?? "";
  const mount = container.volumeMounts?.find((vm) => file.startsWith(`${vm.mountPath.replace(/\/$/, "")}/`));
  const volume = gateway.deployment.spec?.template.spec?.volumes?.find((v) => v.name === mount?.name);
  const cm = ofKind<IConfigMap>(manifests, "ConfigMap").find(({ o }) => o.metadata?.name === volume?.configMap?.name);
  const key = mount ? file.slice(mount.mountPath.replace(/\/$/, "").length + 1) : "";
  const text = cm?.o.data?.[key];
  if (!cm || text === undefined) return undefined; // checkGatewayRoutes reports it
  const doc = parseDocument(text);
  interpolateDocument(doc, literalEnv(container));
  return { gateway, container, m: cm.m, key, routes: doc.toJS() as GatewayRoutes["routes"] };
}

/**
 * Every hop is TLS, and each certificate file is where its Secret puts it: webapp's and rpcapp's
 * TLS_CERT_FILE / TLS_KEY_FILE / TLS_CLIENT_CA_FILE name tls.crt / tls.key / ca.crt of their own
 * Secret; the gateway's upstream `tls` blocks name the gateway-client Secret's ca.crt, tls.crt and
 * tls.key, and its listener's `tls` block the edge Secret's tls.crt and tls.key.
 */
export const checkTlsFiles: Check = (manifests) => {
  const problems: Problem[] = [];
  /** What is wrong with `file` in `w`'s container `c`, which must be `secret`'s `key`; undefined when nothing. */
  const wrongFile = (w: Workload, c: IContainer, file: string | undefined, secret: string, key: string) => {
    if (file === undefined) return `not set (${secret}/${key})`;
    const source = fileSource(w, c, file);
    if ("problem" in source) return source.problem;
    if (source.secret !== secret || source.key !== key)
      return `${file} is ${source.secret}/${source.key}, but must be ${secret}/${key}`;
    return undefined;
  };
  for (const w of tlsServers(manifests)) {
    const c = w.containers[0]!;
    const secret = SECRET_OF[w.name]!;
    for (const [name, key] of Object.entries(SERVICE_FILES)) {
      const { value, index } = envOf(c, name);
      if (value === undefined) {
        problems.push(
          problemAt(
            w.m,
            [...CONTAINERS, 0, "env"],
            `${name} must be set (${secret}/${key}): ${w.name} is reached over mutual TLS, like every hop`,
          ),
        );
        continue;
      }
      const wrong = wrongFile(w, c, value, secret, key);
      if (wrong) problems.push(problemAt(w.m, [...CONTAINERS, 0, "env", index, "value"], `${name}: ${wrong}`));
    }
  }
  const g = gatewayRoutes(manifests);
  if (!g) return problems;
  const at = (field: string, message: string) =>
    problems.push({ ...problemAt(g.m, ["data", g.key], message), field: `data["${g.key}"] ${field}` });
  const client = SECRET_OF["gateway-client"]!;
  for (const [name, upstream] of Object.entries(g.routes.upstreams ?? {})) {
    const tls = upstream.tls;
    if (!tls || tls.enabled === false) {
      at(
        `upstreams.${name}.tls`,
        `must be on with the gateway Deployment's env: ${name} accepts mutual TLS only (TLS on every hop)`,
      );
      continue;
    }
    for (const [field, key] of [
      ["ca", "ca.crt"],
      ["cert", "tls.crt"],
      ["key", "tls.key"],
    ] as const) {
      const wrong = wrongFile(g.gateway, g.container, tls[field], client, key);
      if (wrong) at(`upstreams.${name}.tls.${field}`, wrong);
    }
  }
  const listener = g.routes.tls;
  if (!listener || listener.enabled === false || !listener.certificates?.length) {
    at("tls", "must be on with the gateway Deployment's env: the HTTPS listener behind the Service's https port");
  } else {
    listener.certificates.forEach((cert, i) => {
      for (const [field, key] of [
        ["cert", "tls.crt"],
        ["key", "tls.key"],
      ] as const) {
        const wrong = wrongFile(g.gateway, g.container, cert[field], SECRET_OF.edge!, key);
        if (wrong) at(`tls.certificates[${i}].${field}`, wrong);
      }
    });
  }
  return problems;
};

/** Whether DNS name pattern `pattern` (exact, or `*.` for one label) covers `host`. */
export function nameCovers(pattern: string, host: string): boolean {
  const p = pattern.toLowerCase();
  const h = host.toLowerCase();
  if (!p.startsWith("*.")) return p === h;
  const dot = h.indexOf(".");
  return dot > 0 && h.slice(dot + 1) === p.slice(2);
}

/**
 * The gateway verifies each upstream's certificate for `tls.serverName`, else for its endpoints'
 * host (the headless Service). That name must be in the certificate scripts/cluster/tls.ts issues
 * for the Secret the Service's pods serve, and in no other server certificate (else one service's
 * certificate would pass for another's); and the port the gateway dials must be the one its
 * container serves TLS on.
 */
export const checkTlsNames: Check = (manifests) => {
  const problems: Problem[] = [];
  const g = gatewayRoutes(manifests);
  if (!g) return problems;
  const at = (field: string, message: string) =>
    problems.push({ ...problemAt(g.m, ["data", g.key], message), field: `data["${g.key}"] ${field}` });
  const identities = clusterIdentities();
  const services = new Map(ofKind<IService>(manifests, "Service").map(({ o }) => [o.metadata?.name, o]));
  const workloads = workloadsOf(manifests);
  for (const [name, upstream] of Object.entries(g.routes.upstreams ?? {})) {
    if (!upstream.tls || upstream.tls.enabled === false) continue; // checkTlsFiles reports it
    const endpoints = (
      Array.isArray(upstream.endpoints) ? upstream.endpoints : String(upstream.endpoints ?? "").split(",")
    )
      .map((e) => String(e).trim())
      .filter(Boolean);
    const [host = "", port] = (endpoints[0] ?? "").split(":");
    const verified = upstream.tls.serverName ?? host;
    const svc = services.get(host.split(".")[0]);
    const w = workloads.find((x) => selects(svc?.spec?.selector, x.podLabels));
    const c = w?.containers[0];
    if (!svc || !w || !c) continue; // checkGatewayRoutes reports it
    const certFile = envOf(c, "TLS_CERT_FILE").value;
    const source = certFile ? fileSource(w, c, certFile) : undefined;
    if (!source || "problem" in source || !(source.secret in TLS_SECRETS)) {
      at(`upstreams.${name}.tls`, `${w.name} serves no certificate from a Secret make up issues (TLS_CERT_FILE)`);
      continue;
    }
    const secret = source.secret as TlsSecretName;
    if (!(identities[secret].dnsNames ?? []).some((n) => nameCovers(n, verified)))
      at(
        `upstreams.${name}.tls${upstream.tls.serverName ? ".serverName" : ""}`,
        `the gateway verifies ${name} as "${verified}", which the certificate in ${secret} does not carry (${(identities[secret].dnsNames ?? []).join(", ")})`,
      );
    const others = (Object.keys(identities) as TlsSecretName[]).filter(
      (s) =>
        s !== secret &&
        identities[s].usage !== "client" &&
        (identities[s].dnsNames ?? []).some((n) => nameCovers(n, verified)),
    );
    if (others.length > 0)
      at(
        `upstreams.${name}.tls${upstream.tls.serverName ? ".serverName" : ""}`,
        `"${verified}" is also in the certificate of ${others.join(", ")}: that one would be accepted as ${name} too`,
      );
    const target = svc.spec?.ports?.find((p) => String(p.port) === port)?.targetPort;
    const dialled = target === undefined ? undefined : findPort(w, target);
    const tlsPort = envOf(c, "PORT").value;
    if (dialled && String(dialled.containerPort) !== tlsPort)
      at(
        `upstreams.${name}.endpoints`,
        `the gateway speaks TLS to ${w.name}'s port ${dialled.containerPort}, but ${w.name} serves TLS on PORT ${tlsPort}`,
      );
  }
  return problems;
};

/** The ports of `c` that speak TLS only: the gateway's HTTPS_PORT, and PORT when the service has a certificate. */
export function tlsOnlyPorts(c: IContainer): Set<number> {
  const out = new Set<number>();
  const https = envOf(c, "HTTPS_PORT").value;
  if (https) out.add(Number(https));
  const port = envOf(c, "PORT").value;
  if (port && envOf(c, "TLS_CERT_FILE").value) out.add(Number(port));
  return out;
}

/**
 * The kubelet and Prometheus present no client certificate (and a grpc probe speaks no TLS): every
 * probe and every scraped port (prometheus.io/port) is a plain one, declared by the container, and
 * the NetworkPolicies let Prometheus reach it.
 */
export const checkPlainProbesAndScrapes: Check = (manifests) => {
  const problems: Problem[] = [];
  const flows = new Set(allowedFlows(manifests).map((f) => f.flow));
  const workloads = workloadsOf(manifests);
  const hasPrometheus = workloads.some((w) => w.name === "prometheus");
  for (const w of workloads) {
    const tlsPorts = new Map<number, string>();
    w.containers.forEach((c, i) => {
      const tls = tlsOnlyPorts(c);
      for (const p of c.ports ?? []) if (tls.has(p.containerPort)) tlsPorts.set(p.containerPort, p.name ?? "");
      for (const kind of ["startupProbe", "readinessProbe", "livenessProbe"] as const) {
        const probe = c[kind];
        const port = probe?.httpGet?.port ?? probe?.grpc?.port;
        if (port === undefined) continue;
        const found = findPort(w, port);
        if (found && tls.has(found.containerPort))
          problems.push(
            problemAt(
              w.m,
              [...CONTAINERS, i, kind, probe?.httpGet ? "httpGet" : "grpc", "port"],
              `port ${found.containerPort}${found.name ? ` (${found.name})` : ""} serves TLS only: the kubelet has no client certificate (a grpc probe speaks no TLS); probe the plain port`,
            ),
          );
      }
    });
    const annotations = w.deployment.spec?.template.metadata?.annotations ?? {};
    if (annotations["prometheus.io/scrape"] !== "true") continue;
    const path: Path = ["spec", "template", "metadata", "annotations", "prometheus.io/port"];
    const port = Number(annotations["prometheus.io/port"]);
    const found = findPort(w, port);
    if (!found) {
      problems.push(problemAt(w.m, path, `${annotations["prometheus.io/port"]} is not a containerPort of ${w.name}`));
      continue;
    }
    if (tlsPorts.has(port)) {
      problems.push(
        problemAt(
          w.m,
          path,
          `port ${port} (${tlsPorts.get(port)}) serves TLS only: Prometheus scrapes plain HTTP without a client certificate`,
        ),
      );
      continue;
    }
    const flow = `prometheus -> ${w.name}:${found.name ?? `${port}/TCP`}`;
    if (hasPrometheus && !flows.has(flow))
      problems.push(problemAt(w.m, path, `the NetworkPolicies do not allow ${flow}: the scrape would time out`));
  }
  return problems;
};

/**
 * The gateway's HTTPS listener is a declared port named https (HTTPS_PORT), and its NodePort
 * Service exposes http, then https: scripts/up.ts reads `minikube service --url`'s lines in that order.
 */
export const checkGatewayHttps: Check = (manifests) => {
  const problems: Problem[] = [];
  const gateway = workloadsOf(manifests).find((w) => w.own && w.name === "gateway");
  const c = gateway?.containers[0];
  if (!gateway || !c) return problems;
  const { value, index } = envOf(c, "HTTPS_PORT");
  const https = findPort(gateway, "https");
  if (value === undefined || !https || String(https.containerPort) !== value)
    problems.push(
      problemAt(
        gateway.m,
        index < 0 ? [...CONTAINERS, 0, "env"] : [...CONTAINERS, 0, "env", index, "value"],
        `HTTPS_PORT (${value ?? "unset"}) must be the containerPort named https (${https?.containerPort ?? "none"})`,
      ),
    );
  const svc = ofKind<IService>(manifests, "Service").find(
    ({ o }) => o.spec?.type === "NodePort" && selects(o.spec?.selector, gateway.podLabels),
  );
  if (!svc) return problems;
  const targets = (svc.o.spec?.ports ?? []).map((p) => String(p.targetPort ?? p.port));
  if (targets[0] !== "http" || targets[1] !== "https")
    problems.push(
      problemAt(
        svc.m,
        ["spec", "ports"],
        `must expose targetPort http, then https (found ${targets.join(", ") || "none"}): scripts/up.ts takes minikube's second URL as the HTTPS one`,
      ),
    );
  return problems;
};

/** A TLS server's settings in the collector's config (configtls). */
interface CollectorTls {
  cert_file?: string;
  key_file?: string;
  min_version?: string;
  reload_interval?: string;
}

/**
 * Spans travel encrypted too (they carry request paths, client addresses and request ids): each
 * service sends them to an https endpoint whose host the collector's certificate carries, and
 * trusts the CA that issued it (OTEL_EXPORTER_OTLP_CERTIFICATE: the ca.crt of a Secret `make up`
 * issues); the collector's OTLP receivers present that certificate — tls.crt and tls.key of its
 * Secret, mounted whole and read-only — at TLS 1.2 or later, and read it again as it is renewed.
 */
export const checkTelemetryTls: Check = (manifests) => {
  const problems: Problem[] = [];
  const secret = SECRET_OF["otel-collector"]!;
  const names = clusterIdentities()[secret].dnsNames ?? [];
  const workloads = workloadsOf(manifests);
  for (const w of workloads.filter((x) => x.own)) {
    const c = w.containers[0]!;
    // The traces endpoint, when set, is the one spans go to (lib/telemetry/tracing.ts).
    const traces = envOf(c, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    const endpoint = traces.value === undefined ? envOf(c, "OTEL_EXPORTER_OTLP_ENDPOINT") : traces;
    const variable = traces.value === undefined ? "OTEL_EXPORTER_OTLP_ENDPOINT" : "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    if (endpoint.value === undefined) continue; // checkMonitoringWiring reports it
    const at = (index: number, message: string) =>
      problems.push(
        problemAt(w.m, index < 0 ? [...CONTAINERS, 0, "env"] : [...CONTAINERS, 0, "env", index, "value"], message),
      );
    const url = URL.canParse(endpoint.value) ? new URL(endpoint.value) : undefined;
    if (url?.protocol !== "https:")
      at(
        endpoint.index,
        `${variable}=${endpoint.value}: spans carry request paths and client addresses, so they go over https (the collector's receivers speak TLS only)`,
      );
    else if (!names.some((n) => nameCovers(n, url.hostname)))
      at(
        endpoint.index,
        `${variable}: the certificate in ${secret} does not carry "${url.hostname}" (${names.join(", ")})`,
      );
    const ca = envOf(c, "OTEL_EXPORTER_OTLP_CERTIFICATE");
    if (ca.value === undefined) {
      at(
        -1,
        "OTEL_EXPORTER_OTLP_CERTIFICATE must name the cluster CA (the ca.crt of the pod's TLS Secret): the collector's certificate is issued by it, not by a public CA",
      );
      continue;
    }
    const source = fileSource(w, c, ca.value);
    if ("problem" in source) at(ca.index, `OTEL_EXPORTER_OTLP_CERTIFICATE: ${source.problem}`);
    else if (!(source.secret in TLS_SECRETS) || source.key !== "ca.crt")
      at(
        ca.index,
        `OTEL_EXPORTER_OTLP_CERTIFICATE: ${ca.value} is ${source.secret}/${source.key}, but must be the ca.crt of a Secret make up issues`,
      );
  }
  const collector = workloads.find((w) => w.name === "otel-collector");
  const cm = ofKind<IConfigMap>(manifests, "ConfigMap").find(({ o }) => o.metadata?.name === "otel-collector-config");
  if (!collector || !cm) return problems; // checkMonitoringWiring reports it
  const doc = parseYaml(cm.o.data?.["config.yaml"] ?? "") as {
    receivers?: { otlp?: { protocols?: Record<string, { tls?: CollectorTls } | null> } };
  } | null;
  for (const [protocol, settings] of Object.entries(doc?.receivers?.otlp?.protocols ?? {})) {
    const field = `receivers.otlp.protocols.${protocol}.tls`;
    const at = (sub: string, message: string) =>
      problems.push({
        ...problemAt(cm.m, ["data", "config.yaml"], `${field}${sub}: ${message}`),
        field: 'data["config.yaml"]',
      });
    const tls = settings?.tls;
    if (!tls) {
      at("", `must be set (${secret}): the services send spans over TLS`);
      continue;
    }
    for (const [name, key] of [
      ["cert_file", "tls.crt"],
      ["key_file", "tls.key"],
    ] as const) {
      const file = tls[name];
      if (!file) {
        at(`.${name}`, `must be set (${secret}/${key})`);
        continue;
      }
      const source = fileSource(collector, collector.containers[0]!, file);
      if ("problem" in source) at(`.${name}`, source.problem);
      else if (source.secret !== secret || source.key !== key)
        at(`.${name}`, `${file} is ${source.secret}/${source.key}, but must be ${secret}/${key}`);
    }
    // A string: the collector types its config strictly, and 1.2 unquoted is a number.
    if (tls.min_version !== undefined && !["1.2", "1.3"].includes(tls.min_version as unknown as string))
      at(
        ".min_version",
        `${JSON.stringify(tls.min_version)}: "1.2" or "1.3" (quoted), TLS 1.2 or later as on every other listener`,
      );
    if (!tls.reload_interval)
      at(
        ".reload_interval",
        "must be set: without it the collector keeps the certificate it started with, and a renewed one is never taken",
      );
  }
  // The key is readable by the collector's user: a Secret volume's files belong to root, so without
  // a mode that lets others read, the pod's fsGroup must own them.
  const pod = collector.deployment.spec?.template.spec;
  const volumeIndex = (pod?.volumes ?? []).findIndex((v) => v.secret?.secretName === secret);
  const mode = pod?.volumes?.[volumeIndex]?.secret?.defaultMode ?? 0o644;
  if (volumeIndex >= 0 && (mode & 0o004) === 0 && pod?.securityContext?.fsGroup === undefined)
    problems.push(
      problemAt(
        collector.m,
        ["spec", "template", "spec", "volumes", volumeIndex, "secret", "defaultMode"],
        `0${mode.toString(8)} lets only root and the volume's group read ${secret}'s key, and the pod sets no fsGroup: the collector (not root) could not read it and its receivers would not start`,
      ),
    );
  return problems;
};

export const TLS_CHECKS: Record<string, Check> = {
  checkTlsFiles,
  checkTelemetryTls,
  checkTlsNames,
  checkPlainProbesAndScrapes,
  checkGatewayHttps,
};
