/**
 * scripts/monitor.ts (`make monitor`): what the local Prometheus scrapes, with and without TLS, and
 * from make dev's control port when it answers (checked by the real promtool when installed).
 */
import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse } from "yaml";
import { clusterPrometheusFile, localPrometheusConfig, localTargets } from "../monitor.ts";
import { stackOptionsFromEnv } from "../stack/stack.ts";
import { requireBinary, spawnProcess } from "../stack/testing/processes.ts";

test("the ports make dev uses; with TLS=1, webapp's plain metrics ports (its API ports speak HTTPS only)", () => {
  const plain = localTargets(stackOptionsFromEnv({}));
  expect(plain).toEqual({
    gateway: ["127.0.0.1:9901", "127.0.0.1:9902", "127.0.0.1:9903"],
    webapp: ["127.0.0.1:3001", "127.0.0.1:3002", "127.0.0.1:3003"],
    rpcapp: ["127.0.0.1:5101", "127.0.0.1:5102", "127.0.0.1:5103"],
  });
  const tls = localTargets(stackOptionsFromEnv({ TLS: "1" }));
  expect(tls.webapp).toEqual(["127.0.0.1:3101", "127.0.0.1:3102", "127.0.0.1:3103"]);
  expect([tls.gateway, tls.rpcapp]).toEqual([plain.gateway, plain.rpcapp]);
});

describe("with make dev's control port answering", () => {
  const options = stackOptionsFromEnv({});

  test("Prometheus discovers the processes there (HTTP SD: replicas move to their spare ports in a rollout)", () => {
    const config = parse(localPrometheusConfig(options, { controlUrl: "http://127.0.0.1:9900" })) as {
      scrape_configs: Record<string, unknown>[];
    };
    expect(config.scrape_configs).toEqual([
      {
        job_name: "portico-dev",
        metrics_path: "/metrics",
        http_sd_configs: [{ url: "http://127.0.0.1:9900/targets", refresh_interval: "5s" }],
      },
    ]);
    // Without it, the base ports (the fallback when make dev's control port does not answer).
    const fallback = parse(localPrometheusConfig(options)) as { scrape_configs: { static_configs?: unknown }[] };
    expect(fallback.scrape_configs.map((c) => c.static_configs !== undefined)).toEqual([true, true, true]);
  });

  test.skipIf(!requireBinary("promtool"))("promtool accepts both configs, with the cluster's alert rules", async () => {
    const dir = mkdtempSync(join(tmpdir(), "portico-monitor-test-"));
    try {
      const rulesFile = join(dir, "alerts.yml");
      writeFileSync(rulesFile, clusterPrometheusFile("alerts.yml"));
      for (const controlUrl of ["http://127.0.0.1:9900", undefined]) {
        const file = join(dir, "prometheus.yml");
        writeFileSync(file, localPrometheusConfig(options, { rulesFile, ...(controlUrl ? { controlUrl } : {}) }));
        const check = spawnProcess("promtool", ["promtool", "check", "config", file]);
        const code = await check.exited;
        expect({ code, output: code === 0 ? "" : check.lines.join("\n") }).toEqual({ code: 0, output: "" });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
