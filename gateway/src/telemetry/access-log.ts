/**
 * The gateway's access line, one per request answered (probes only with LOG_PROBES): the schema of
 * every other line (lib/log.ts), then `trace_id`, `span_id`, `request_id`, `method`, `path`,
 * `route`, `status`, `duration_ms`, `upstream`, `endpoint`, `served_by`, `client_ip` (absent ones
 * left out) and `msg: "request"` — the members and order `log.info(fields, "request")` gave with
 * the logger's mixin, now built as one string (lib/access-line.ts: a third of what "full"
 * allocated per request was this line's way through pino).
 *
 * What a client controls (the path, an upstream's `x-served-by`, a forwarded address) is quoted
 * with JSON.stringify; route and upstream names are quoted once per config object; the request
 * id passed lib/request-id.ts's pattern, which admits no character JSON would escape.
 */
import type { SpanContext } from "@opentelemetry/api";
import { AccessLineWriter } from "../../../lib/access-line.ts";
import type { Logger } from "../../../lib/log.ts";
import type { RouteConfig } from "../config/load.ts";
import type { RequestContext } from "../context.ts";

/** A route's `,"route":…` and `,"upstream":…` members, made once per route object (a reload makes new ones). */
const routeMembers = new WeakMap<RouteConfig, { route: string; upstream: string }>();

function routeMembersOf(route: RouteConfig): { route: string; upstream: string } {
  let members = routeMembers.get(route);
  if (members === undefined) {
    members = {
      route: `,"route":${JSON.stringify(route.name)}`,
      upstream: `,"upstream":${JSON.stringify(route.upstream)}`,
    };
    routeMembers.set(route, members);
  }
  return members;
}

/** Methods are tokens (no character JSON escapes) from a short list; quoted once each. */
const quotedMethods = new Map<string, string>();

function quotedMethod(method: string): string {
  let quoted = quotedMethods.get(method);
  if (quoted === undefined) {
    quoted = JSON.stringify(method);
    if (quotedMethods.size < 64) quotedMethods.set(method, quoted);
  }
  return quoted;
}

export class AccessLog {
  readonly #writer: AccessLineWriter;

  /** `log` must come from lib/log.ts `createLogger`. */
  constructor(log: Logger) {
    this.#writer = new AccessLineWriter(log);
  }

  write(ctx: RequestContext, status: number, span: SpanContext | undefined): void {
    if (!this.#writer.enabled("info")) return;
    const route = ctx.route && routeMembersOf(ctx.route);
    const durationMs = Math.round((performance.now() - ctx.start) * 1000) / 1000;
    let members = AccessLineWriter.spanMembers(span);
    members += `,"request_id":"${ctx.id}","method":${quotedMethod(ctx.method)},"path":${JSON.stringify(ctx.path)}`;
    if (route) members += route.route;
    members += `,"status":${status},"duration_ms":${durationMs}`;
    if (route) members += route.upstream;
    if (ctx.endpoint !== undefined) members += `,"endpoint":${JSON.stringify(ctx.endpoint)}`;
    if (ctx.servedBy !== undefined) members += `,"served_by":${JSON.stringify(ctx.servedBy)}`;
    members += `,"client_ip":${JSON.stringify(ctx.clientIp)}`;
    this.#writer.write("info", members, '"request"');
  }
}
