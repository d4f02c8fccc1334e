/**
 * The monitoring configs in k8s/monitoring, checked by the tools that ship with Prometheus and
 * Alertmanager (Debian's prometheus and prometheus-alertmanager): promtool for the Prometheus
 * config with its `alerting:` block and the watchdog rule, amtool for Alertmanager's config and
 * where each alert is routed. Under CI a missing tool fails the test instead of skipping it.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseAllDocuments, parse as parseYaml, stringify as toYaml } from "yaml";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { requireBinary, spawnProcess, stopProcess, waitFor } from "../../scripts/stack/testing/processes.ts";
import { REPO_ROOT } from "./checks/manifests.ts";

const hasPromtool = requireBinary("promtool");
const hasAmtool = requireBinary("amtool");
const hasPrometheus = requireBinary("prometheus");
const dir = mkdtempSync(join(tmpdir(), "portico-monitoring-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A key of a ConfigMap in a k8s/monitoring file. */
function configMapKey(file: string, name: string, key: string): string {
  for (const doc of parseAllDocuments(readFileSync(join(REPO_ROOT, "k8s/monitoring", file), "utf8"))) {
    const o = doc.toJS() as { kind?: string; metadata?: { name?: string }; data?: Record<string, string> } | null;
    if (o?.kind === "ConfigMap" && o.metadata?.name === name && o.data?.[key] !== undefined) return o.data[key];
  }
  throw new Error(`k8s/monitoring/${file}: no ConfigMap ${name} with key ${key}`);
}

async function tool(argv: string[]): Promise<{ exitCode: number; stdout: string; output: string }> {
  const proc = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe", stdin: "ignore" });
  const timer = setTimeout(() => proc.kill(), 20_000);
  const stdout = await new Response(proc.stdout).text();
  const output = stdout + (await new Response(proc.stderr).text());
  clearTimeout(timer);
  return { exitCode: await proc.exited, stdout, output };
}

const amConfig = join(dir, "alertmanager.yml");
writeFileSync(amConfig, configMapKey("alertmanager.yaml", "alertmanager-config", "alertmanager.yml"));

describe.skipIf(!hasAmtool)("Alertmanager (amtool)", () => {
  test("amtool accepts the config", async () => {
    const result = await tool(["amtool", "check-config", amConfig]);
    expect({ exitCode: result.exitCode, output: result.exitCode === 0 ? "" : result.output }).toEqual({
      exitCode: 0,
      output: "",
    });
    expect(result.output).toContain("1 receivers");
  });

  test.each([
    ["alertname=PorticoWatchdog", "log"],
    ["alertname=PorticoHighErrorRatio service=webapp route=/projects severity=warning", "log"],
    ["alertname=PorticoUpstreamWithoutEndpoints upstream=rpcapp severity=critical", "log"],
    [
      "alertname=PorticoCertificateExpiresSoon job=webapp instance=webapp-1 certificate=server severity=critical",
      "log",
    ],
  ])("%s is routed to the %s receiver", async (labels, receiver) => {
    const result = await tool([
      "amtool",
      "config",
      "routes",
      "test",
      `--config.file=${amConfig}`,
      ...labels.split(" "),
    ]);
    expect({ exitCode: result.exitCode, receiver: result.stdout.trim() }).toEqual({
      exitCode: 0,
      receiver,
    });
  });

  test("amtool rejects a route to a receiver that does not exist (the check is not vacuous)", async () => {
    const broken = join(dir, "broken.yml");
    writeFileSync(
      broken,
      readFileSync(amConfig, "utf8").replace("receiver: log\n  group_by", "receiver: pager\n  group_by"),
    );
    expect((await tool(["amtool", "check-config", broken])).exitCode).not.toBe(0);
  });
});

describe.skipIf(!hasPromtool)("Prometheus (promtool)", () => {
  test("promtool accepts the config with its alerting block (Kubernetes discovery swapped for a static target)", async () => {
    const rules = join(dir, "alerts.yml");
    writeFileSync(rules, configMapKey("prometheus.yaml", "prometheus-config", "alerts.yml"));
    const config = parseYaml(configMapKey("prometheus.yaml", "prometheus-config", "prometheus.yml")) as {
      rule_files: string[];
      alerting: { alertmanagers: { static_configs: { targets: string[] }[] }[] };
      scrape_configs: Record<string, unknown>[];
    };
    expect(config.alerting.alertmanagers[0]!.static_configs[0]!.targets).toEqual(["alertmanager:9093"]);
    // Debian's Prometheus is built without Kubernetes discovery (checked by shape in checks/hardening.ts).
    for (const job of config.scrape_configs)
      if (job.kubernetes_sd_configs) {
        delete job.kubernetes_sd_configs;
        job.static_configs = [{ targets: ["pod:1"] }];
      }
    config.rule_files = [rules];
    const file = join(dir, "prometheus.yml");
    writeFileSync(file, toYaml(config));
    const result = await tool(["promtool", "check", "config", file]);
    expect({ exitCode: result.exitCode, output: result.exitCode === 0 ? "" : result.output }).toEqual({
      exitCode: 0,
      output: "",
    });
  });

  test("the watchdog fires at once and keeps firing, so its silence means alerts are lost", async () => {
    const rules = join(dir, "alerts.yml");
    writeFileSync(rules, configMapKey("prometheus.yaml", "prometheus-config", "alerts.yml"));
    const testFile = join(dir, "watchdog.test.yml");
    writeFileSync(
      testFile,
      toYaml({
        rule_files: [rules],
        evaluation_interval: "15s",
        tests: [
          {
            interval: "15s",
            input_series: [],
            alert_rule_test: [0, 60, 600].map((s) => ({
              eval_time: `${s}s`,
              alertname: "PorticoWatchdog",
              exp_alerts: [
                {
                  exp_labels: { severity: "none" },
                  exp_annotations: {
                    summary: "Alerting works: Prometheus evaluates rules and Alertmanager delivers them",
                    description:
                      "Always firing. Its absence from the alert receiver means alerts are not being delivered.",
                  },
                },
              ],
            })),
          },
        ],
      }),
    );
    const result = await tool(["promtool", "test", "rules", testFile]);
    expect({ exitCode: result.exitCode, output: result.exitCode === 0 ? "" : result.output }).toEqual({
      exitCode: 0,
      output: "",
    });
  });

  test("PorticoCertificateExpiresSoon: 21 days before a certificate ends (after an hour), critical 3 days before or once it has", async () => {
    // The summaries are checked (their templates must render); the descriptions and the other
    // rules' annotations are left out.
    const rules = parseYaml(configMapKey("prometheus.yaml", "prometheus-config", "alerts.yml")) as {
      groups: { rules: { alert: string; annotations?: Record<string, string> }[] }[];
    };
    for (const rule of rules.groups.flatMap((g) => g.rules))
      if (rule.alert !== "PorticoCertificateExpiresSoon") delete rule.annotations;
      else delete rule.annotations!.description;
    const rulesFile = join(dir, "certificate-alerts.yml");
    writeFileSync(rulesFile, toYaml(rules));
    const DAY = 86_400;
    // As Prometheus scrapes them (job and instance from its relabelling), expiring at these
    // seconds after the test's time 0.
    const certificates: { labels: Record<string, string>; at: number }[] = [
      {
        labels: { job: "gateway", instance: "gateway-1", certificate: "upstream-client", upstream: "rpcapp" },
        at: 10 * DAY,
      },
      { labels: { job: "webapp", instance: "webapp-1", certificate: "server" }, at: 2 * DAY },
      { labels: { job: "gateway", instance: "gateway-2", certificate: "server" }, at: -DAY },
      { labels: { job: "rpcapp", instance: "rpcapp-1", certificate: "server" }, at: 60 * DAY },
    ];
    const selector = (labels: Record<string, string>) =>
      `tls_certificate_expiry_timestamp_seconds{${Object.entries(labels)
        .map(([k, v]) => `${k}="${v}"`)
        .join(",")}}`;
    const [gatewayClient, webapp, expired] = certificates.map((c) => c.labels);
    const alert = (labels: Record<string, string>, severity: string, summary: string) => ({
      exp_labels: { ...labels, severity },
      exp_annotations: { summary },
    });
    const testFile = join(dir, "certificates.test.yml");
    writeFileSync(
      testFile,
      toYaml({
        rule_files: [rulesFile],
        evaluation_interval: "1m",
        tests: [
          {
            interval: "1m",
            input_series: certificates.map((c) => ({ series: selector(c.labels), values: `${c.at}x180` })),
            alert_rule_test: [
              // Critical after its 5 minutes; the warnings wait for their hour.
              {
                eval_time: "30m",
                alertname: "PorticoCertificateExpiresSoon",
                exp_alerts: [
                  alert(webapp!, "critical", "webapp pod webapp-1: its server certificate expires in 1d 23h 30m 0s"),
                  alert(expired!, "critical", "gateway pod gateway-2: its server certificate has expired"),
                ],
              },
              {
                eval_time: "2h",
                alertname: "PorticoCertificateExpiresSoon",
                exp_alerts: [
                  alert(
                    gatewayClient!,
                    "warning",
                    "gateway pod gateway-1: its upstream-client certificate towards rpcapp expires in 9d 22h 0m 0s",
                  ),
                  alert(webapp!, "warning", "webapp pod webapp-1: its server certificate expires in 1d 22h 0m 0s"),
                  alert(webapp!, "critical", "webapp pod webapp-1: its server certificate expires in 1d 22h 0m 0s"),
                  alert(expired!, "warning", "gateway pod gateway-2: its server certificate has expired"),
                  alert(expired!, "critical", "gateway pod gateway-2: its server certificate has expired"),
                ],
              },
            ],
          },
        ],
      }),
    );
    const result = await tool(["promtool", "test", "rules", testFile]);
    expect({ exitCode: result.exitCode, output: result.exitCode === 0 ? "" : result.output }).toEqual({
      exitCode: 0,
      output: "",
    });
  });
});

describe.skipIf(!hasPrometheus)("the pods' scrape targets (the real Prometheus, relabelling only)", () => {
  test("one target per pod on its annotated port, for an IPv4 and an IPv6 pod address alike", async () => {
    const config = parseYaml(configMapKey("prometheus.yaml", "prometheus-config", "prometheus.yml")) as {
      scrape_configs: Record<string, unknown>[];
    };
    const pods = config.scrape_configs.find((j) => j.job_name === "portico-pods")!;
    // Debian's Prometheus has no Kubernetes discovery: the pods as it would describe them, one
    // target per declared container port (the gateway declares 8080 and 9901, scraped on 9901).
    delete pods.kubernetes_sd_configs;
    const pod = (name: string, ip: string, host: string) =>
      ["8080", "9901"].map((port) => ({
        targets: [`${host}:${port}`],
        labels: {
          __meta_kubernetes_namespace: "portico",
          __meta_kubernetes_pod_name: name,
          __meta_kubernetes_pod_ip: ip,
          __meta_kubernetes_pod_phase: "Running",
          __meta_kubernetes_pod_label_app_kubernetes_io_name: "gateway",
          __meta_kubernetes_pod_annotation_prometheus_io_scrape: "true",
          __meta_kubernetes_pod_annotation_prometheus_io_port: "9901",
          __meta_kubernetes_pod_annotation_prometheus_io_path: "/metrics",
        },
      }));
    pods.static_configs = [
      ...pod("gateway-v4", "10.244.0.7", "10.244.0.7"),
      ...pod("gateway-v6", "fd00:10:244::7", "[fd00:10:244::7]"),
    ];
    const port = await freePort();
    const file = join(dir, "pods-prometheus.yml");
    writeFileSync(file, toYaml({ global: { scrape_interval: "1h" }, scrape_configs: [pods] }));
    const proc = spawnProcess("prometheus-relabel", [
      "prometheus",
      `--config.file=${file}`,
      `--storage.tsdb.path=${join(dir, "pods-data")}`,
      `--web.listen-address=127.0.0.1:${port}`,
      "--log.level=warn",
    ]);
    try {
      type Target = { scrapeUrl: string; labels: Record<string, string> };
      let targets: Target[] = [];
      await waitFor(
        "the targets",
        async () => {
          const res = await fetch(`http://127.0.0.1:${port}/api/v1/targets`).catch(() => undefined);
          if (!res?.ok) return false;
          targets = ((await res.json()) as { data: { activeTargets: Target[] } }).data.activeTargets;
          return targets.length > 0;
        },
        { proc, timeoutMs: 15_000 },
      );
      expect(targets.map((t) => [t.labels.instance, t.scrapeUrl]).sort()).toEqual([
        ["gateway-v4", "http://10.244.0.7:9901/metrics"],
        ["gateway-v6", "http://[fd00:10:244::7]:9901/metrics"],
      ]);
    } finally {
      await stopProcess(proc);
    }
  }, 30_000);
});
