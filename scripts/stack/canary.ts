/**
 * `make canary` on the `make dev` stack: a new version of webapp or rpcapp next to the stable one,
 * stepped up and judged by the gateways themselves (gateway/src/canary/controller.ts), then
 * promoted or rolled back — the whole release, hands off:
 *
 *   1. every gateway starts its canary (admin API `POST /canary/<service>/start`) before the
 *      canary exists, so its replicas get the first step's share from their first request;
 *   2. canary replicas of the new version start beside the stable ones (rolling.ts
 *      startCanaries: the spare ports, found by the gateways through DNS);
 *   3. steady traffic through the gateways (only the canary's route: its analysis needs
 *      requests); each gateway moves its canary through the steps of routes.yaml's policy on its
 *      own traffic, and each step's verdict is printed as it comes;
 *   4. all promoted: the canary replicas take the stable ones' places (promoteCanaries), which
 *      drain and exit; one gateway aborting is enough to stop it everywhere — weights go to 0,
 *      the canary replicas drain and exit (removeCanaries) — and the run fails;
 *   5. the gateways' canaries are reset (traffic spread over every endpoint again) and the load's
 *      report printed: every failed request is counted.
 */
import { formatReport, LoadGenerator, type LoadReport, SEED_MIX, TRAFFIC_MIX } from "../traffic/load-generator.ts";
import { type ControlEvent, controlStream } from "./dev-control.ts";

export interface CanaryStepView {
  step: number;
  weight: number;
  durationMs: number;
  canary: { requests: number; errors: number; errorRate: number; p99Ms: number };
  stable: { requests: number; errors: number; errorRate: number; p99Ms: number };
  measuredShare: number;
  verdict: "passed" | "failed" | "ended";
  reason: string;
}

export interface GatewayCanaryView {
  state: "idle" | "running" | "paused" | "promoted" | "aborted";
  version: string | null;
  weight: number;
  /** The step in force (1-based), of `steps`. */
  step: number | null;
  steps: number[];
  history: CanaryStepView[];
}

/**
 * Every step passed: promoted, or — a policy whose last step is below 100 % — holding at that
 * last step after passing it (the gateway waits there for an operator; here, the run promotes).
 */
function passedEveryStep(view: GatewayCanaryView): boolean {
  if (view.state === "promoted") return true;
  const last = view.history.at(-1);
  return (
    view.state === "paused" &&
    view.step === view.steps.length &&
    last?.verdict === "passed" &&
    last.step === view.steps.length
  );
}

export interface CanaryRunOptions {
  controlUrl: string;
  gatewayUrl: string;
  /** Each gateway's admin base URL, by instance name. */
  gateways: Record<string, string>;
  adminToken?: string;
  service: "webapp" | "rpcapp";
  version: string;
  /** A drill: the canary replicas misbehave (control.ts CANARY_FAULTS). */
  fault?: "errors" | "latency";
  rps: number;
  /** Bound on the whole analysis. */
  timeoutMs: number;
  print: (line: string) => void;
  onControlEvent?: (e: ControlEvent) => void;
}

export interface CanaryOutcome {
  verdict: "promoted" | "aborted";
  /** Every gateway's step reports, by gateway. */
  steps: Record<string, CanaryStepView[]>;
  reason: string;
  load: LoadReport;
}

/** One line per judged step, as `make canary` prints them. */
export function describeStep(gateway: string, s: CanaryStepView): string {
  const side = (x: CanaryStepView["canary"]) => `${x.requests} req, ${x.errorRate}% errors, p99 ${x.p99Ms} ms`;
  return `${gateway} step ${s.step} at ${s.weight}%: ${s.verdict.toUpperCase()} — canary ${side(s.canary)}; stable ${side(s.stable)}; measured share ${s.measuredShare}% (${(s.durationMs / 1000).toFixed(1)} s) — ${s.reason}`;
}

/** The gateways' canary admin API (gateway/src/admin/canary.ts), for every replica at once. */
export class GatewayCanaries {
  readonly #auth: Record<string, string>;

  constructor(
    /** Each gateway's admin base URL, by instance name. */
    readonly gateways: Record<string, string>,
    readonly service: "webapp" | "rpcapp",
    adminToken?: string,
  ) {
    this.#auth = adminToken ? { authorization: `Bearer ${adminToken}` } : {};
  }

  async call(base: string, path: string, body?: object): Promise<GatewayCanaryView> {
    const res = await fetch(`${base}/canary/${this.service}${path}`, {
      method: body ? "POST" : "GET",
      headers: { ...this.#auth, "content-type": "application/json" },
      ...(body ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(5_000),
    });
    const json = (await res.json()) as GatewayCanaryView & { detail?: string };
    if (!res.ok) throw new Error(`${base}/canary/${this.service}${path}: ${res.status} ${json.detail ?? ""}`);
    return json;
  }

  /** Sets every gateway's canary back to idle (traffic over every endpoint). */
  async resetAll(): Promise<void> {
    for (const base of Object.values(this.gateways)) await this.call(base, "/reset", {});
  }

  /**
   * Starts the canary of `version` on every gateway. Called before the canary replicas exist, so
   * they get the first step's share from their first request: while a canary runs a gateway sends
   * an endpoint whose version it does not know yet nothing, and the canary's side goes to the
   * stable version until it has endpoints.
   */
  async startAll(version: string, print: (line: string) => void): Promise<void> {
    const gateways = Object.entries(this.gateways);
    let weight = 0;
    for (const [, base] of gateways) weight = (await this.call(base, "/start", { version })).weight;
    print(
      `every gateway (${gateways.map(([n]) => n).join(", ")}) started its canary: ${weight}% of ${this.service}'s requests to ${version}`,
    );
  }

  /**
   * Follows every gateway's canary, printing each step's verdict as it comes, until every gateway
   * promoted it or one aborted it — then the others abort too — or `timeoutMs` passed (an abort
   * as well).
   */
  async follow(
    timeoutMs: number,
    print: (line: string) => void,
  ): Promise<Pick<CanaryOutcome, "verdict" | "reason" | "steps">> {
    const gateways = Object.entries(this.gateways);
    const seen = new Map<string, number>(gateways.map(([name]) => [name, 0]));
    const views = new Map<string, GatewayCanaryView>();
    let verdict: CanaryOutcome["verdict"] = "aborted";
    let reason = "";
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      await Bun.sleep(500);
      for (const [name, base] of gateways) {
        const view = await this.call(base, "");
        views.set(name, view);
        for (const step of view.history.slice(seen.get(name))) print(describeStep(name, step));
        seen.set(name, view.history.length);
      }
      const states = [...views.values()].map((v) => v.state);
      if (states.includes("aborted")) {
        const [who, view] = [...views.entries()].find(([, v]) => v.state === "aborted")!;
        const last = view.history.at(-1);
        // Its analysis failed (the last step's report says why), or something else aborted it.
        reason = `${who}: ${last?.verdict === "failed" ? last.reason : "aborted on the gateway (its admin API), not by an analysis"}`;
        break;
      }
      if ([...views.values()].every(passedEveryStep)) {
        const holding = gateways.filter(([name]) => views.get(name)?.state === "paused");
        for (const [, base] of holding) await this.call(base, "/promote", {});
        verdict = "promoted";
        reason =
          holding.length > 0
            ? `every step passed on every gateway (the policy ends at ${views.get(holding[0]![0])!.weight}%: promoted)`
            : "every step passed on every gateway";
        break;
      }
      if (Date.now() > deadline) {
        reason = `no verdict within ${timeoutMs / 1000} s (states: ${states.join(", ")})`;
        break;
      }
    }
    // One gateway's failed analysis is enough: stop the canary everywhere at once.
    if (verdict === "aborted")
      for (const [, base] of gateways) await this.call(base, "/abort", {}).catch(() => undefined);
    return { verdict, reason, steps: Object.fromEntries([...views].map(([name, v]) => [name, v.history])) };
  }
}

export async function runCanary(opts: CanaryRunOptions): Promise<CanaryOutcome> {
  const { service, print } = opts;
  const control = async (path: "/canary/start" | "/canary/promote" | "/canary/remove", body: object) => {
    for await (const e of controlStream(opts.controlUrl, path, body)) opts.onControlEvent?.(e);
  };
  const canaries = new GatewayCanaries(opts.gateways, service, opts.adminToken);

  // The gateways first: the canary replicas then get the first step's share from their first request.
  await canaries.startAll(opts.version, print);
  print(
    `canary replicas of ${service} ${opts.version}${opts.fault ? ` (drill: ${opts.fault})` : ""} start beside the stable ones`,
  );
  try {
    await control("/canary/start", { service, version: opts.version, ...(opts.fault ? { fault: opts.fault } : {}) });
  } catch (err) {
    await canaries.resetAll().catch(() => undefined);
    throw err;
  }

  // Half the requests on connections of their own: the kernel spreads new connections over the
  // gateways, where a few keep-alive ones may all land on one and starve another's analysis.
  const half = Math.max(1, Math.round(opts.rps / 2));
  const load = new LoadGenerator(opts.gatewayUrl, {
    rps: half,
    newConnectionRps: half,
    mix: canaryMix(service),
    maxInFlight: 2_000,
  });
  load.start();
  let outcome: Pick<CanaryOutcome, "verdict" | "reason" | "steps">;
  let report: LoadReport;
  try {
    await Bun.sleep(1_000);
    outcome = await canaries.follow(opts.timeoutMs, print);
    if (outcome.verdict === "aborted") {
      print(`ABORT: ${outcome.reason}; every gateway sends the canary 0%, its replicas drain and exit`);
      await control("/canary/remove", { service });
    } else {
      print(`PROMOTE: ${outcome.reason}; the canary replicas take the stable ones' places`);
      await control("/canary/promote", { service });
    }
    await canaries.resetAll();
    await Bun.sleep(1_000);
  } finally {
    report = await load.stop();
  }
  print(formatReport(report));
  return { ...outcome, load: report };
}

/**
 * The load a canary of `service` needs: its own route's requests only (the analysis counts them).
 * `persistentStore`: the cluster's, whose projects outlive every run — webapp's route is read, as
 * rollouts and `make load` read it; the local stack keeps the seed's create, whose latency its
 * canaries have been judged on (`rm -rf .data` empties that store).
 */
export function canaryMix(service: "webapp" | "rpcapp", persistentStore = false) {
  const mix = persistentStore ? TRAFFIC_MIX : SEED_MIX;
  return mix.filter((m) => m.name === (service === "webapp" ? "projects" : "verify"));
}
