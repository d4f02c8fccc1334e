/**
 * `make dev`'s control port: how `make rollout SERVICE=…` and `make rollback SERVICE=…`, which
 * run as separate processes, ask the running stack to replace its replicas one by one. The stack
 * process owns every replica (their logs, their exits), so it does the replacing itself
 * (rolling.ts) and streams its progress back as JSON lines; the caller drives the load and
 * counts failures (scripts/traffic/under-load.ts).
 *
 *   GET  /stack                                   versions, processes, gateway URL
 *   GET  /targets                                 every process's /metrics, as Prometheus HTTP SD
 *   POST /rollout  {"service":"webapp","version":"abc1234"}   → application/x-ndjson events
 *   POST /rollback {"service":"webapp"}                       → application/x-ndjson events
 *
 * It listens on 127.0.0.1 only (DEV_CONTROL_PORT, default 9900) and has no authentication:
 * whoever can reach the loopback interface can already signal the processes themselves. A web
 * page in the developer's browser reaches it too, so it answers no page (lib/request-guard.ts,
 * as the admin listener without ADMIN_TOKEN): a foreign Origin or a Host that is not localhost or
 * an address is 403, and a POST without `Content-Type: application/json` (what no page can send
 * across sites without a preflight, which is never granted) is 415. The Make targets' clients
 * (dev-control.ts) send it; so must curl.
 */
import type { Server } from "bun";
import { problemResponse } from "../../lib/problem.ts";
import { contentTypeProblem, type GuardWording, type OriginGuard, originProblem } from "../../lib/request-guard.ts";
import { KINDS, type Kind, type ProcessView, type RollingStack, type RolloutEvent } from "./rolling.ts";

export const DEFAULT_CONTROL_PORT = 9900;

export interface StackView {
  gatewayUrl: string;
  versions: Record<Kind, string>;
  /** What `make rollback` would return to, per service (null: nothing to roll back). */
  previous: Record<Kind, string | null>;
  rolling: boolean;
  /** The replica slots of each service (a replica that crashed is not in `processes` but has a slot). */
  replicas: Record<Kind, number>;
  processes: ProcessView[];
}

export type ControlEvent =
  | RolloutEvent
  | { type: "done"; service: Kind; from: string; to: string; tookMs: number }
  | { type: "error"; message: string };

/** A version becomes a label value and a header: the same rule as an image tag (scripts/cluster/image-tag.ts). */
const VERSION = /^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$/;

export function stackView(stack: RollingStack): StackView {
  const by = <T>(f: (k: Kind) => T) => Object.fromEntries(KINDS.map((k) => [k, f(k)])) as Record<Kind, T>;
  return {
    gatewayUrl: stack.gatewayUrl,
    versions: by((k) => stack.currentVersion(k)),
    previous: by((k) => stack.previousVersion(k) ?? null),
    rolling: stack.isRolling,
    replicas: by((k) => stack.replicasOf(k)),
    processes: stack.describe(),
  };
}

/**
 * Where each process serves /metrics, in Prometheus' HTTP service discovery format
 * (https://prometheus.io/docs/prometheus/latest/http_sd/): replicas move to their spare ports
 * during a rollout, so a fixed target list goes stale; `http_sd_configs` on this URL does not.
 */
export function prometheusTargets(stack: RollingStack): { targets: string[]; labels: Record<string, string> }[] {
  // webapp serves /metrics on PORT, or on METRICS_PORT when PORT is HTTPS (TLS on).
  const metricsPort = (p: { kind: Kind; ports: Record<string, number> }) =>
    p.kind === "gateway"
      ? p.ports.ADMIN_PORT
      : p.kind === "rpcapp"
        ? p.ports.METRICS_PORT
        : (p.ports.METRICS_PORT ?? p.ports.PORT);
  return stack.describe().map((p) => ({
    targets: [`${stack.opts.host}:${metricsPort(p)}`],
    labels: { job: p.kind, instance: p.name },
  }));
}

/** What `make canary CANARY_FAULT=…` gives the canary replicas (lib/fault.ts): a bad release to catch. */
export const CANARY_FAULTS = {
  errors: { FAULT_ERROR_PERCENT: "5" },
  latency: { FAULT_DELAY_MS: "50" },
} as const;

const CONTROL_WORDING: GuardWording = {
  listener: "control port",
  api: "make dev's control port",
  hostCheckWhen: "",
  boundName: "the address it listens on",
  hostAdvice: "Use http://127.0.0.1:<DEV_CONTROL_PORT>",
};

type Handler = (req: Request) => Response | Promise<Response>;

/** Every handler behind the page checks: a foreign Origin or Host → 403, a POST that is not JSON → 415. */
function guardAll(
  guard: OriginGuard,
  routes: Record<string, Record<string, Handler>>,
): Record<string, Record<string, Handler>> {
  const wrap =
    (handler: Handler): Handler =>
    (req) =>
      originProblem(req, guard) ?? contentTypeProblem(req, undefined, CONTROL_WORDING) ?? handler(req);
  return Object.fromEntries(
    Object.entries(routes).map(([path, methods]) => [
      path,
      Object.fromEntries(Object.entries(methods).map(([method, handler]) => [method, wrap(handler)])),
    ]),
  );
}

export function startControlServer(
  stack: RollingStack,
  opts: { port: number; host?: string; onEvent?: (e: ControlEvent) => void },
): Server<undefined> {
  const bad = (detail: string) => problemResponse({ title: "Bad request", status: 400, detail });

  async function parse(req: Request, needsVersion: boolean): Promise<{ service: Kind; version?: string } | Response> {
    let body: { service?: unknown; version?: unknown };
    try {
      body = (await req.json()) as typeof body;
    } catch {
      return bad(`the body must be JSON: {"service":"webapp"${needsVersion ? ',"version":"v2"}' : "}"}`);
    }
    if (typeof body !== "object" || body === null || !KINDS.includes(body.service as Kind))
      return bad(`"service" must be one of ${KINDS.join(", ")}`);
    if (needsVersion && (typeof body.version !== "string" || !VERSION.test(body.version))) {
      return bad('"version" must be a tag: letters, digits, ".", "_", "-", at most 63');
    }
    // A canary of the service holds the spare ports a rollout starts its replicas on.
    const conflict = stack.rolloutConflict(body.service as Kind);
    if (conflict) return problemResponse({ title: "Conflict", status: 409, detail: conflict });
    return { service: body.service as Kind, version: body.version as string | undefined };
  }

  async function parseCanaryService(req: Request): Promise<"webapp" | "rpcapp" | Response> {
    let body: { service?: unknown };
    try {
      body = (await req.json()) as typeof body;
    } catch {
      return bad('the body must be JSON: {"service":"webapp"}');
    }
    const service = body?.service;
    if (service !== "webapp" && service !== "rpcapp") return bad('"service" must be webapp or rpcapp');
    const conflict = stack.canaryConflict(service);
    if (conflict) return problemResponse({ title: "Conflict", status: 409, detail: conflict });
    return service;
  }

  /** Runs `change` and streams its events, then `done` or `error`, one JSON object per line. */
  function stream(service: Kind, change: (onEvent: (e: RolloutEvent) => void) => Promise<string>): Response {
    const encoder = new TextEncoder();
    const from = stack.currentVersion(service);
    const startedAt = performance.now();
    return new Response(
      new ReadableStream<Uint8Array>({
        async start(controller) {
          const send = (e: ControlEvent) => {
            opts.onEvent?.(e);
            try {
              controller.enqueue(encoder.encode(`${JSON.stringify(e)}\n`));
            } catch {
              // the caller went away; the rollout goes on
            }
          };
          try {
            const to = await change(send);
            // Answer only once the replaced replicas have drained and exited: the caller's load
            // must cover their whole shutdown.
            await stack.settled(send);
            send({ type: "done", service, from, to, tookMs: Math.round(performance.now() - startedAt) });
          } catch (err) {
            send({ type: "error", message: (err as Error).message });
          }
          try {
            controller.close();
          } catch {}
        },
      }),
      { headers: { "content-type": "application/x-ndjson" } },
    );
  }

  const hostname = opts.host ?? "127.0.0.1";
  const guard = { authenticated: false, listenerHost: hostname, wording: CONTROL_WORDING };
  return Bun.serve({
    hostname,
    port: opts.port,
    // A rollout's event stream may be silent for longer than Bun's default 10 s (a replica that
    // starts slowly on a busy machine): closing it then would cut `make rollout` off mid-rollout.
    idleTimeout: 0,
    routes: guardAll(guard, {
      "/stack": { GET: () => Response.json(stackView(stack)) },
      "/targets": { GET: () => Response.json(prometheusTargets(stack)) },
      "/rollout": {
        POST: async (req) => {
          const parsed = await parse(req, true);
          if (parsed instanceof Response) return parsed;
          const { service, version } = parsed;
          return stream(service, async (onEvent) => {
            await stack.rollingReplace(service, version!, onEvent);
            return version!;
          });
        },
      },
      // Canary replicas beside the stable ones (scripts/stack/canary.ts drives the gateways' side).
      "/canary/start": {
        POST: async (req) => {
          const text = await req.text();
          const parsed = await parse(new Request(req.url, { method: "POST", body: text }), true);
          if (parsed instanceof Response) return parsed;
          if (parsed.service === "gateway") return bad("a canary is of webapp or rpcapp: the gateways run it");
          const { fault } = JSON.parse(text) as { fault?: unknown };
          if (fault !== undefined && !(typeof fault === "string" && fault in CANARY_FAULTS))
            return bad(`"fault" must be one of ${Object.keys(CANARY_FAULTS).join(", ")}`);
          const service = parsed.service;
          const env = fault ? CANARY_FAULTS[fault as keyof typeof CANARY_FAULTS] : {};
          return stream(service, async (onEvent) => {
            await stack.startCanaries(service, parsed.version!, env, onEvent);
            return parsed.version!;
          });
        },
      },
      "/canary/promote": {
        POST: async (req) => {
          const parsed = await parseCanaryService(req);
          if (parsed instanceof Response) return parsed;
          return stream(parsed, (onEvent) => stack.promoteCanaries(parsed, onEvent));
        },
      },
      "/canary/remove": {
        POST: async (req) => {
          const parsed = await parseCanaryService(req);
          if (parsed instanceof Response) return parsed;
          return stream(parsed, async (onEvent) => {
            await stack.removeCanaries(parsed, onEvent);
            return stack.currentVersion(parsed);
          });
        },
      },
      "/rollback": {
        POST: async (req) => {
          const parsed = await parse(req, false);
          if (parsed instanceof Response) return parsed;
          if (stack.previousVersion(parsed.service) === undefined) {
            return problemResponse({
              title: "Conflict",
              status: 409,
              detail: `${parsed.service} has not been rolled out in this stack: there is no previous version to go back to`,
            });
          }
          return stream(parsed.service, (onEvent) => stack.rollback(parsed.service, onEvent));
        },
      },
    }),
    fetch: (req) =>
      originProblem(req, guard) ??
      problemResponse({
        title: "Not Found",
        status: 404,
        detail: `no route for ${req.method} ${new URL(req.url).pathname}; try GET /stack, GET /targets, POST /rollout, POST /rollback, POST /canary/start, POST /canary/promote, POST /canary/remove`,
      }),
  });
}
