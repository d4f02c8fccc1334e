/**
 * "Change the stack while traffic flows, and prove nothing failed": the shape of `make rollout`
 * and `make rollback`. Steady traffic starts first (a warm-up shows the stack answers before
 * anything changes), the change runs, traffic goes on for a settling time, then the report is
 * printed; any failed request fails the script.
 */
import { chalk } from "zx";
import { envInt } from "../../lib/env.ts";
import { ScriptError, step } from "../cli.ts";
import { formatCounts, formatReport, LoadGenerator, type LoadReport, TRAFFIC_MIX } from "./load-generator.ts";

export interface UnderLoadOptions {
  gatewayUrl: string;
  /** What changes, for the messages: "the rollout of webapp". */
  what: string;
  /** Requests/s over keep-alive connections. */
  rps: number;
  /** Requests/s each on a new connection (0: none): the clients a gateway's listener closing can reset. */
  newConnectionRps: number;
  warmupMs: number;
  settleMs: number;
  /** A progress line this often while the change runs. */
  progressMs?: number;
}

/** The new-connection clients' default rate: what lost requests in a local gateway handover before tcp_migrate_req. */
export const DEFAULT_NEW_CONNECTION_RPS = 400;

/** LOAD_RPS (default `rps`), LOAD_NEW_CONN_RPS (400), ROLLOUT_WARMUP_S (3), ROLLOUT_SETTLE_S (5). */
export function loadSettingsFromEnv(
  rps: number,
  env: Record<string, string | undefined> = process.env,
): Pick<UnderLoadOptions, "rps" | "newConnectionRps" | "warmupMs" | "settleMs"> {
  return {
    rps: envInt("LOAD_RPS", rps, { min: 1, max: 100_000 }, env),
    newConnectionRps: envInt("LOAD_NEW_CONN_RPS", DEFAULT_NEW_CONNECTION_RPS, { min: 0, max: 10_000 }, env),
    warmupMs: envInt("ROLLOUT_WARMUP_S", 3, { min: 0, max: 600 }, env) * 1000,
    settleMs: envInt("ROLLOUT_SETTLE_S", 5, { min: 0, max: 600 }, env) * 1000,
  };
}

function progressLine(r: LoadReport): string {
  const versions = Object.entries(r.serviceVersions)
    .map(([route, v]) => `${route} ${formatCounts(v)}`)
    .join("; ");
  return chalk.dim(
    `  … ${(r.durationMs / 1000).toFixed(0)} s: ${r.sent} sent, ${r.failed} failed (${r.clients.newConnection.failed} of ${r.clients.newConnection.sent} on new connections); gateway ${formatCounts(r.gatewayVersions)}; ${versions}`,
  );
}

/** Runs `change` under load; resolves with the report when no request failed, else throws ScriptError. */
export async function underLoad(opts: UnderLoadOptions, change: () => Promise<void>): Promise<LoadReport> {
  const clients =
    opts.newConnectionRps > 0
      ? `${opts.rps} requests/s over keep-alive connections + ${opts.newConnectionRps}/s each on a new connection`
      : `${opts.rps} requests/s over keep-alive connections`;
  step(`steady load: ${clients} through ${opts.gatewayUrl} (GET /projects/?limit=10 and POST /verify/ in turn)`);
  const load = new LoadGenerator(opts.gatewayUrl, {
    rps: opts.rps,
    newConnectionRps: opts.newConnectionRps,
    mix: TRAFFIC_MIX,
  });
  load.start();
  const progress = setInterval(() => console.log(progressLine(load.snapshot())), opts.progressMs ?? 5_000);
  let report: LoadReport | undefined;
  try {
    await Bun.sleep(opts.warmupMs);
    const warm = load.snapshot();
    if (warm.failed > 0) {
      report = await load.stop();
      throw new ScriptError(
        `the gateway already failed ${warm.failed} of ${warm.sent} requests before ${opts.what} started, so nothing was changed:\n${formatReport(report)}\nCheck the stack first: make smoke`,
      );
    }
    await change();
    await Bun.sleep(opts.settleMs);
  } finally {
    clearInterval(progress);
    if (!report) {
      report = await load.stop();
      step("requests during the change");
      console.log(formatReport(report));
    }
  }
  if (report.sent === 0) throw new ScriptError(`no request was sent during ${opts.what}: is LOAD_RPS above 0?`);
  if (report.failed > 0)
    throw new ScriptError(`${report.failed} of ${report.sent} requests failed during ${opts.what} (target: 0)`);
  console.log(`\n${chalk.green(`0 of ${report.sent} requests failed`)} during ${opts.what}`);
  return report;
}
