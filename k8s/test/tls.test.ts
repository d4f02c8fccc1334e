/**
 * TLS on every hop in k8s/ (checks/tls.ts): each check passes on k8s/ as it is and fails, with file
 * and line, on an edit that breaks it; then the certificates `make up` issues (scripts/cluster/tls.ts)
 * are laid out as the kubelet mounts them, and the processes' own code loads them and completes
 * mutual-TLS handshakes with the names and files the manifests give.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { connect } from "node:tls";
import type { IConfigMap } from "kubernetes-models/v1/ConfigMap";
import type { IContainer } from "kubernetes-models/v1/Container";
import { parse as parseYaml } from "yaml";
import { parseConfig as parseGatewayConfig } from "../../gateway/src/config/load.ts";
import { UpstreamTlsClient } from "../../gateway/src/upstream/tls.ts";
import { readTlsMaterial, serviceTlsFromEnv } from "../../lib/tls.ts";
import { clusterIdentities, issueTlsSecrets, TLS_SECRETS, type TlsSecretName } from "../../scripts/cluster/tls.ts";
import { createCa, issue } from "../../scripts/tls/pki.ts";
import { type Check, ofKind, workloadsOf } from "./checks/cross-checks.ts";
import { checkSecretReferences } from "./checks/hardening.ts";
import { formatProblem, loadManifests, REPO_ROOT, withEdit } from "./checks/manifests.ts";
import { allowedFlows, checkNetworkPolicies } from "./checks/network-policies.ts";
import {
  checkGatewayHttps,
  checkPlainProbesAndScrapes,
  checkTelemetryTls,
  checkTlsFiles,
  checkTlsNames,
  gatewayRoutes,
  mountedFiles,
  TLS_CHECKS,
} from "./checks/tls.ts";

const manifests = loadManifests();

describe("k8s/ as it is", () => {
  test.each(Object.entries(TLS_CHECKS))("%s finds nothing wrong", (_name, check) => {
    expect(check(manifests).map(formatProblem)).toEqual([]);
  });

  test("the gateway's routes.yaml, with its Deployment's env, has TLS on both upstreams and the listener", () => {
    const routes = gatewayRoutes(manifests)!.routes;
    expect(routes.upstreams?.webapp?.tls).toEqual({
      enabled: true,
      ca: "/etc/portico-tls/ca.crt",
      cert: "/etc/portico-tls/gateway-client.crt",
      key: "/etc/portico-tls/gateway-client.key",
    });
    expect(routes.upstreams?.rpcapp?.tls?.enabled).toBe(true);
    expect(routes.tls).toEqual({
      enabled: true,
      certificates: [{ cert: "/etc/portico-tls/edge.crt", key: "/etc/portico-tls/edge.key" }],
    });
  });

  test("Prometheus reaches the plain metrics ports, and nothing but the gateway reaches the TLS ones", () => {
    const flows = allowedFlows(manifests).map((f) => f.flow);
    expect(flows).toContain("prometheus -> webapp:metrics");
    expect(flows).toContain("prometheus -> rpcapp:metrics");
    expect(flows).toContain("gateway -> webapp:https");
    expect(flows).toContain("(anywhere) -> gateway:https");
    expect(flows.filter((f) => / -> (webapp:https|rpcapp:grpc)$/.test(f)).sort()).toEqual([
      "gateway -> rpcapp:grpc",
      "gateway -> webapp:https",
    ]);
  });
});

interface Edit {
  what: string;
  file: string;
  from: string;
  to: string;
  check: Check;
  expected: string;
  /** Where the problem is reported, when not in the edited file. */
  at?: string;
  /** A flow missing is reported for the whole file, without a line. */
  noLine?: boolean;
}

const edits: Edit[] = [
  {
    what: "webapp's readiness probe on its TLS port",
    file: "k8s/webapp.yaml",
    from: "              path: /readyz\n              port: metrics",
    to: "              path: /readyz\n              port: https",
    check: checkPlainProbesAndScrapes,
    expected:
      "Deployment/webapp spec.template.spec.containers[0].readinessProbe.httpGet.port: port 8080 (https) serves TLS only",
  },
  {
    what: "rpcapp's readiness back on the kubelet's gRPC probe (no TLS)",
    file: "k8s/rpcapp.yaml",
    from: "          readinessProbe:\n            httpGet:\n              path: /readyz\n              port: metrics",
    to: "          readinessProbe:\n            grpc:\n              port: 50051",
    check: checkPlainProbesAndScrapes,
    expected:
      "Deployment/rpcapp spec.template.spec.containers[0].readinessProbe.grpc.port: port 50051 (grpc) serves TLS only",
  },
  {
    what: "webapp scraped on its TLS port",
    file: "k8s/webapp.yaml",
    from: 'prometheus.io/port: "9090"',
    to: 'prometheus.io/port: "8080"',
    check: checkPlainProbesAndScrapes,
    expected: 'annotations["prometheus.io/port"]: port 8080 (https) serves TLS only',
  },
  {
    what: "Prometheus let out to webapp's TLS port instead of its metrics port",
    file: "k8s/networkpolicy.yaml",
    from: "              app.kubernetes.io/name: webapp\n      ports:\n        - port: metrics",
    to: "              app.kubernetes.io/name: webapp\n      ports:\n        - port: https",
    check: checkPlainProbesAndScrapes,
    expected: "the NetworkPolicies do not allow prometheus -> webapp:metrics",
    at: "k8s/webapp.yaml",
  },
  {
    what: "webapp without its client CA (any client would get through)",
    file: "k8s/webapp.yaml",
    from: "            - name: TLS_CLIENT_CA_FILE\n              value: /etc/portico-tls/ca.crt\n",
    to: "",
    check: checkTlsFiles,
    expected: "Deployment/webapp spec.template.spec.containers[0].env: TLS_CLIENT_CA_FILE must be set",
  },
  {
    what: "webapp's client CA pointed at its own certificate",
    file: "k8s/webapp.yaml",
    from: "              value: /etc/portico-tls/ca.crt",
    to: "              value: /etc/portico-tls/tls.crt",
    check: checkTlsFiles,
    expected:
      "TLS_CLIENT_CA_FILE: /etc/portico-tls/tls.crt is portico-webapp-tls/tls.crt, but must be portico-webapp-tls/ca.crt",
  },
  {
    what: "webapp mounting rpcapp's Secret",
    file: "k8s/webapp.yaml",
    from: "secretName: portico-webapp-tls",
    to: "secretName: portico-rpcapp-tls",
    check: checkTlsFiles,
    expected:
      "TLS_CERT_FILE: /etc/portico-tls/tls.crt is portico-rpcapp-tls/tls.crt, but must be portico-webapp-tls/tls.crt",
  },
  {
    what: "a certificate mounted with subPath (never renewed)",
    file: "k8s/rpcapp.yaml",
    from: "            - name: tls\n              mountPath: /etc/portico-tls\n",
    to: "            - name: tls\n              mountPath: /etc/portico-tls/tls.crt\n              subPath: tls.crt\n",
    check: checkTlsFiles,
    expected: 'comes from volumeMount "tls" with a subPath, which never sees a renewed Secret',
  },
  {
    what: "a writable certificate mount",
    file: "k8s/webapp.yaml",
    from: "              mountPath: /etc/portico-tls\n              readOnly: true",
    to: "              mountPath: /etc/portico-tls\n              readOnly: false",
    check: checkTlsFiles,
    expected: 'volumeMount "tls" (/etc/portico-tls/tls.crt) must be readOnly',
  },
  {
    what: "a secret volume naming a Secret make up does not create",
    file: "k8s/webapp.yaml",
    from: "secretName: portico-webapp-tls",
    to: "secretName: portico-webap-tls",
    check: checkSecretReferences,
    expected: 'Secret "portico-webap-tls" is not one `make up` creates for pods',
  },
  {
    what: "the CA's signing key mounted in the gateway",
    file: "k8s/gateway.yaml",
    from: "name: portico-gateway-client-tls # presented",
    to: "name: portico-tls-ca # presented",
    check: checkSecretReferences,
    expected:
      'volumes[1].projected.sources[1].secret.items[0]: Secret "portico-tls-ca" is not one `make up` creates for pods',
  },
  {
    what: "the edge certificate projected under another file name than routes.yaml reads",
    file: "k8s/gateway.yaml",
    from: "path: edge.crt",
    to: "path: edge.pem",
    check: checkTlsFiles,
    expected:
      'tls.certificates[0].cert: /etc/portico-tls/edge.crt: volume "tls" puts no key of portico-edge-tls, portico-gateway-client-tls at "edge.crt"',
  },
  {
    what: "the gateway's TLS turned off in its Deployment",
    file: "k8s/gateway.yaml",
    from: '            - name: TLS\n              value: "true"',
    to: '            - name: TLS\n              value: "false"',
    check: checkTlsFiles,
    expected: "upstreams.webapp.tls: must be on with the gateway Deployment's env",
  },
  {
    what: "TLS_DIR pointing where nothing is mounted",
    file: "k8s/gateway.yaml",
    from: "              value: /etc/portico-tls\n",
    to: "              value: /etc/tls\n",
    check: checkTlsFiles,
    expected: "upstreams.rpcapp.tls.ca: /etc/tls/ca.crt is not under any volumeMount of container gateway",
  },
  {
    what: "an upstream verified as localhost, a name every certificate carries",
    file: "k8s/gateway.yaml",
    from: "          key: ${TLS_DIR:-.data/tls}/gateway-client.key\n        # `make canary SERVICE=webapp`",
    to: "          key: ${TLS_DIR:-.data/tls}/gateway-client.key\n          serverName: localhost\n        # `make canary SERVICE=webapp`",
    check: checkTlsNames,
    expected:
      'upstreams.webapp.tls.serverName: "localhost" is also in the certificate of portico-edge-tls, portico-rpcapp-tls',
  },
  {
    what: "an upstream verified for a name its certificate does not carry",
    file: "k8s/gateway.yaml",
    from: "          key: ${TLS_DIR:-.data/tls}/gateway-client.key\n        canary: *canary\n",
    to: "          key: ${TLS_DIR:-.data/tls}/gateway-client.key\n          serverName: rpcapp.portico.svc\n        canary: *canary\n",
    check: checkTlsNames,
    expected:
      'the gateway verifies rpcapp as "rpcapp.portico.svc", which the certificate in portico-rpcapp-tls does not carry',
  },
  {
    what: "the gateway's HTTPS port left out of its NodePort Service",
    file: "k8s/gateway.yaml",
    from: "    - name: https\n      port: 443\n      targetPort: https\n      protocol: TCP\n",
    to: "",
    check: checkGatewayHttps,
    expected: "Service/gateway spec.ports: must expose targetPort http, then https (found http)",
  },
  {
    what: "the gateway's HTTPS port closed by its NetworkPolicy",
    file: "k8s/networkpolicy.yaml",
    from: "        - port: http\n          protocol: TCP\n        - port: https\n          protocol: TCP\n",
    to: "        - port: http\n          protocol: TCP\n",
    check: checkNetworkPolicies,
    expected: "(anywhere) -> gateway:https is needed but not allowed",
    noLine: true,
  },
];

edits.push(
  {
    what: "a service sending spans to the collector in clear text",
    file: "k8s/rpcapp.yaml",
    from: "value: https://otel-collector:4318",
    to: "value: http://otel-collector:4318",
    check: checkTelemetryTls,
    expected:
      "Deployment/rpcapp spec.template.spec.containers[0].env[9].value: OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4318: spans carry request paths",
  },
  {
    what: "a service that does not trust the cluster CA for the collector",
    file: "k8s/webapp.yaml",
    from: "            - name: OTEL_EXPORTER_OTLP_CERTIFICATE\n              value: /etc/portico-tls/ca.crt\n",
    to: "",
    check: checkTelemetryTls,
    expected: "OTEL_EXPORTER_OTLP_CERTIFICATE must name the cluster CA",
  },
  {
    what: "the gateway trusting its own certificate instead of the CA for the collector",
    file: "k8s/gateway.yaml",
    from: "            - name: OTEL_EXPORTER_OTLP_CERTIFICATE\n              value: /etc/portico-tls/ca.crt",
    to: "            - name: OTEL_EXPORTER_OTLP_CERTIFICATE\n              value: /etc/portico-tls/edge.crt",
    check: checkTelemetryTls,
    expected:
      "OTEL_EXPORTER_OTLP_CERTIFICATE: /etc/portico-tls/edge.crt is portico-edge-tls/tls.crt, but must be the ca.crt of a Secret make up issues",
  },
  {
    what: "the collector's HTTP receiver without TLS",
    file: "k8s/monitoring/otel-collector.yaml",
    from: '            endpoint: 0.0.0.0:4318\n            tls:\n              cert_file: /etc/otelcol-tls/tls.crt\n              key_file: /etc/otelcol-tls/tls.key\n              min_version: "1.2"\n              reload_interval: 10m\n',
    to: "            endpoint: 0.0.0.0:4318\n",
    check: checkTelemetryTls,
    expected: "receivers.otlp.protocols.http.tls: must be set (portico-otel-collector-tls)",
  },
  {
    what: "the collector never reading its renewed certificate",
    file: "k8s/monitoring/otel-collector.yaml",
    from: '            endpoint: 0.0.0.0:4317\n            tls:\n              cert_file: /etc/otelcol-tls/tls.crt\n              key_file: /etc/otelcol-tls/tls.key\n              min_version: "1.2"\n              reload_interval: 10m\n',
    to: "            endpoint: 0.0.0.0:4317\n            tls:\n              cert_file: /etc/otelcol-tls/tls.crt\n              key_file: /etc/otelcol-tls/tls.key\n",
    check: checkTelemetryTls,
    expected: "receivers.otlp.protocols.grpc.tls.reload_interval: must be set",
  },
  {
    what: "the collector's key readable by root only (no fsGroup)",
    file: "k8s/monitoring/otel-collector.yaml",
    from: "        fsGroup: 10001 # the group the TLS Secret's files are readable by\n",
    to: "",
    check: checkTelemetryTls,
    expected:
      "0440 lets only root and the volume's group read portico-otel-collector-tls's key, and the pod sets no fsGroup",
  },
  {
    what: "the collector's minimum TLS version as a number, which the collector refuses",
    file: "k8s/monitoring/otel-collector.yaml",
    from: '            endpoint: 0.0.0.0:4318\n            tls:\n              cert_file: /etc/otelcol-tls/tls.crt\n              key_file: /etc/otelcol-tls/tls.key\n              min_version: "1.2"',
    to: "            endpoint: 0.0.0.0:4318\n            tls:\n              cert_file: /etc/otelcol-tls/tls.crt\n              key_file: /etc/otelcol-tls/tls.key\n              min_version: 1.2",
    check: checkTelemetryTls,
    expected: 'receivers.otlp.protocols.http.tls.min_version: 1.2: "1.2" or "1.3" (quoted)',
  },
  {
    what: "a traces endpoint overriding the collector's, in clear text",
    file: "k8s/webapp.yaml",
    from: "            - name: OTEL_EXPORTER_OTLP_CERTIFICATE\n",
    to: "            - name: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT\n              value: http://otel-collector:4318/v1/traces\n            - name: OTEL_EXPORTER_OTLP_CERTIFICATE\n",
    check: checkTelemetryTls,
    expected: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://otel-collector:4318/v1/traces: spans carry request paths",
  },
  {
    what: "the collector's key from a file no Secret puts there",
    file: "k8s/monitoring/otel-collector.yaml",
    from: "            endpoint: 0.0.0.0:4318\n            tls:\n              cert_file: /etc/otelcol-tls/tls.crt\n              key_file: /etc/otelcol-tls/tls.key",
    to: "            endpoint: 0.0.0.0:4318\n            tls:\n              cert_file: /etc/otelcol-tls/tls.crt\n              key_file: /etc/otelcol/tls.key",
    check: checkTelemetryTls,
    expected:
      'receivers.otlp.protocols.http.tls.key_file: /etc/otelcol/tls.key is in volume "config", which holds no Secret',
  },
);

describe("an edit that breaks TLS on a hop fails with file, line and field", () => {
  test.each(edits)("$what ($file)", ({ file, from, to, check, expected, at = file, noLine }) => {
    const { manifests: edited } = withEdit(file, from, to);
    const problems = check(edited).map(formatProblem);
    expect(problems).toContainEqual(expect.stringContaining(expected));
    const where = `^${at.replace(".", "\\.")}${noLine ? "" : ":\\d+"}: `;
    expect(problems.find((p) => p.includes(expected))).toMatch(new RegExp(where));
  });
});

describe("the certificates make up issues, mounted as the manifests say", async () => {
  const root = mkdtempSync(join(tmpdir(), "portico-k8s-tls-"));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  const ca = await createCa("test cluster CA");
  const secrets: Record<string, Record<string, string>> = {};
  for (const s of await issueTlsSecrets(ca, Object.keys(TLS_SECRETS) as TlsSecretName[], clusterIdentities())) {
    const { metadata, data } = s as { metadata: { name: string }; data: Record<string, string> };
    secrets[metadata.name] = Object.fromEntries(
      Object.entries(data).map(([k, v]) => [k, Buffer.from(v, "base64").toString()]),
    );
  }
  const workloads = Object.fromEntries(workloadsOf(manifests).map((w) => [w.name, w]));
  /** Writes a workload's Secret mounts under `root` (the pod's /etc/… becomes <root>/<name>/etc/…). */
  const materialize = (name: string) => {
    const base = join(root, name);
    for (const [path, content] of Object.entries(mountedFiles(workloads[name]!, secrets))) {
      mkdirSync(dirname(join(base, path)), { recursive: true });
      writeFileSync(join(base, path), content);
    }
    return base;
  };
  const bases = { gateway: materialize("gateway"), webapp: materialize("webapp"), rpcapp: materialize("rpcapp") };
  /** A container's env, its file paths moved under its root. */
  const envUnder = (c: IContainer, base: string) =>
    Object.fromEntries(
      (c.env ?? []).flatMap((e) =>
        e.value === undefined ? [] : [[e.name, e.value.startsWith("/etc/") ? base + e.value : e.value]],
      ),
    );
  const g = gatewayRoutes(manifests)!;
  const clusterText = (g.m.object.data as Record<string, string>)[g.key]!;
  // The gateway's own loader reads and checks every file (each key is its certificate's).
  const config = parseGatewayConfig(
    clusterText,
    "ConfigMap gateway-routes",
    envUnder(g.container, bases.gateway),
    REPO_ROOT,
  );
  const serviceTls = (name: "webapp" | "rpcapp") =>
    serviceTlsFromEnv(envUnder(workloads[name]!.containers[0]!, bases[name]))!;

  test("the gateway loads its routes.yaml with the edge certificate and both upstreams' client TLS", () => {
    expect(config.tls?.certificates.map((c) => c.material.subject)).toEqual(["CN=portico gateway"]);
    for (const name of ["webapp", "rpcapp"]) {
      const tls = config.upstreams.get(name)?.tls;
      expect({ name, serverName: tls?.serverName, client: tls?.material.cert?.includes("BEGIN CERTIFICATE") }).toEqual({
        name,
        serverName: undefined,
        client: true,
      });
    }
  });

  test("webapp and rpcapp load theirs and require a client certificate", () => {
    for (const name of ["webapp", "rpcapp"] as const) {
      const settings = serviceTls(name);
      expect({ name, mutual: settings.requireClientCert }).toEqual({ name, mutual: true });
      expect(readTlsMaterial(settings.paths).subject).toBe(`CN=${name}`);
    }
  });

  /** A server like webapp's HTTPS port: its certificate, client certificates from its CA required. */
  const serve = (name: "webapp" | "rpcapp") => {
    const material = readTlsMaterial(serviceTls(name).paths);
    return Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      tls: { cert: material.cert, key: material.key, ca: material.ca, requestCert: true, rejectUnauthorized: true },
      fetch: () => new Response(name),
    });
  };
  /** A TLS handshake to `port` with `options`: the peer's certificate subject, or the error. */
  const handshake = (port: number, options: Record<string, unknown>) =>
    new Promise<string>((resolve) => {
      const socket = connect({ host: "127.0.0.1", port, ...options }, () => {
        const subject = socket.getPeerCertificate().subject?.CN ?? "";
        socket.write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        socket.once("data", (d) => {
          resolve(`${subject}: ${String(d).split("\r\n")[0]}`);
          socket.destroy();
        });
      });
      socket.on("error", (err) => resolve(`error: ${err.message}`));
      socket.on("close", () => resolve("closed"));
    });

  test("the gateway's client side, as it dials each upstream, completes mutual TLS with it and with no other", async () => {
    const servers = { webapp: serve("webapp"), rpcapp: serve("rpcapp") };
    const clients = [...config.upstreams.values()].map(
      (u) => [u.name, new UpstreamTlsClient(u.name, u.tls!, u.endpoints)] as const,
    );
    try {
      for (const [name, client] of clients) {
        for (const [target, server] of Object.entries(servers)) {
          const address = `10.0.0.7:${server.port}`; // discovery resolved the headless name to a pod address
          const options = client.http2Options(address);
          const result = await handshake(server.port!, { ...options, ALPNProtocols: undefined });
          if (target === name)
            expect({ name, target, result }).toEqual({ name, target, result: `${name}: HTTP/1.1 200 OK` });
          else expect({ name, target, result }).toEqual({ name, target, result: expect.stringMatching(/^error: /) });
        }
      }
    } finally {
      for (const [, client] of clients) client.close();
      for (const server of Object.values(servers)) server.stop(true);
    }
  });

  test("webapp refuses a handshake without the gateway's client certificate", async () => {
    const server = serve("webapp");
    try {
      const trust = { ca: ca.cert, servername: "webapp-headless" };
      const refused = [
        await handshake(server.port!, trust),
        // A certificate from the same CA, but for servers only (the edge's): not a client certificate.
        await handshake(server.port!, { ...trust, ...secretPair("portico-edge-tls") }),
        // A client certificate from another CA.
        await handshake(server.port!, {
          ...trust,
          ...(await issue(await createCa("another CA"), { commonName: "gateway", usage: "client" })),
        }),
      ];
      for (const result of refused) expect(result).not.toContain("200 OK");
      expect(await handshake(server.port!, { ...trust, ...secretPair("portico-gateway-client-tls") })).toBe(
        "webapp: HTTP/1.1 200 OK",
      );
    } finally {
      server.stop(true);
    }
  });

  test("the edge certificate is trusted for the gateway Service's names with the CA in its Secret", async () => {
    const edge = secrets["portico-edge-tls"]!;
    const server = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      tls: { cert: edge["tls.crt"], key: edge["tls.key"] },
      fetch: () => new Response("edge"),
    });
    try {
      for (const servername of ["localhost", "gateway", "gateway.portico.svc.cluster.local"])
        expect(await handshake(server.port!, { ca: edge["ca.crt"], servername })).toBe(
          "portico gateway: HTTP/1.1 200 OK",
        );
      expect(await handshake(server.port!, { ca: edge["ca.crt"], servername: "webapp-headless" })).toStartWith(
        "error: ",
      );
    } finally {
      server.stop(true);
    }
  });

  test("each service trusts the collector's certificate, as its receivers load it, for the host of its OTLP endpoint", async () => {
    const collector = workloads["otel-collector"]!;
    const base = materialize("otel-collector");
    const config = ofKind<IConfigMap>(manifests, "ConfigMap").find(
      ({ o }) => o.metadata?.name === "otel-collector-config",
    )!;
    const receivers = parseYaml(config.o.data!["config.yaml"]!).receivers.otlp.protocols as Record<
      string,
      { tls: { cert_file: string; key_file: string } }
    >;
    expect(Object.keys(receivers).sort()).toEqual(["grpc", "http"]);
    expect(collector.containers[0]!.name).toBe("otel-collector");
    for (const [protocol, { tls }] of Object.entries(receivers)) {
      const server = Bun.serve({
        hostname: "127.0.0.1",
        port: 0,
        tls: { cert: readFileSync(base + tls.cert_file, "utf8"), key: readFileSync(base + tls.key_file, "utf8") },
        fetch: () => new Response("spans"),
      });
      try {
        for (const name of ["gateway", "webapp", "rpcapp"] as const) {
          const env = envUnder(workloads[name]!.containers[0]!, bases[name]);
          const servername = new URL(env.OTEL_EXPORTER_OTLP_ENDPOINT!).hostname;
          const result = await handshake(server.port!, {
            ca: readFileSync(env.OTEL_EXPORTER_OTLP_CERTIFICATE!, "utf8"),
            servername,
          });
          expect({ protocol, name, servername, result }).toEqual({
            protocol,
            name,
            servername: "otel-collector",
            result: "otel-collector: HTTP/1.1 200 OK",
          });
        }
        // It answers for the collector only: not for a service the gateway proxies to.
        expect(await handshake(server.port!, { ca: ca.cert, servername: "webapp-headless" })).toStartWith("error: ");
      } finally {
        server.stop(true);
      }
    }
  });

  function secretPair(name: string): { cert: string; key: string } {
    return { cert: secrets[name]!["tls.crt"]!, key: secrets[name]!["tls.key"]! };
  }
});
