/**
 * Following requests across the real stack (3 gateways, 3 webapps, 3 rpcapps as processes):
 * traces exported over OTLP/HTTP to a receiver in this test, correlated log lines, /metrics of
 * every service (promtool), the monitoring config in k8s/monitoring (promtool, and a real
 * Prometheus scraping this stack), and the Grafana dashboard's queries.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse as parseYaml, parseAllDocuments, stringify as toYaml } from "yaml";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { requireBinary, spawnProcess, stopAll, waitFor } from "../../scripts/stack/testing/processes.ts";
import { clusterPrometheusFile, localPrometheusConfig } from "../../scripts/monitor.ts";
import { startTestStack, type TestStack } from "../../scripts/stack/testing/stack.ts";
import { otlpAccepted, otlpTraces, plainAttributes } from "../../lib/telemetry/testing/otlp.ts";

const hasPromtool = requireBinary("promtool");
const hasPrometheus = requireBinary("prometheus");

const CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN = "00f067aa0ba902b7";
const SECRET_TOKEN = "obs-secret-token-7f3a";
const SECRET_COOKIE = "obs-cookie-value-91c2";
const json = { "content-type": "application/json" };
const SPAN_KIND = { SERVER: 2, CLIENT: 3 } as const;
/** Generous for a busy CI machine; each test waits for conditions, not for time. */
const TEST_TIMEOUT_MS = 30_000;

interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
}

let stack: TestStack;
let receiver: ReturnType<typeof Bun.serve>;
let prometheus: Promise<Awaited<ReturnType<typeof startPrometheus>> | undefined> = Promise.resolve(undefined);
const spans: ReceivedSpan[] = [];
/** Every OTLP body received, verbatim, for the credentials check. */
const otlpBodies: string[] = [];
/** The Content-Types the exports came with. */
const otlpContentTypes = new Set<string>();
const tempDirs: string[] = [];

/**
 * An OTLP/HTTP receiver: the services' exporters post ExportTraceServiceRequests to /v1/traces,
 * in protobuf (their default) — decoded independently of the SDK (lib/telemetry/testing/otlp.ts).
 */
function startOtlpReceiver(port: number) {
  return Bun.serve({
    hostname: "127.0.0.1",
    port,
    async fetch(req) {
      if (new URL(req.url).pathname !== "/v1/traces") return new Response("not found", { status: 404 });
      const { traces, raw, contentType } = await otlpTraces(req);
      otlpContentTypes.add(contentType);
      // Strings travel as UTF-8 in either encoding: the credentials check searches the bytes as text.
      otlpBodies.push(new TextDecoder().decode(raw));
      for (const rs of traces.resourceSpans) {
        const service = String(plainAttributes(rs.resource.attributes)["service.name"]);
        for (const ss of rs.scopeSpans)
          for (const s of ss.spans)
            spans.push({
              ...s,
              parentSpanId: s.parentSpanId ?? "",
              service,
              attributes: plainAttributes(s.attributes),
            });
      }
      return otlpAccepted(contentType);
    },
  });
}

beforeAll(async () => {
  receiver = startOtlpReceiver(await freePort());
  stack = await startTestStack({
    env: { OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiver.port}`, OTEL_BSP_SCHEDULE_DELAY: "100" },
  });
  if (hasPrometheus) prometheus = startPrometheus();
}, 60_000);

afterAll(async () => {
  await stack?.stop();
  await stopAll();
  receiver?.stop(true);
  for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(join(tmpdir(), "portico-obs-"));
  tempDirs.push(dir);
  return dir;
}

/** Waits until at least `expected` spans of `traceId` have arrived, and returns them. */
async function spansOf(traceId: string, expected: number): Promise<ReceivedSpan[]> {
  await waitFor(
    `${expected} spans of trace ${traceId}`,
    () => spans.filter((s) => s.traceId === traceId).length >= expected,
    { timeoutMs: 10_000 },
  );
  return spans.filter((s) => s.traceId === traceId);
}

type LogLine = Record<string, unknown> & { process: string };

/** Every JSON log line of every process that carries `requestId`. */
function logLinesOf(requestId: string): LogLine[] {
  const out: LogLine[] = [];
  for (const [process, lines] of stack.output) {
    for (const line of lines) {
      if (!line.includes(requestId)) continue;
      const parsed = JSON.parse(line) as Record<string, unknown>;
      if (parsed.request_id === requestId) out.push({ ...parsed, process });
    }
  }
  return out;
}

describe("one request, followed through every service", () => {
  test(
    "gateway → webapp: the client's traceparent is honoured; each span is the child of the one before; all log lines share trace_id and request_id",
    async () => {
      const res = await fetch(`${stack.gatewayUrl}/projects/`, {
        method: "POST",
        headers: {
          ...json,
          traceparent: `00-${CLIENT_TRACE}-${CLIENT_SPAN}-01`,
          "x-request-id": "obs-http-1",
          authorization: `Bearer ${SECRET_TOKEN}`,
          cookie: `session=${SECRET_COOKIE}`,
        },
        body: '{"title":"traced"}',
      });
      expect(res.status).toBe(201);

      const trace = await spansOf(CLIENT_TRACE, 3);
      // Every service exports in OTLP's default encoding (OTEL_EXPORTER_OTLP_PROTOCOL unset).
      expect([...otlpContentTypes]).toEqual(["application/x-protobuf"]);
      const gatewayServer = trace.find((s) => s.service === "gateway" && s.kind === SPAN_KIND.SERVER)!;
      const gatewayClient = trace.find((s) => s.service === "gateway" && s.kind === SPAN_KIND.CLIENT)!;
      const webappServer = trace.find((s) => s.service === "webapp" && s.kind === SPAN_KIND.SERVER)!;
      expect(gatewayServer).toMatchObject({
        parentSpanId: CLIENT_SPAN,
        name: "POST /projects",
        attributes: { "http.route": "/projects", "http.response.status_code": 201, "portico.request_id": "obs-http-1" },
      });
      expect(gatewayClient).toMatchObject({
        parentSpanId: gatewayServer.spanId,
        name: "POST",
        attributes: { "http.response.status_code": 201 },
      });
      expect(webappServer).toMatchObject({
        parentSpanId: gatewayClient.spanId,
        name: "POST /projects",
        attributes: { "http.route": "/projects", "portico.request_id": "obs-http-1" },
      });

      await waitFor(
        "the access lines of gateway and webapp",
        () => new Set(logLinesOf("obs-http-1").map((l) => l.service)).size === 2,
      );
      const lines = logLinesOf("obs-http-1");
      expect(lines.every((l) => l.trace_id === CLIENT_TRACE)).toBe(true);
      expect(lines.find((l) => l.service === "gateway" && l.msg === "request")).toMatchObject({
        process: res.headers.get("x-gateway"),
        span_id: gatewayServer.spanId,
        status: 201,
      });
      expect(lines.find((l) => l.service === "webapp" && l.msg === "request")).toMatchObject({
        process: res.headers.get("x-served-by"),
        span_id: webappServer.spanId,
        status: 201,
      });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "gateway → rpcapp over gRPC: a trace starts at the gateway and continues in rpcapp through the metadata; the logs share its ids",
    async () => {
      const res = await fetch(`${stack.gatewayUrl}/verify/`, {
        method: "POST",
        headers: { ...json, "x-request-id": "obs-grpc-1" },
        body: '{"id": 121, "token": "a$$"}',
      });
      expect(await res.json()).toEqual({ message: "Verified: 121" });

      await waitFor("the gateway's access line", () => logLinesOf("obs-grpc-1").some((l) => l.service === "gateway"));
      const traceId = String(logLinesOf("obs-grpc-1").find((l) => l.service === "gateway")!.trace_id);
      const trace = await spansOf(traceId, 3);
      const gatewayServer = trace.find((s) => s.service === "gateway" && s.kind === SPAN_KIND.SERVER)!;
      const gatewayClient = trace.find((s) => s.service === "gateway" && s.kind === SPAN_KIND.CLIENT)!;
      const rpcappServer = trace.find((s) => s.service === "rpcapp" && s.kind === SPAN_KIND.SERVER)!;
      expect(gatewayServer).toMatchObject({ parentSpanId: "", name: "POST /verify" });
      expect(gatewayClient).toMatchObject({
        parentSpanId: gatewayServer.spanId,
        name: "userverify.UserVerify/VerifyUser",
        attributes: { "rpc.system": "grpc", "rpc.grpc.status_code": 0 },
      });
      expect(rpcappServer).toMatchObject({
        parentSpanId: gatewayClient.spanId,
        name: "userverify.UserVerify/VerifyUser",
        attributes: { "rpc.method": "VerifyUser", "portico.request_id": "obs-grpc-1" },
      });

      await waitFor("the rpc line of rpcapp", () => logLinesOf("obs-grpc-1").some((l) => l.service === "rpcapp"));
      const lines = logLinesOf("obs-grpc-1");
      expect(new Set(lines.map((l) => l.service))).toEqual(new Set(["gateway", "rpcapp"]));
      expect(lines.every((l) => l.trace_id === traceId)).toBe(true);
      expect(lines.find((l) => l.service === "rpcapp")).toMatchObject({
        msg: "rpc",
        process: res.headers.get("x-served-by"),
        span_id: rpcappServer.spanId,
        grpc_code: "OK",
      });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "the Authorization and cookie values a client sent appear in no span and no log line",
    async () => {
      // The first test sent them; make sure its spans have been exported before looking.
      await spansOf(CLIENT_TRACE, 3);
      const everything = [...otlpBodies, ...[...stack.output.values()].flat()].join("\n");
      expect(everything).toContain("obs-http-1"); // the search covers that request
      expect(everything).not.toContain(SECRET_TOKEN);
      expect(everything).not.toContain(SECRET_COOKIE);
    },
    TEST_TIMEOUT_MS,
  );
});

// ---- metrics --------------------------------------------------------------------------------

/** `name{labels}` → value, from the Prometheus text format. */
function parseSamples(text: string): { name: string; labels: Record<string, string>; value: number }[] {
  const out: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) continue;
    const labels = Object.fromEntries(
      [...(m[2] ?? "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1]!, l[2]!]),
    );
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

const metricsUrls = () => ({
  gateway: stack.adminUrls().map((u) => `${u}/metrics`),
  webapp: stack.processes.filter((p) => p.kind === "webapp").map((p) => `http://127.0.0.1:${p.env.PORT}/metrics`),
  rpcapp: stack.processes
    .filter((p) => p.kind === "rpcapp")
    .map((p) => `http://127.0.0.1:${p.env.METRICS_PORT}/metrics`),
});

/** The sum, over every replica of a service, of the samples of `name` whose labels include `labels`. */
async function total(urls: string[], name: string, labels: Record<string, string>): Promise<number> {
  let sum = 0;
  for (const url of urls) {
    for (const s of parseSamples(await (await fetch(url)).text())) {
      if (s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)) sum += s.value;
    }
  }
  return sum;
}

async function promtool(args: string[], stdin?: string): Promise<{ exitCode: number; output: string }> {
  const proc = Bun.spawn(["promtool", ...args], {
    stdin: stdin === undefined ? "ignore" : new Blob([stdin]),
    stdout: "pipe",
    stderr: "pipe",
  });
  const timer = setTimeout(() => proc.kill(), 20_000);
  const output = (await new Response(proc.stdout).text()) + (await new Response(proc.stderr).text());
  clearTimeout(timer);
  return { exitCode: await proc.exited, output };
}

describe("metrics", () => {
  test(
    "counters move with requests: per route at the gateway and webapp, per method at rpcapp, per endpoint upstream",
    async () => {
      const urls = metricsUrls();
      const counters = () =>
        Promise.all([
          total(urls.gateway, "http_server_requests_total", { route: "projects", method: "POST", status_code: "201" }),
          total(urls.gateway, "http_server_requests_total", { route: "verify", method: "POST", status_code: "200" }),
          total(urls.gateway, "portico_gateway_upstream_requests_total", { upstream: "webapp", outcome: "ok" }),
          total(urls.gateway, "portico_gateway_upstream_request_duration_seconds_count", { upstream: "rpcapp" }),
          total(urls.webapp, "http_server_requests_total", { route: "/projects", method: "POST", status_code: "201" }),
          total(urls.rpcapp, "grpc_server_handled_total", {
            grpc_method: "userverify.UserVerify/VerifyUser",
            grpc_code: "OK",
          }),
        ]);
      const before = await counters();
      for (let i = 0; i < 3; i++) {
        expect(
          (await fetch(`${stack.gatewayUrl}/projects/`, { method: "POST", headers: json, body: `{"title":"m${i}"}` }))
            .status,
        ).toBe(201);
        expect(
          (
            await fetch(`${stack.gatewayUrl}/verify/`, {
              method: "POST",
              headers: json,
              body: `{"id": ${i + 1}, "token": "t"}`,
            })
          ).status,
        ).toBe(200);
      }
      const after = await counters();
      expect(after.map((v, i) => v - before[i]!)).toEqual([3, 3, 3, 3, 3, 3]);
    },
    TEST_TIMEOUT_MS,
  );

  test.skipIf(!hasPromtool)(
    "each service's /metrics passes promtool check metrics",
    async () => {
      const urls = metricsUrls();
      for (const url of [urls.gateway[0]!, urls.webapp[0]!, urls.rpcapp[0]!]) {
        const text = await (await fetch(url)).text();
        expect({ url, ...(await promtool(["check", "metrics"], text)) }).toEqual({ url, exitCode: 0, output: "" });
      }
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "the gateway serves /metrics on its admin port only, never on the public listener",
    async () => {
      expect((await fetch(`${stack.gatewayUrl}/metrics`)).status).toBe(404);
      expect((await fetch(`${stack.adminUrls()[0]}/metrics`)).headers.get("content-type")).toStartWith(
        "text/plain; version=0.0.4",
      );
    },
    TEST_TIMEOUT_MS,
  );
});

// ---- monitoring config ---------------------------------------------------------------------

const K8S_SERVICES = ["gateway", "webapp", "rpcapp"] as const;

/** The objects of one file under k8s/. */
// biome-ignore lint/suspicious/noExplicitAny: Kubernetes objects of many kinds, read field by field below
async function manifests(file: string): Promise<Record<string, any>[]> {
  return parseAllDocuments(await Bun.file(join(import.meta.dir, "../..", file)).text()).map((d) => d.toJS());
}

/** The cluster's rule file, with the annotations (templates for people) left out for `promtool test rules`. */
function rulesWithoutAnnotations(): string {
  const rules = parseYaml(clusterPrometheusFile("alerts.yml")) as { groups: { rules: Record<string, unknown>[] }[] };
  for (const group of rules.groups) for (const rule of group.rules) delete rule.annotations;
  return toYaml(rules);
}

describe.skipIf(!hasPromtool)("the monitoring config in k8s/monitoring", () => {
  test(
    "promtool accepts the alert rules, and the Prometheus config (its Kubernetes discovery swapped for static targets)",
    async () => {
      const dir = tempDir();
      writeFileSync(join(dir, "alerts.yml"), clusterPrometheusFile("alerts.yml"));
      expect(await promtool(["check", "rules", join(dir, "alerts.yml")])).toMatchObject({ exitCode: 0 });
      // Debian's Prometheus is built without Kubernetes discovery; its block is checked by shape.
      const config = parseYaml(clusterPrometheusFile("prometheus.yml")) as {
        rule_files: string[];
        scrape_configs: Record<string, unknown>[];
      };
      const pods = config.scrape_configs.find((j) => j.job_name === "portico-pods")!;
      expect(pods.kubernetes_sd_configs).toEqual([{ role: "pod", namespaces: { names: ["portico"] } }]);
      delete pods.kubernetes_sd_configs;
      pods.static_configs = [{ targets: ["pod:1"] }];
      config.rule_files = [join(dir, "alerts.yml")];
      writeFileSync(join(dir, "prometheus.yml"), toYaml(config));
      const checked = await promtool(["check", "config", join(dir, "prometheus.yml")]);
      expect({ ...checked, output: checked.exitCode === 0 ? "" : checked.output }).toEqual({ exitCode: 0, output: "" });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "the alerts fire on what they describe: 5xx ratio, breaker open, no endpoint, limiter in fallback, target down",
    async () => {
      const dir = tempDir();
      writeFileSync(join(dir, "alerts.yml"), rulesWithoutAnnotations());
      const series = (s: string, values: string) => ({ series: s, values });
      writeFileSync(
        join(dir, "alerts.test.yml"),
        toYaml({
          rule_files: ["alerts.yml"],
          evaluation_interval: "15s",
          tests: [
            {
              interval: "15s",
              input_series: [
                series(
                  'http_server_requests_total{service="webapp",route="/projects",method="POST",status_code="500",instance="webapp-1"}',
                  "0+6x40",
                ),
                series(
                  'http_server_requests_total{service="webapp",route="/projects",method="POST",status_code="201",instance="webapp-1"}',
                  "0+54x40",
                ),
                series(
                  'http_server_requests_total{service="gateway",route="verify",method="POST",status_code="200",instance="gateway-1"}',
                  "0+60x40",
                ),
                series(
                  'grpc_server_handled_total{service="rpcapp",grpc_method="userverify.UserVerify/VerifyUser",grpc_code="UNAVAILABLE",instance="rpcapp-1"}',
                  "0+10x40",
                ),
                series(
                  'grpc_server_handled_total{service="rpcapp",grpc_method="userverify.UserVerify/VerifyUser",grpc_code="OK",instance="rpcapp-1"}',
                  "0+10x40",
                ),
                series(
                  'portico_gateway_upstream_breaker_state{upstream="webapp",endpoint="webapp-2:8080",instance="gateway-1"}',
                  "0 2x40",
                ),
                series(
                  'portico_gateway_upstream_breaker_state{upstream="webapp",endpoint="webapp-3:8080",instance="gateway-1"}',
                  "0x40",
                ),
                series(
                  'portico_gateway_upstream_endpoint_available{upstream="rpcapp",endpoint="rpcapp-1:50051",instance="gateway-1"}',
                  "1 0x40",
                ),
                series(
                  'portico_gateway_upstream_endpoint_available{upstream="webapp",endpoint="webapp-3:8080",instance="gateway-1"}',
                  "1x40",
                ),
                series(
                  'portico_gateway_upstream_endpoint_available{upstream="webapp",endpoint="webapp-2:8080",instance="gateway-1"}',
                  "1 0x40",
                ),
                // Open, but its probe is due and no request came to move it: available, no alert.
                series(
                  'portico_gateway_upstream_breaker_state{upstream="webapp",endpoint="webapp-4:8080",instance="gateway-1"}',
                  "0 2x40",
                ),
                series(
                  'portico_gateway_upstream_endpoint_available{upstream="webapp",endpoint="webapp-4:8080",instance="gateway-1"}',
                  "1 0 0 0 1x40",
                ),
                // Discovery found no endpoint at all: no per-endpoint series, only the count.
                series('portico_gateway_upstream_endpoints{upstream="ghost",instance="gateway-1"}', "0x40"),
                series('portico_gateway_upstream_endpoints{upstream="webapp",instance="gateway-1"}', "3x40"),
                series('portico_gateway_ratelimit_mode{mode="fallback",instance="gateway-1"}', "0 1x40"),
                series('portico_gateway_ratelimit_mode{mode="fallback",instance="gateway-2"}', "0x40"),
                series('up{job="webapp",instance="webapp-1"}', "1 0x40"),
                series('up{job="gateway",instance="gateway-1"}', "1x40"),
              ],
              alert_rule_test: [
                {
                  eval_time: "8m",
                  alertname: "PorticoHighErrorRatio",
                  exp_alerts: [{ exp_labels: { severity: "warning", service: "webapp", route: "/projects" } }],
                },
                {
                  eval_time: "8m",
                  alertname: "PorticoGrpcHighErrorRatio",
                  exp_alerts: [
                    {
                      exp_labels: {
                        severity: "warning",
                        service: "rpcapp",
                        grpc_method: "userverify.UserVerify/VerifyUser",
                      },
                    },
                  ],
                },
                { eval_time: "30s", alertname: "PorticoBreakerOpen", exp_alerts: [] },
                {
                  eval_time: "3m",
                  alertname: "PorticoBreakerOpen",
                  exp_alerts: [{ exp_labels: { severity: "warning", upstream: "webapp", endpoint: "webapp-2:8080" } }],
                },
                {
                  eval_time: "3m",
                  alertname: "PorticoUpstreamWithoutEndpoints",
                  exp_alerts: [
                    { exp_labels: { severity: "critical", upstream: "ghost" } },
                    { exp_labels: { severity: "critical", upstream: "rpcapp" } },
                  ],
                },
                {
                  eval_time: "3m",
                  alertname: "PorticoRateLimiterFallback",
                  exp_alerts: [{ exp_labels: { severity: "warning", instance: "gateway-1" } }],
                },
                {
                  eval_time: "4m",
                  alertname: "PorticoTargetDown",
                  exp_alerts: [{ exp_labels: { severity: "warning", job: "webapp", instance: "webapp-1" } }],
                },
              ],
            },
          ],
        }),
      );
      const result = await promtool(["test", "rules", join(dir, "alerts.test.yml")]);
      expect({ exitCode: result.exitCode, output: result.exitCode === 0 ? "" : result.output }).toEqual({
        exitCode: 0,
        output: "",
      });
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "every Deployment's scrape annotations name the port its /metrics is served on",
    async () => {
      // webapp serves /metrics on PORT, or on METRICS_PORT when PORT speaks TLS (TLS_CERT_FILE).
      const portEnv = (service: string, env: Record<string, string | undefined>) =>
        service === "gateway" ? "ADMIN_PORT" : service === "rpcapp" || "TLS_CERT_FILE" in env ? "METRICS_PORT" : "PORT";
      for (const service of K8S_SERVICES) {
        const deployment = (await manifests(`k8s/${service}.yaml`)).find((o) => o.kind === "Deployment")!;
        const pod = deployment.spec.template;
        const container = pod.spec.containers[0];
        const env = Object.fromEntries(container.env.map((e: { name: string; value?: string }) => [e.name, e.value]));
        expect({ service, ...pod.metadata.annotations }).toEqual({
          service,
          "prometheus.io/scrape": "true",
          "prometheus.io/port": env[portEnv(service, env)],
          "prometheus.io/path": "/metrics",
        });
        // Spans go to the collector over TLS, verified with the cluster CA (k8s/test/tls.test.ts).
        expect(env.OTEL_EXPORTER_OTLP_ENDPOINT).toBe("https://otel-collector:4318");
        expect(env.OTEL_EXPORTER_OTLP_CERTIFICATE).toBe("/etc/portico-tls/ca.crt");
      }
    },
    TEST_TIMEOUT_MS,
  );
});

// ---- a real Prometheus on this stack, and the dashboard --------------------------------------

/**
 * A real Prometheus on the stack, started with the stack so its target discovery (which batches
 * updates every 5 s) runs while the other tests do: `make monitor`'s jobs (static, by port) and
 * the cluster's pod job (its relabelling fed the stack as Kubernetes describes pods), side by side.
 */
async function startPrometheus(): Promise<{ url: string; proc: ReturnType<typeof spawnProcess> }> {
  const dir = tempDir();
  const port = await freePort();
  const rulesFile = join(dir, "alerts.yml");
  writeFileSync(rulesFile, clusterPrometheusFile("alerts.yml"));
  const local = parseYaml(localPrometheusConfig(stack.opts, { scrapeInterval: "1s", rulesFile })) as {
    scrape_configs: unknown[];
  };
  const cluster = parseYaml(clusterPrometheusFile("prometheus.yml")) as { scrape_configs: Record<string, unknown>[] };
  const pods = cluster.scrape_configs.find((j) => j.job_name === "portico-pods")!;
  delete pods.kubernetes_sd_configs;
  pods.static_configs = podsAsKubernetesDescribesThem();
  const self = cluster.scrape_configs.find((j) => j.job_name === "prometheus")!;
  self.static_configs = [{ targets: [`127.0.0.1:${port}`] }];
  const config = {
    global: { scrape_interval: "1s", scrape_timeout: "1s", evaluation_interval: "1s" },
    rule_files: [rulesFile],
    scrape_configs: [...local.scrape_configs, pods, self],
  };
  writeFileSync(join(dir, "prometheus.yml"), toYaml(config));
  const proc = spawnProcess("prometheus", [
    "prometheus",
    `--config.file=${join(dir, "prometheus.yml")}`,
    `--storage.tsdb.path=${join(dir, "data")}`,
    `--web.listen-address=127.0.0.1:${port}`,
    "--log.level=warn",
  ]);
  return { url: `http://127.0.0.1:${port}`, proc };
}

/** The stack's processes as Kubernetes pod discovery would describe them: one target per declared port. */
function podsAsKubernetesDescribesThem(): { targets: string[]; labels: Record<string, string> }[] {
  const groups: { targets: string[]; labels: Record<string, string> }[] = [];
  for (const p of stack.processes) {
    const metricsPort = { gateway: p.env.ADMIN_PORT, webapp: p.env.PORT, rpcapp: p.env.METRICS_PORT }[p.kind]!;
    const declared = p.kind === "webapp" ? [p.env.PORT!] : [p.env.PORT!, metricsPort];
    const labels = {
      __meta_kubernetes_namespace: "portico",
      __meta_kubernetes_pod_name: p.name,
      __meta_kubernetes_pod_ip: "127.0.0.1",
      __meta_kubernetes_pod_phase: "Running",
      __meta_kubernetes_pod_label_app_kubernetes_io_name: p.kind,
      __meta_kubernetes_pod_annotation_prometheus_io_scrape: "true",
      __meta_kubernetes_pod_annotation_prometheus_io_port: metricsPort,
      __meta_kubernetes_pod_annotation_prometheus_io_path: "/metrics",
    };
    for (const port of declared) groups.push({ targets: [`127.0.0.1:${port}`], labels });
  }
  // Pods Prometheus must leave alone: one without the annotation, one not running yet.
  groups.push({
    targets: ["127.0.0.1:1"],
    labels: {
      __meta_kubernetes_pod_name: "jaeger-0",
      __meta_kubernetes_pod_phase: "Running",
      __meta_kubernetes_pod_label_app_kubernetes_io_name: "jaeger",
    },
  });
  groups.push({
    targets: ["127.0.0.1:2"],
    labels: {
      __meta_kubernetes_pod_name: "webapp-new",
      __meta_kubernetes_pod_phase: "Pending",
      __meta_kubernetes_pod_annotation_prometheus_io_scrape: "true",
      __meta_kubernetes_pod_annotation_prometheus_io_port: "2",
    },
  });
  return groups;
}

async function dashboardPanels(): Promise<{ title: string; exprs: string[] }[]> {
  const configMap = (await manifests("k8s/monitoring/grafana.yaml")).find(
    (o) => o.kind === "ConfigMap" && o.metadata.name === "grafana-dashboards",
  )!;
  const dashboard = JSON.parse(configMap.data["portico.json"]) as {
    panels: { type: string; title: string; targets?: { expr: string }[] }[];
  };
  return dashboard.panels
    .filter((p) => p.type !== "row")
    .map((p) => ({ title: p.title, exprs: (p.targets ?? []).map((t) => t.expr) }));
}

/** Metric names in a PromQL expression: identifiers followed by a selector `{` or a range `[`. */
function metricNamesIn(expr: string): string[] {
  return [...expr.matchAll(/([a-zA-Z_:][\w:]*)\s*[{[]/g)].map((m) => m[1]!);
}

/** Every metric name the services expose (histograms with their _bucket/_sum/_count). */
async function exportedMetricNames(): Promise<Set<string>> {
  const urls = metricsUrls();
  const names = new Set<string>();
  for (const url of [urls.gateway[0]!, urls.webapp[0]!, urls.rpcapp[0]!]) {
    for (const m of (await (await fetch(url)).text()).matchAll(/^# TYPE (\S+) (\S+)/gm)) {
      names.add(m[1]!);
      if (m[2] === "histogram") for (const suffix of ["_bucket", "_sum", "_count"]) names.add(m[1]! + suffix);
    }
  }
  return names;
}

describe("the Grafana dashboard", () => {
  test(
    "parses, and every panel's query names only metrics the services export",
    async () => {
      const panels = await dashboardPanels();
      expect(panels.length).toBeGreaterThan(15);
      const exported = await exportedMetricNames();
      for (const panel of panels) {
        const named = panel.exprs.flatMap(metricNamesIn);
        expect({ panel: panel.title, names: named.length > 0 }).toEqual({ panel: panel.title, names: true });
        expect({ panel: panel.title, unknown: named.filter((n) => !exported.has(n)) }).toEqual({
          panel: panel.title,
          unknown: [],
        });
      }
    },
    TEST_TIMEOUT_MS,
  );
});

describe.skipIf(!hasPrometheus)("a real Prometheus scraping the stack", () => {
  let url: string;

  beforeAll(async () => {
    url = (await prometheus)!.url;
    await waitFor("Prometheus to be ready", async () => (await fetch(`${url}/-/ready`)).ok, {
      proc: (await prometheus)!.proc,
      timeoutMs: 20_000,
      intervalMs: 100,
    });
  }, 30_000);

  type Target = { scrapePool: string; labels: Record<string, string>; health: string; lastError: string };

  test(
    "sees every target up: make monitor's jobs, and the cluster's pod job with job and instance from the pod",
    async () => {
      let active: Target[] = [];
      await waitFor(
        "19 targets up",
        async () => {
          active = (
            (await (await fetch(`${url}/api/v1/targets?state=active`)).json()) as { data: { activeTargets: Target[] } }
          ).data.activeTargets;
          return active.length === 19 && active.every((t) => t.health === "up");
        },
        { timeoutMs: 20_000, intervalMs: 200 },
      ).catch((err) => {
        throw new Error(
          `${(err as Error).message}\n${JSON.stringify(active.map((t) => [t.scrapePool, t.labels.instance, t.health, t.lastError]))}`,
        );
      });
      const byPool = (pool: string) =>
        active
          .filter((t) => t.scrapePool === pool)
          .map((t) => `${t.labels.job}/${t.labels.instance}`)
          .sort();
      expect(byPool("gateway")).toHaveLength(3);
      expect(byPool("webapp")).toHaveLength(3);
      expect(byPool("rpcapp")).toHaveLength(3);
      expect(byPool("portico-pods")).toEqual([...stack.processes.map((p) => `${p.kind}/${p.name}`)].sort());
      expect(byPool("prometheus")).toHaveLength(1);
    },
    TEST_TIMEOUT_MS,
  );

  test(
    "every dashboard query runs there, and the per-route and per-pod panels have data",
    async () => {
      // rate() needs two scrapes within its window; make some traffic to show.
      await fetch(`${stack.gatewayUrl}/projects/`, { method: "POST", headers: json, body: '{"title":"dash"}' });
      const query = async (expr: string) =>
        (await (await fetch(`${url}/api/v1/query?query=${encodeURIComponent(expr)}`)).json()) as {
          status: string;
          error?: string;
          data: { result: unknown[] };
        };
      const panels = await dashboardPanels();
      expect(panels.length).toBeGreaterThan(15); // not vacuous: every panel of the dashboard is queried
      for (const panel of panels) {
        for (const expr of panel.exprs) {
          const answer = await query(expr);
          expect({ panel: panel.title, expr, status: answer.status, error: answer.error }).toEqual({
            panel: panel.title,
            expr,
            status: "success",
            error: undefined,
          });
        }
      }
      for (const expr of [
        "sum by (service, route) (rate(http_server_requests_total[1m]))",
        "sum by (service, instance) (rate(process_cpu_seconds_total[1m]))",
        "count by (service, version) (portico_build_info{})",
      ]) {
        await waitFor(`data for ${expr}`, async () => (await query(expr)).data.result.length > 0, {
          timeoutMs: 10_000,
          intervalMs: 250,
        });
      }
    },
    TEST_TIMEOUT_MS,
  );
});
