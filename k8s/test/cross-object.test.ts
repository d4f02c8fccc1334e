/**
 * What no schema sees: objects that must agree with each other and with the code they run.
 * One test per check on the real k8s/, then edits a person could make, each proving that its
 * check catches the mistake and names file, line and field.
 */
import { describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseYaml } from "yaml";
import { loadConfig as loadGatewayConfig, parseConfig as parseGatewayConfig } from "../../gateway/src/config/load.ts";
import {
  ALL_CHECKS,
  checkContainers,
  checkDeploymentShape,
  checkEnvIsRead,
  checkEverythingDeployed,
  checkGatewayRoutes,
  checkImages,
  checkNoIpLiterals,
  checkPortsMatchEnv,
  checkProbes,
  checkServices,
  type Check,
} from "./checks/cross-checks.ts";
import { formatProblem, loadManifests, parseManifests, REPO_ROOT, withEdit } from "./checks/manifests.ts";
import { checkNetworkPolicies } from "./checks/network-policies.ts";

const manifests = loadManifests();

describe("the manifests in k8s/ agree with each other and with the code", () => {
  test.each(Object.entries(ALL_CHECKS))("%s finds nothing wrong", (_name, check) => {
    expect(check(manifests).map(formatProblem)).toEqual([]);
  });

  test("no IP literal appears anywhere in k8s/", () => {
    expect(checkNoIpLiterals().map(formatProblem)).toEqual([]);
  });

  test("every manifest file is applied by kubectl apply -k k8s/", () => {
    expect(checkEverythingDeployed().map(formatProblem)).toEqual([]);
  });
});

describe("the gateway's routes ConfigMap", () => {
  const configMap = manifests.find(
    (m) => m.object.kind === "ConfigMap" && m.object.metadata?.name === "gateway-routes",
  )!;
  const clusterText = (configMap.object.data as Record<string, string>)["routes.yaml"]!;

  test("loads with the gateway's own config loader", () => {
    const config = parseGatewayConfig(clusterText, "k8s/gateway.yaml (ConfigMap gateway-routes)", {}, REPO_ROOT);
    expect([...config.upstreams.values()].map((u) => [u.name, u.endpoints])).toEqual([
      ["webapp", ["webapp-headless:8080"]],
      ["rpcapp", ["rpcapp-headless:50051"]],
    ]);
  });

  test("has the same routes and upstream protocols as gateway/routes.yaml (make dev)", () => {
    const dev = loadGatewayConfig(join(REPO_ROOT, "gateway/routes.yaml"), {});
    const cluster = parseGatewayConfig(clusterText, "ConfigMap gateway-routes", {}, REPO_ROOT);
    const shape = (c: typeof dev) => ({
      routes: c.routes.map(({ grpcMethod: _resolved, ...route }) => route),
      upstreams: [...c.upstreams.values()].map(({ name, protocol, proto, timeoutMs }) => ({
        name,
        protocol,
        proto,
        timeoutMs,
      })),
      limits: c.limits,
    });
    expect(shape(cluster)).toEqual(shape(dev));
  });

  test("has the same sections, routes and upstreams as gateway/routes.yaml, written the same way, but for the endpoints", () => {
    const dev = parseYaml(readFileSync(join(REPO_ROOT, "gateway/routes.yaml"), "utf8")) as Record<string, unknown>;
    const cluster = parseYaml(clusterText) as Record<string, unknown>;
    // The TLS blocks are compared on their own below: the cluster verifies each upstream by its own name.
    const upstreamsWithoutEndpoints = (c: Record<string, unknown>) =>
      Object.fromEntries(
        Object.entries(c.upstreams as Record<string, { endpoints?: unknown; tls?: unknown }>).map(
          ([k, { endpoints: _e, tls: _t, ...rest }]) => [k, rest],
        ),
      );
    expect(Object.keys(cluster).sort()).toEqual(Object.keys(dev).sort());
    expect(cluster.routes).toEqual(dev.routes);
    expect(upstreamsWithoutEndpoints(cluster)).toEqual(upstreamsWithoutEndpoints(dev));
  });

  test("has gateway/routes.yaml's TLS blocks (`${TLS:-false}`, `${TLS_DIR:-…}`), without its serverName: localhost", () => {
    type Tls = { serverName?: string } & Record<string, unknown>;
    const dev = parseYaml(readFileSync(join(REPO_ROOT, "gateway/routes.yaml"), "utf8")) as {
      upstreams: Record<string, { tls?: Tls }>;
      tls?: unknown;
    };
    const cluster = parseYaml(clusterText) as typeof dev;
    expect(cluster.tls).toEqual(dev.tls);
    for (const [name, upstream] of Object.entries(dev.upstreams)) {
      const { serverName, ...rest } = upstream.tls ?? {};
      // Every local certificate carries localhost; in the cluster each upstream is verified by its
      // headless Service's name, which only its own certificate carries (checks/tls.ts checkTlsNames).
      expect({ name, serverName }).toEqual({ name, serverName: "localhost" });
      expect({ name, tls: cluster.upstreams[name]?.tls }).toEqual({ name, tls: rest });
    }
  });
});

describe("an edit that breaks the wiring fails with file, line and field", () => {
  // An init container inserted before the gateway's (or webapp's) container, with `fields` under it.
  const initContainer = (service: string, image: string, fields: string) => ({
    from: `      containers:\n        - name: ${service}\n`,
    to: `      initContainers:\n        - name: setup\n          image: ${image}\n${fields}      containers:\n        - name: ${service}\n`,
  });
  const escalationOnly =
    "          securityContext:\n            allowPrivilegeEscalation: false\n            capabilities:\n              drop: [ALL]\n";
  const lockedDown =
    "          imagePullPolicy: IfNotPresent\n          resources: {requests: {cpu: 10m, memory: 16Mi}, limits: {cpu: 100m, memory: 32Mi}}\n          securityContext:\n            readOnlyRootFilesystem: true\n            allowPrivilegeEscalation: false\n            capabilities:\n              drop: [ALL]\n";
  const cases: {
    what: string;
    file: string;
    from: string;
    to: string;
    check: Check;
    /** A problem (or each of several) the edited manifests must show. */
    expected: string | string[];
  }[] = [
    {
      what: "a Service targetPort renamed",
      file: "k8s/webapp.yaml",
      from: "targetPort: https",
      to: "targetPort: htps",
      check: checkServices,
      expected:
        'Service/webapp spec.ports[0].targetPort: "htps" is not a containerPort of Deployment/webapp (https=8080, metrics=9090)',
    },
    {
      what: "a Service targetPort set to another number",
      file: "k8s/rpcapp.yaml",
      from: "targetPort: metrics",
      to: "targetPort: 9091",
      check: checkServices,
      expected: "Service/rpcapp spec.ports[1].targetPort: 9091 is not a containerPort of Deployment/rpcapp",
    },
    {
      what: "the admin port exposed on the NodePort",
      file: "k8s/gateway.yaml",
      from: "      port: 80\n      targetPort: http",
      to: "      port: 80\n      targetPort: admin",
      check: checkServices,
      expected:
        'Service/gateway spec.ports[0].targetPort: a NodePort Service exposes only the public "http" and "https" ports, not "admin"',
    },
    {
      what: "a containerPort that PORT does not name",
      file: "k8s/webapp.yaml",
      from: "containerPort: 8080",
      to: "containerPort: 8081",
      check: checkPortsMatchEnv,
      expected:
        "Deployment/webapp spec.template.spec.containers[0].env[0].value: PORT=8080 but the container declares no containerPort 8080",
    },
    {
      what: "the gateway's HTTPS port without the HTTPS_PORT it listens on",
      file: "k8s/gateway.yaml",
      from: '            - name: HTTPS_PORT\n              value: "8443"\n',
      to: "",
      check: checkPortsMatchEnv,
      expected:
        "Deployment/gateway spec.template.spec.containers[0].env: HTTPS_PORT is read by gateway/src but not set here",
    },
    {
      what: "a misspelt $(VAR) in a dependent variable: left as written, and the variable it meant goes unused",
      file: "k8s/webapp.yaml",
      from: "k8s.namespace.name=$(POD_NAMESPACE)",
      to: "k8s.namespace.name=$(POD_NAMESPAC)",
      check: checkEnvIsRead,
      expected: [
        "Deployment/webapp spec.template.spec.containers[0].env[18].value: $(POD_NAMESPAC) names no variable set before OTEL_RESOURCE_ATTRIBUTES",
        "Deployment/webapp spec.template.spec.containers[0].env[16].name: POD_NAMESPACE is not read anywhere",
      ],
    },
    {
      what: "an escaped $$(VAR) is text, not a reference: the variable it names goes unused",
      file: "k8s/gateway.yaml",
      from: "k8s.node.name=$(NODE_NAME)",
      to: "k8s.node.name=$$(NODE_NAME)",
      check: checkEnvIsRead,
      expected: "NODE_NAME is not read anywhere in gateway/src or lib/",
    },
    {
      what: "a dependent variable placed before the one it takes in (Kubernetes expands only earlier ones)",
      file: "k8s/rpcapp.yaml",
      from: "k8s.pod.name=$(INSTANCE_ID)",
      to: "k8s.pod.name=$(OTEL_EXPORTER_OTLP_ENDPOINT)$(OTEL_RESOURCE_ATTRIBUTES)",
      check: checkEnvIsRead,
      expected: "$(OTEL_RESOURCE_ATTRIBUTES) names no variable set before OTEL_RESOURCE_ATTRIBUTES on this container",
    },
    {
      what: "a probe path the app does not serve",
      file: "k8s/webapp.yaml",
      from: "path: /readyz",
      to: "path: /ready",
      check: checkProbes,
      expected:
        'Deployment/webapp spec.template.spec.containers[0].readinessProbe.httpGet.path: "/ready" is not a route string anywhere in webapp/src or lib/',
    },
    {
      what: "the version label in the selector",
      file: "k8s/rpcapp.yaml",
      from: "    matchLabels: # immutable once created: select on the name only, never on the version\n      app.kubernetes.io/name: rpcapp",
      to: "    matchLabels:\n      app.kubernetes.io/name: rpcapp\n      app.kubernetes.io/version: dev",
      check: checkDeploymentShape,
      expected: "Deployment/rpcapp spec.selector: must select on app.kubernetes.io/name only",
    },
    {
      what: "a grace period shorter than preStop + drain + shutdown",
      file: "k8s/gateway.yaml",
      from: "terminationGracePeriodSeconds: 30",
      to: "terminationGracePeriodSeconds: 20",
      check: checkContainers,
      expected:
        "Deployment/gateway spec.template.spec.terminationGracePeriodSeconds: 20 s does not cover preStop 5 s + DRAIN_DELAY_MS 5000 ms + SHUTDOWN_TIMEOUT_MS 15000 ms = 25 s",
    },
    {
      what: "a writable root filesystem",
      file: "k8s/webapp.yaml",
      from: "readOnlyRootFilesystem: true",
      to: "readOnlyRootFilesystem: false",
      check: checkContainers,
      expected:
        "Deployment/webapp spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem: must be true",
    },
    {
      what: "an image that up.ts does not build",
      file: "k8s/rpcapp.yaml",
      from: "image: portico/rpcapp:dev",
      to: "image: portico/rpc-app:dev",
      check: checkImages,
      expected:
        'Deployment/rpcapp spec.template.spec.containers[0].image: "portico/rpc-app:dev" must be portico/rpcapp:<tag>',
    },
    {
      what: "an init container without resources or a read-only root filesystem",
      file: "k8s/gateway.yaml",
      ...initContainer("gateway", "portico/gateway:dev", escalationOnly),
      check: checkContainers,
      expected: [
        "Deployment/gateway spec.template.spec.initContainers[0].resources.requests.cpu: must be set",
        "Deployment/gateway spec.template.spec.initContainers[0].resources.limits.memory: must be set",
        "Deployment/gateway spec.template.spec.initContainers[0].securityContext.readOnlyRootFilesystem: must be true",
      ],
    },
    {
      what: "a sidecar init container (restartPolicy Always) without probes",
      file: "k8s/gateway.yaml",
      ...initContainer("gateway", "portico/gateway:dev", `          restartPolicy: Always\n${lockedDown}`),
      check: checkContainers,
      expected: [
        "Deployment/gateway spec.template.spec.initContainers[0].readinessProbe: a sidecar (restartPolicy Always) init container needs a readiness probe",
        "Deployment/gateway spec.template.spec.initContainers[0].livenessProbe: a sidecar (restartPolicy Always) init container needs a liveness probe",
      ],
    },
    {
      what: "an init container on a Portico image that up.ts does not build",
      file: "k8s/webapp.yaml",
      ...initContainer("webapp", "portico/migrate:dev", lockedDown),
      check: checkImages,
      expected:
        'Deployment/webapp spec.template.spec.initContainers[0].image: "portico/migrate:dev" is not an image scripts/up.ts builds',
    },
    {
      what: "an upstream pointed at an IP address",
      file: "k8s/gateway.yaml",
      from: "endpoints: webapp-headless:8080",
      to: "endpoints: 10.0.0.7:8080",
      check: checkGatewayRoutes,
      expected:
        'ConfigMap/gateway-routes data["routes.yaml"] upstreams.webapp.endpoints: "10.0.0.7:8080" is an IP address',
    },
    {
      what: "an upstream pointed at a ClusterIP Service",
      file: "k8s/gateway.yaml",
      from: "endpoints: rpcapp-headless:50051",
      to: "endpoints: rpcapp:50051",
      check: checkGatewayRoutes,
      expected:
        'ConfigMap/gateway-routes data["routes.yaml"] upstreams.rpcapp.endpoints: Service "rpcapp" is not headless',
    },
    {
      what: "an upstream Service that does not exist",
      file: "k8s/gateway.yaml",
      from: "endpoints: webapp-headless:8080",
      to: "endpoints: webap-headless:8080",
      check: checkGatewayRoutes,
      expected: '"webap-headless" is not a Service in k8s/',
    },
    {
      what: "a NetworkPolicy letting any pod reach rpcapp",
      file: "k8s/networkpolicy.yaml",
      from: "              app.kubernetes.io/name: gateway\n      ports:\n        - port: grpc",
      to: "              app.kubernetes.io/name: gateway\n    - ports:\n        - port: grpc",
      check: checkNetworkPolicies,
      expected: "NetworkPolicy/rpcapp spec.ingress[1]: allows (anywhere) -> rpcapp:grpc",
    },
  ];

  test.each(cases)("$what ($file)", ({ file, from, to, check, expected }) => {
    const { manifests: edited } = withEdit(file, from, to);
    const problems = check(edited).map(formatProblem);
    for (const e of [expected].flat()) {
      expect(problems).toContainEqual(expect.stringContaining(e));
      expect(problems.find((p) => p.includes(e))).toMatch(new RegExp(`^${file.replace(".", "\\.")}:\\d+: `));
    }
  });

  test("a plain init container, locked down, passes: it needs no probes (it runs to completion)", () => {
    for (const [service, image] of [
      ["gateway", "portico/gateway:dev"],
      ["webapp", "portico/gateway:dev"], // any image up.ts builds, in an init container
    ] as const) {
      const { from, to } = initContainer(service, image, lockedDown);
      const { manifests: edited } = withEdit(`k8s/${service}.yaml`, from, to);
      expect([checkContainers, checkImages, checkProbes].flatMap((c) => c(edited)).map(formatProblem)).toEqual([]);
    }
  });

  test("the reported line is the edited line", () => {
    const { manifests: edited, line } = withEdit("k8s/webapp.yaml", "targetPort: https", "targetPort: htps");
    expect(checkServices(edited).map(formatProblem)[0]).toStartWith(
      `k8s/webapp.yaml:${line}: Service/webapp spec.ports[0].targetPort:`,
    );
  });
});

describe("a third-party workload added later (Redis, Prometheus…)", () => {
  const redis = (containerExtra: string) => `apiVersion: apps/v1
kind: Deployment
metadata:
  name: redis
  namespace: portico
  labels: {app.kubernetes.io/name: redis, app.kubernetes.io/part-of: portico, app.kubernetes.io/component: store, app.kubernetes.io/version: "7.4"}
spec:
  replicas: 1
  selector: {matchLabels: {app.kubernetes.io/name: redis}}
  template:
    metadata:
      labels: {app.kubernetes.io/name: redis, app.kubernetes.io/part-of: portico, app.kubernetes.io/component: store, app.kubernetes.io/version: "7.4"}
    spec:
      containers:
        - name: redis
          image: redis:7.4
          ports: [{name: redis, containerPort: 6379}]
          readinessProbe: {exec: {command: [redis-cli, ping]}}
          livenessProbe: {tcpSocket: {port: redis}}
          securityContext:
            runAsNonRoot: true
            runAsUser: 999
            readOnlyRootFilesystem: true
            allowPrivilegeEscalation: false
            capabilities: {drop: [ALL]}
            seccompProfile: {type: RuntimeDefault}
${containerExtra}`;
  const resources = "          resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {cpu: 500m, memory: 256Mi}}\n";
  const checks = [checkDeploymentShape, checkContainers, checkImages, checkPortsMatchEnv, checkProbes, checkServices];

  test("passes the checks that hold for any container, without Portico's own (image, uid, env, 3 replicas)", () => {
    const all = [
      ...manifests.filter((m) => m.file !== "k8s/redis-limiter.yaml"),
      ...parseManifests(redis(resources), "k8s/redis-limiter.yaml"),
    ];
    expect(checks.flatMap((check) => check(all)).map(formatProblem)).toEqual([]);
  });

  test("still needs resources, like every container", () => {
    const all = [
      ...manifests.filter((m) => m.file !== "k8s/redis-limiter.yaml"),
      ...parseManifests(redis(""), "k8s/redis-limiter.yaml"),
    ];
    expect(checkContainers(all).map(formatProblem)).toContainEqual(
      expect.stringContaining(
        "k8s/redis-limiter.yaml:15: Deployment/redis spec.template.spec.containers[0].resources.requests.cpu: must be set",
      ),
    );
  });
});
