/**
 * The gateway's request path, in order:
 *   request context → refuse methods/Host never routed → normalise path → match route →
 *   guards (auth, rate limit, body size) →
 *   pick endpoint → transport (HTTP forward | gRPC transcode) → response headers → access log.
 * Routes themselves come from routes.yaml; this file is the index of what happens to a request.
 */
import type { Server } from "bun";
import * as grpc from "@grpc/grpc-js";
import { context } from "@opentelemetry/api";
import type { ServiceIdentity } from "../../lib/env.ts";
import { exceedsJsonDepth, isJsonMediaType } from "../../lib/json.ts";
import type { Lifecycle } from "../../lib/lifecycle.ts";
import type { Logger } from "../../lib/log.ts";
import { requestIdOf } from "../../lib/request-id.ts";
import type { GatewayConfig, RouteConfig } from "./config/load.ts";
import { sameUpstream } from "./config/reload.ts";
import type { RequestContext } from "./context.ts";
import { gatewayProblem } from "./errors.ts";
import { callUnary } from "./grpc/call.ts";
import { grpcCodeName, httpStatusFromGrpc } from "./grpc/status.ts";
import { checkMessage } from "./grpc/transcode.ts";
import { applyHeaderLimit, extendDeadline } from "./limits.ts";
import { TrustedProxies } from "./net/client-ip.ts";
import { defaultRateLimiter, type RateLimiter } from "./ratelimit/limiter.ts";
import { readBody } from "./proxy/body.ts";
import { forwardHttp, prepareRequestHeaders } from "./proxy/http.ts";
import { limitResponseSize } from "./proxy/response-limit.ts";
import { refuseRequest } from "./routing/request-guard.ts";
import { Router } from "./routing/router.ts";
import { gatewayTelemetry } from "./telemetry.ts";
import { normalizePath } from "./routing/path.ts";
import { dispatch, noEndpointProblem } from "./upstream/dispatch.ts";
import { isIdempotentMethod } from "./upstream/outcome.ts";
import { Upstream, type UpstreamEvent } from "./upstream/upstream.ts";

export interface GatewayDeps {
  identity: ServiceIdentity;
  log: Logger;
  lifecycle: Lifecycle;
  /** Decides rate-limited routes (shared through Redis when configured); in memory when absent. */
  rateLimiter?: RateLimiter;
}

/** The parts built from one config; swapped as a whole on reload. */
interface GatewayState {
  config: GatewayConfig;
  router: Router<RouteConfig>;
  upstreams: Map<string, Upstream>;
  trustedProxies: TrustedProxies;
}

const JSON_HEADERS = { "content-type": "application/json" };
const utf8 = new TextDecoder("utf-8", { fatal: true });

export class Gateway {
  #state: GatewayState;
  /** Upstreams a reload replaced, until they are closed. */
  readonly #retired = new Set<Upstream>();

  constructor(
    config: GatewayConfig,
    private readonly deps: GatewayDeps,
  ) {
    this.#state = Gateway.#build(config, deps.log);
  }

  /** `current`: the state in service, whose upstreams are kept where their settings did not change. */
  static #build(config: GatewayConfig, log: Logger, current?: GatewayState): GatewayState {
    const upstreams = new Map<string, Upstream>();
    for (const settings of config.upstreams.values()) {
      const previous = current?.config.upstreams.get(settings.name);
      const kept = previous && sameUpstream(previous, settings) ? current!.upstreams.get(settings.name) : undefined;
      upstreams.set(
        settings.name,
        kept ?? new Upstream(settings, { onEvent: (event) => logUpstreamEvent(log, event) }),
      );
    }
    return {
      config,
      router: new Router(config.routes),
      upstreams,
      trustedProxies: new TrustedProxies(config.trustedProxies),
    };
  }

  /**
   * Puts a reloaded config into service at once; a request already running finishes with the
   * state it started with. Upstreams whose settings did not change are kept, with their
   * endpoints' health, breakers and connections. New ones resolve their names before the swap;
   * the ones they replace are closed once the requests that may still use them have had their
   * time (the longest route timeout). The header limit is process-wide: it follows the new config
   * for connections opened from now on. (idleTimeoutSec is Bun.serve's and needs a restart.)
   */
  async reload(config: GatewayConfig): Promise<void> {
    const previous = this.#state;
    const next = Gateway.#build(config, this.deps.log, previous);
    await Promise.all(
      [...next.upstreams.values()].filter((u) => previous.upstreams.get(u.name) !== u).map((u) => u.ready),
    );
    this.#state = next;
    applyHeaderLimit(config.limits.maxHeaderBytes);
    this.deps.rateLimiter?.reconfigure(config.rateLimit);
    const replaced = [...previous.upstreams.values()].filter((u) => next.upstreams.get(u.name) !== u);
    if (replaced.length === 0) return;
    for (const u of replaced) this.#retired.add(u);
    const graceMs = Math.max(0, ...previous.config.routes.map((r) => r.timeoutMs));
    setTimeout(() => {
      for (const u of replaced) {
        u.close();
        this.#retired.delete(u);
      }
    }, graceMs).unref();
  }

  get config(): GatewayConfig {
    return this.#state.config;
  }

  get upstreams(): ReadonlyMap<string, Upstream> {
    return this.#state.upstreams;
  }

  /** The largest body any route accepts: Bun's own limit is set just above it. */
  get maxBodyBytes(): number {
    return Math.max(this.#state.config.limits.maxBodyBytes, ...this.#state.config.routes.map((r) => r.maxBodyBytes));
  }

  close(): void {
    for (const upstream of [...this.#state.upstreams.values(), ...this.#retired]) upstream.close();
  }

  /** Bun.serve's fetch handler for the public listener. */
  readonly fetch = async (req: Request, server: Server<unknown>): Promise<Response> => {
    const state = this.#state;
    const { url } = req;
    // Without a usable Host (HTTP/1.0, `Host: a/b`) Bun's url is the path alone; for CONNECT, no path.
    const pathStart = url.charCodeAt(0) === 47 ? 0 : url.indexOf("/", url.indexOf("//") + 2);
    const queryStart = pathStart < 0 ? -1 : url.indexOf("?", pathStart);
    const rawPath = pathStart < 0 ? "" : queryStart < 0 ? url.slice(pathStart) : url.slice(pathStart, queryStart);
    const peer = server.requestIP(req)?.address ?? "unknown";
    const { clientIp, peerIsTrusted } = state.trustedProxies.clientIp(peer, req.headers.get("x-forwarded-for"));
    const ctx: RequestContext = {
      id: requestIdOf(req.headers),
      start: performance.now(),
      method: req.method,
      path: rawPath,
      search: queryStart < 0 ? "" : url.slice(queryStart),
      clientIp,
      peerIsTrusted,
    };
    // The server span; the request runs in its context, so upstream tries become its children.
    const scope = gatewayTelemetry.begin(req.headers, ctx.id, req.method, rawPath);
    let response: Response;
    try {
      response = await context.with(scope, this.#handle, this, req, ctx, state, server);
    } catch (err) {
      context.with(scope, () => this.deps.log.error({ err, request_id: ctx.id }, "unhandled error in request path"));
      response = gatewayProblem(500, "Internal gateway error", ctx.id);
    }
    response.headers.set("x-request-id", ctx.id);
    response.headers.set("x-gateway", this.deps.identity.instance);
    response.headers.set("x-gateway-version", this.deps.identity.version);
    this.deps.lifecycle.closeConnectionWhileDraining(response.headers);
    gatewayTelemetry.end(scope, ctx, response.status);
    context.with(scope, this.#accessLog, this, ctx, response.status);
    return response;
  };

  async #handle(req: Request, ctx: RequestContext, state: GatewayState, server: Server<unknown>): Promise<Response> {
    const refusal = refuseRequest(req.method, req.headers.get("host"));
    if (refusal)
      return gatewayProblem(refusal.status, refusal.title, ctx.id, refusal.detail, undefined, refusal.headers);
    if (ctx.path === "/healthz") return Response.json({ status: "ok" });
    if (ctx.path === "/readyz")
      return this.deps.lifecycle.isReady()
        ? Response.json({ status: "ready" })
        : gatewayProblem(503, "Not ready", ctx.id, "the gateway is starting or draining");

    const normalized = normalizePath(ctx.path);
    if (!normalized.ok)
      return gatewayProblem(
        normalized.status,
        normalized.status === 414 ? "URI too long" : "Bad request path",
        ctx.id,
        normalized.reason,
      );
    ctx.path = normalized.path;

    const match = state.router.match(req.method, ctx.path);
    if (match.kind === "not-found") return gatewayProblem(404, "Not found", ctx.id, `no route for ${ctx.path}`);
    if (match.kind === "method-not-allowed") {
      return gatewayProblem(
        405,
        "Method not allowed",
        ctx.id,
        `${req.method} is not allowed on ${ctx.path}`,
        { allow: match.allow },
        { allow: match.allow.join(", ") },
      );
    }
    const route = match.route;
    ctx.route = route;
    if (route.auth) {
      const auth = await route.auth.check(req.headers);
      if (!auth.ok) return auth.response(ctx.id);
    }
    const limit =
      route.rateLimit &&
      (await (this.deps.rateLimiter ?? defaultRateLimiter()).check(
        route.name,
        route.rateLimit,
        ctx.clientIp,
        req.headers,
      ));
    if (limit && !limit.allowed) return limit.response(ctx.id);
    const upstream = state.upstreams.get(route.upstream)!;

    const body = await readBody(req, route.maxBodyBytes);
    if (!body.ok) {
      return body.reason === "too-large"
        ? gatewayProblem(413, "Content too large", ctx.id, `the body exceeds ${route.maxBodyBytes} bytes`, {
            limit: route.maxBodyBytes,
          })
        : gatewayProblem(
            400,
            "Incomplete request body",
            ctx.id,
            "the client closed the connection before the body was complete",
          );
    }
    // Upstreams parse and validate bodies themselves, but deep nesting is where parsers and
    // validators break; a few dozen levels are all any API here needs. Other media types pass.
    const { maxJsonDepth } = state.config.limits;
    if (
      body.bytes &&
      !route.grpcMethod &&
      isJsonMediaType(req.headers.get("content-type")) &&
      exceedsJsonDepth(body.bytes, maxJsonDepth)
    ) {
      return gatewayProblem(
        400,
        "Invalid request",
        ctx.id,
        `the JSON body is nested deeper than ${maxJsonDepth} levels`,
      );
    }
    extendDeadline(server, req, route.timeoutMs, state.config.limits.idleTimeoutSec);
    const response = await (route.grpcMethod
      ? this.#transcodeGrpc(req, ctx, route, upstream, body.bytes, state.config.limits)
      : this.#forwardHttp(req, ctx, route, upstream, body.bytes, state.config.limits));
    limit?.setHeaders(response.headers);
    return response;
  }

  // `limits` come from the state the request started with: a reload mid-request does not change them.
  async #forwardHttp(
    req: Request,
    ctx: RequestContext,
    route: RouteConfig,
    upstream: Upstream,
    body: Uint8Array | null,
    limits: GatewayConfig["limits"],
  ): Promise<Response> {
    const upstreamPath =
      route.http?.rewritePrefix !== undefined && route.match === "prefix"
        ? rewrite(ctx.path, route.path, route.http.rewritePrefix)
        : ctx.path;
    const pathAndQuery = upstreamPath + ctx.search;
    const headers = prepareRequestHeaders(req, ctx, this.deps.identity.instance);
    route.auth?.stripCredentials(headers);
    const method = req.method;
    const outcome = await dispatch(upstream, route, ctx, isIdempotentMethod(method), (endpoint, timeoutMs) =>
      forwardHttp(endpoint, method, pathAndQuery, headers, body, timeoutMs),
    );
    switch (outcome.kind) {
      case "no-endpoint":
        return noEndpointProblem(upstream.name, outcome, ctx.id);
      case "response": {
        ctx.servedBy = outcome.response.headers.get("x-served-by") ?? undefined;
        const maxBytes = limits.maxResponseBytes;
        const limited = limitResponseSize(outcome.response, maxBytes);
        if (!limited.ok)
          return gatewayProblem(
            502,
            "Upstream response too large",
            ctx.id,
            `${upstream.name} answered with ${limited.declared} bytes; the limit is ${maxBytes}`,
            { upstream: upstream.name },
          );
        return limited.response;
      }
      case "timeout":
        return gatewayProblem(
          504,
          "Upstream timed out",
          ctx.id,
          `${upstream.name} did not answer within ${route.timeoutMs} ms`,
          { upstream: upstream.name },
        );
      case "connect-error":
      case "error":
        return gatewayProblem(
          502,
          "Upstream unavailable",
          ctx.id,
          `${upstream.name} (${ctx.endpoint}): ${outcome.error.message}`,
          { upstream: upstream.name },
        );
    }
  }

  async #transcodeGrpc(
    req: Request,
    ctx: RequestContext,
    route: RouteConfig,
    upstream: Upstream,
    body: Uint8Array | null,
    limits: GatewayConfig["limits"],
  ): Promise<Response> {
    const method = route.grpcMethod!;
    let input: unknown = {};
    if (body) {
      if (exceedsJsonDepth(body, limits.maxJsonDepth)) {
        return gatewayProblem(
          400,
          "Invalid request",
          ctx.id,
          `the body is nested deeper than ${limits.maxJsonDepth} levels`,
          { errors: [{ field: "(body)", message: `nested deeper than ${limits.maxJsonDepth} levels` }] },
        );
      }
      let text: string;
      try {
        text = utf8.decode(body);
      } catch {
        return gatewayProblem(400, "Invalid request body", ctx.id, "the body is not valid UTF-8");
      }
      try {
        input = JSON.parse(text);
      } catch (err) {
        return gatewayProblem(400, "Invalid JSON", ctx.id, (err as Error).message);
      }
    }
    const errors = checkMessage(method.requestType, input, {
      maxDepth: limits.maxJsonDepth,
      maxStringLength: limits.maxJsonStringLength,
    });
    if (errors.length > 0) {
      return gatewayProblem(
        400,
        "Invalid request",
        ctx.id,
        `the body does not match ${method.requestType.fullName.slice(1)}: ${errors.map((e) => `${e.field} ${e.message}`).join("; ")}`,
        { errors },
      );
    }
    const metadata = new grpc.Metadata();
    metadata.set("x-request-id", ctx.id);
    metadata.set("x-forwarded-for", ctx.clientIp);
    const userAgent = req.headers.get("user-agent");
    if (userAgent) metadata.set("x-forwarded-user-agent", userAgent);
    route.auth?.copyClaimHeaders(req.headers, metadata);
    const outcome = await dispatch(upstream, route, ctx, route.grpc?.idempotent === true, (endpoint, timeoutMs) =>
      callUnary(endpoint, method, input as object, metadata, timeoutMs),
    );
    if (outcome.kind === "no-endpoint") return noEndpointProblem(upstream.name, outcome, ctx.id);
    ctx.servedBy = outcome.servedBy;
    // The replica's identity travels back as headers, as an HTTP upstream's would.
    const servedBy: Record<string, string> = {
      ...(outcome.servedBy ? { "x-served-by": outcome.servedBy } : {}),
      ...(outcome.serviceVersion ? { "x-service-version": outcome.serviceVersion } : {}),
    };
    if (outcome.kind === "reply")
      return new Response(JSON.stringify(outcome.reply), { status: 200, headers: { ...JSON_HEADERS, ...servedBy } });
    const status = httpStatusFromGrpc(outcome.code);
    const retryAfter: Record<string, string> = status === 503 ? { "retry-after": "1" } : {};
    // The body carries both the problem+json members and grpc-gateway's {code, message, details}.
    return gatewayProblem(
      status,
      grpcCodeName(outcome.code),
      ctx.id,
      outcome.details,
      { code: outcome.code, message: outcome.details, details: [], upstream: upstream.name },
      { ...servedBy, ...retryAfter },
    );
  }

  #accessLog(ctx: RequestContext, status: number): void {
    this.deps.log.info(
      {
        request_id: ctx.id,
        method: ctx.method,
        path: ctx.path,
        route: ctx.route?.name,
        status,
        duration_ms: Math.round((performance.now() - ctx.start) * 1000) / 1000,
        upstream: ctx.route?.upstream,
        endpoint: ctx.endpoint,
        served_by: ctx.servedBy,
        client_ip: ctx.clientIp,
      },
      "request",
    );
  }
}

/** One log line per endpoint state change: what an operator reads when traffic moves. */
function logUpstreamEvent(log: Logger, event: UpstreamEvent): void {
  const base = { upstream: event.upstream };
  switch (event.type) {
    case "ejected":
      return log.warn({ ...base, endpoint: event.endpoint.address, ejection_ms: event.durationMs }, "endpoint ejected");
    case "readmitted":
      return log.info({ ...base, endpoint: event.endpoint.address, reason: event.reason }, "endpoint readmitted");
    case "breaker":
      return log[event.state === "closed" ? "info" : "warn"](
        { ...base, endpoint: event.endpoint.address, state: event.state },
        "circuit breaker",
      );
    case "health":
      return log.info({ ...base, endpoint: event.endpoint.address, health: event.health }, "endpoint health changed");
    case "endpoints":
      return log.info({ ...base, added: event.added, removed: event.removed }, "endpoints discovered");
    case "resolve-failed":
      return log.warn({ ...base, host: event.host, error: event.error }, "endpoint discovery failed");
  }
}

function rewrite(path: string, prefix: string, replacement: string): string {
  const rest = path.slice(prefix === "/" ? 0 : prefix.length);
  if (replacement === "/") return rest.startsWith("/") ? rest : `/${rest}`;
  return replacement + rest;
}
