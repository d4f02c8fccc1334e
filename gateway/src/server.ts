/**
 * The gateway's request path, in order:
 *   request context → refuse methods/Host never routed → probes → normalise path → match route →
 *   guards (auth, rate limit, body size, JSON depth) →
 *   the route's transport half — HTTP forward (proxy/route.ts) | gRPC transcode (grpc/route.ts),
 *   each sending its tries through upstream/dispatch.ts — → response headers → access log.
 * Routes themselves come from routes.yaml; this file is the index of what happens to a request.
 */
import type { Server } from "bun";
import { context, trace } from "@opentelemetry/api";
import type { ServiceIdentity } from "../../lib/env.ts";
import { exceedsJsonDepth, isJsonMediaType } from "../../lib/json.ts";
import type { Lifecycle } from "../../lib/lifecycle.ts";
import type { Logger } from "../../lib/log.ts";
import { requestIdOf } from "../../lib/request-id.ts";
import { discardOrphanTracestate } from "../../lib/telemetry/spans.ts";
import type { GatewayConfig, RouteConfig } from "./config/load.ts";
import { sameUpstream } from "./config/reload.ts";
import type { RequestContext, RoutedRequest } from "./context.ts";
import { Canary, type CanaryEvent } from "./canary/controller.ts";
import { forwardedSecure, httpsRedirect } from "./edge/redirect.ts";
import { gatewayProblem } from "./errors.ts";
import { type GrpcRouteDeps, transcodeGrpc } from "./grpc/route.ts";
import { applyHeaderLimit, extendDeadline } from "./limits.ts";
import { TrustedProxies } from "./net/client-ip.ts";
import { readBody } from "./proxy/body.ts";
import { ForgedHeaders, stripHopByHop } from "./proxy/headers.ts";
import { type HttpRouteDeps, proxyHttp } from "./proxy/route.ts";
import { defaultRateLimiter, type RateLimiter, type VerifiedAuth } from "./ratelimit/limiter.ts";
import { normalizePath } from "./routing/path.ts";
import { refuseRequest } from "./routing/request-guard.ts";
import { Router } from "./routing/router.ts";
import { AccessLog } from "./telemetry/access-log.ts";
import { GatewayTelemetry } from "./telemetry/index.ts";
import type { HostResolver } from "./upstream/discovery.ts";
import { logUpstreamEvent } from "./upstream/event-log.ts";
import { Upstream } from "./upstream/upstream.ts";

export interface GatewayDeps {
  identity: ServiceIdentity;
  log: Logger;
  lifecycle: Lifecycle;
  /** Decides rate-limited routes (shared through Redis when configured); in memory when absent. */
  rateLimiter?: RateLimiter;
  /** Spans, metrics and the dashboard's route figures; a bare one (global tracer, nothing counted) when absent. */
  telemetry?: GatewayTelemetry;
  /** How every upstream's discovery resolves names (DNS_SERVER's, settings.ts); the system's when absent. */
  resolver?: HostResolver;
  /** Access-log the /healthz and /readyz probes too (LOG_PROBES). */
  logProbes?: boolean;
  /** Where access lines go (lib/log.ts `bufferedLogger`: written in batches); `log` when absent. */
  accessLog?: Logger;
  /** Canary state changes, for the log and metrics (main.ts). */
  onCanaryEvent?: (upstream: string, event: CanaryEvent) => void;
  /** The HTTPS listener's port (HTTPS_PORT): where `tls.redirectHttp` sends clients unless `tls.redirectPort` says. */
  httpsPort?: number;
}

/** The parts built from one config; swapped as a whole on reload. */
interface GatewayState {
  config: GatewayConfig;
  router: Router<RouteConfig>;
  upstreams: Map<string, Upstream>;
  trustedProxies: TrustedProxies;
  /** Claim headers of every route, and `_` spellings of the gateway's headers: removed from every request. */
  forged: ForgedHeaders;
}

export class Gateway {
  #state: GatewayState;
  /** Upstreams a reload replaced, until they are closed. */
  readonly #retired = new Set<Upstream>();
  /** One canary controller per upstream name: it outlives reloads, which only change its policy. */
  readonly #canaries = new Map<string, Canary>();
  readonly #telemetry: GatewayTelemetry;
  readonly #accessLog: AccessLog;
  /** What the transport halves are handed, made once rather than per request. */
  readonly #routeDeps: GrpcRouteDeps & HttpRouteDeps;
  /**
   * The idle timeout the listeners were started with (limits.idleTimeoutSec at start): Bun.serve
   * keeps it until a restart, so a slow route's deadline is extended against it, not against a
   * reloaded value (which would leave the route cut at the listener's timeout, reported as 499).
   */
  readonly #listenerIdleTimeoutSec: number;
  /** x-gateway and x-gateway-version, the constant part of every answer's stamp (RequestContext.stamp). */
  readonly #identityStamp: readonly [readonly [string, string], readonly [string, string]];

  constructor(
    config: GatewayConfig,
    private readonly deps: GatewayDeps,
  ) {
    this.#telemetry = deps.telemetry ?? new GatewayTelemetry();
    this.#routeDeps = { telemetry: this.#telemetry, instance: deps.identity.instance };
    this.#identityStamp = [
      ["x-gateway", deps.identity.instance],
      ["x-gateway-version", deps.identity.version],
    ];
    this.#accessLog = new AccessLog(deps.accessLog ?? deps.log);
    this.#listenerIdleTimeoutSec = config.limits.idleTimeoutSec;
    this.#state = this.#build(config);
    this.#applyCanaries(this.#state);
  }

  /**
   * The state `config` describes. `current`: the state in service, whose upstreams are kept where
   * their settings did not change; a replaced one hands its last known addresses to its successor.
   * Changes nothing in service (the canaries follow in #applyCanaries, at the swap).
   */
  #build(config: GatewayConfig, current?: GatewayState): GatewayState {
    const { log, resolver } = this.deps;
    const upstreams = new Map<string, Upstream>();
    for (const settings of config.upstreams.values()) {
      const previous = current?.config.upstreams.get(settings.name);
      const inService = current?.upstreams.get(settings.name);
      const kept = previous && sameUpstream(previous, settings) ? inService : undefined;
      upstreams.set(
        settings.name,
        kept ??
          new Upstream(settings, {
            ...(resolver ? { resolver } : {}),
            onEvent: (event) => logUpstreamEvent(log, event),
            log,
            ...(inService ? { knownAddresses: inService.knownAddresses } : {}),
          }),
      );
    }
    return {
      config,
      router: new Router(config.routes),
      upstreams,
      trustedProxies: new TrustedProxies(config.trustedProxies),
      forged: new ForgedHeaders(config.routes.flatMap((route) => route.auth?.claimHeaders ?? [])),
    };
  }

  /**
   * Each upstream of `state` gets the canary controller of its name, with the policy the config
   * gives it; an upstream gone from the config takes its canary along (it would come back with the
   * old state). Run when `state` goes into service: until then the canaries in service, and the
   * admin API over them, stay as they are.
   */
  #applyCanaries(state: GatewayState): void {
    for (const name of this.#canaries.keys()) if (!state.upstreams.has(name)) this.#canaries.delete(name);
    for (const [name, upstream] of state.upstreams) {
      const policy = state.config.upstreams.get(name)!.canary;
      let canary = this.#canaries.get(name);
      if (canary) canary.policy = policy;
      else {
        canary = new Canary(name, policy, (event) => this.deps.onCanaryEvent?.(name, event));
        this.#canaries.set(name, canary);
      }
      upstream.canary = canary;
    }
  }

  /**
   * Puts a reloaded config into service at once; a request already running finishes with the
   * state it started with. Upstreams whose settings did not change are kept, with their
   * endpoints' health, breakers and connections. New ones resolve their names before the swap;
   * the ones they replace are closed once the requests that may still use them have had their
   * time (the longest route timeout). The header limit is process-wide: it follows the new config
   * for connections opened from now on. (idleTimeoutSec is Bun.serve's and needs a restart: a
   * change is logged at warn, and slow routes keep being measured against the listeners' value.)
   */
  async reload(config: GatewayConfig): Promise<void> {
    const previous = this.#state;
    const next = this.#build(config, previous);
    const rebuilt = [...next.upstreams.values()].filter((u) => previous.upstreams.get(u.name) !== u);
    await Promise.all(rebuilt.map((u) => u.ready));
    for (const u of rebuilt) {
      const replaced = previous.upstreams.get(u.name);
      if (replaced) u.takeOver(replaced);
    }
    this.#applyCanaries(next);
    this.#state = next;
    applyHeaderLimit(config.limits.maxHeaderBytes);
    if (
      config.limits.idleTimeoutSec !== previous.config.limits.idleTimeoutSec &&
      config.limits.idleTimeoutSec !== this.#listenerIdleTimeoutSec
    )
      this.deps.log.warn(
        { from: previous.config.limits.idleTimeoutSec, to: config.limits.idleTimeoutSec },
        `limits.idleTimeoutSec changed: the listeners keep ${this.#listenerIdleTimeoutSec} s until the gateway restarts`,
      );
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

  /** The canary controller of an upstream in service (admin API, dashboard, metrics). */
  canary(upstream: string): Canary | undefined {
    return this.#state.upstreams.has(upstream) ? this.#canaries.get(upstream) : undefined;
  }

  /** The largest body any route accepts: Bun's own limit is set just above it. */
  get maxBodyBytes(): number {
    return Math.max(this.#state.config.limits.maxBodyBytes, ...this.#state.config.routes.map((r) => r.maxBodyBytes));
  }

  close(): void {
    for (const upstream of [...this.#state.upstreams.values(), ...this.#retired]) upstream.close();
  }

  /** Bun.serve's fetch handler for the plain public listener (PORT). */
  readonly fetch = (req: Request, server: Server<unknown>): Promise<Response> => this.#serve(req, server, false);

  /** The same for the HTTPS listener (HTTPS_PORT, edge/tls-listener.ts). */
  readonly fetchSecure = (req: Request, server: Server<unknown>): Promise<Response> => this.#serve(req, server, true);

  async #serve(req: Request, server: Server<unknown>, secure: boolean): Promise<Response> {
    const state = this.#state;
    const { url } = req;
    // Without a usable Host (HTTP/1.0, `Host: a/b`) Bun's url is the path alone; for CONNECT, no path.
    const pathStart = url.charCodeAt(0) === 47 ? 0 : url.indexOf("/", url.indexOf("//") + 2);
    const queryStart = pathStart < 0 ? -1 : url.indexOf("?", pathStart);
    const rawPath = pathStart < 0 ? "" : queryStart < 0 ? url.slice(pathStart) : url.slice(pathStart, queryStart);
    const peer = server.requestIP(req)?.address ?? "unknown";
    const {
      clientIp,
      peer: peerIp,
      peerIsTrusted,
    } = state.trustedProxies.resolve(peer, req.headers.get("x-forwarded-for"));
    const id = requestIdOf(req.headers);
    const ctx: RequestContext = {
      id,
      start: performance.now(),
      method: req.method,
      path: rawPath,
      search: queryStart < 0 ? "" : url.slice(queryStart),
      clientIp,
      peer: peerIp,
      peerIsTrusted,
      secure,
      stamp: [["x-request-id", id], this.#identityStamp[0], this.#identityStamp[1]],
      stamped: false,
    };
    // The server span; the request runs in its context, so upstream tries become its children.
    const scope = this.#telemetry.begin(req.headers, ctx.id, req.method, rawPath);
    let response: Response;
    try {
      response = await context.with(scope, this.#handle, undefined, req, ctx, state, server);
    } catch (err) {
      context.with(scope, () => this.deps.log.error({ err, request_id: ctx.id }, "unhandled error in request path"));
      response = gatewayProblem({ status: 500, title: "Internal gateway error", requestId: ctx.id });
    }
    if (!ctx.stamped) for (const [name, value] of ctx.stamp) response.headers.set(name, value);
    // Bun.serve (1.4.5) writes Date on every answer but a HEAD's; RFC 9110 §6.6.1 asks a proxy to
    // add the one an answer lacks, and §9.3.2 a HEAD's fields to be a GET's.
    if (ctx.method === "HEAD" && !response.headers.has("date")) response.headers.set("date", new Date().toUTCString());
    const hsts = secure ? state.config.tls?.hsts : undefined;
    if (hsts) response.headers.set("strict-transport-security", hsts);
    this.deps.lifecycle.closeConnectionWhileDraining(response.headers);
    this.#telemetry.end(scope, ctx, response.status);
    if (!ctx.probe || this.deps.logProbes)
      this.#accessLog.write(ctx, response.status, trace.getSpan(scope)?.spanContext());
    return response;
  }

  /**
   * An arrow made once rather than a method: given the gateway as its `thisArg`, OpenTelemetry's
   * context manager would bind the function anew on every request.
   */
  readonly #handle = async (
    req: Request,
    ctx: RequestContext,
    state: GatewayState,
    server: Server<unknown>,
  ): Promise<Response> => {
    const requestId = ctx.id;
    const refusal = refuseRequest(req.method, req.headers.get("host"));
    if (refusal) return gatewayProblem({ ...refusal, requestId });
    if ((ctx.path === "/healthz" || ctx.path === "/readyz") && req.method !== "GET" && req.method !== "HEAD") {
      ctx.probe = true;
      return methodNotAllowed(req.method, ctx.path, PROBE_METHODS, requestId);
    }
    if (ctx.path === "/healthz") {
      ctx.probe = true;
      return Response.json({ status: "ok" });
    }
    if (ctx.path === "/readyz") {
      ctx.probe = true;
      return this.deps.lifecycle.isReady()
        ? Response.json({ status: "ready" })
        : gatewayProblem({
            status: 503,
            title: "Not ready",
            requestId,
            detail: "the gateway is starting or draining",
          });
    }

    const normalized = normalizePath(ctx.path);
    if (!normalized.ok)
      return gatewayProblem({
        status: normalized.status,
        title: normalized.status === 414 ? "URI too long" : "Bad request path",
        requestId,
        detail: normalized.reason,
      });
    // The query is forwarded as it came: a `#` there (no valid request target has one, RFC 9112
    // §3.2) would reach upstreams that read it differently — one drops the rest, another keeps it
    // in the last parameter's value.
    if (ctx.search.includes("#"))
      return gatewayProblem({
        status: 400,
        title: "Bad request path",
        requestId,
        detail: "fragment (#) in request target",
      });
    const tls = state.config.tls;
    // To the path as the client sent it (checked above), not the normalised one.
    if (tls?.redirectHttp && !ctx.secure && !forwardedSecure(req.headers, ctx))
      return httpsRedirect(req.headers, ctx, tls.redirectPort ?? this.deps.httpsPort ?? 443, requestId);
    ctx.path = normalized.path;

    const match = state.router.match(req.method, ctx.path);
    if (match.kind === "not-found")
      return gatewayProblem({ status: 404, title: "Not found", requestId, detail: `no route for ${ctx.path}` });
    if (match.kind === "method-not-allowed") return methodNotAllowed(req.method, ctx.path, match.allow, requestId);
    const route = match.route;
    ctx.route = route;
    // RFC 9110 gives a body no meaning on GET and HEAD, and Bun reads one without handing it
    // over: refused rather than dropped on the way.
    if ((req.method === "GET" || req.method === "HEAD") && carriesBody(req.headers))
      return gatewayProblem({
        status: 400,
        title: "Bad request",
        requestId,
        detail: `a ${req.method} request cannot carry a body here`,
      });
    // Before the guards, so `Connection: x-auth-subject` cannot remove a header they set.
    stripHopByHop(req.headers);
    state.forged.strip(req.headers);
    discardOrphanTracestate(req.headers);
    let verified: VerifiedAuth | undefined;
    if (route.auth) {
      const auth = await route.auth.check(req.headers);
      if (!auth.ok) return auth.response(requestId);
      if (route.rateLimit) verified = { identity: auth.identity, credentialHeaders: route.auth.credentialHeaders };
    }
    const limit =
      route.rateLimit &&
      (await (this.deps.rateLimiter ?? defaultRateLimiter()).check(
        route.name,
        route.rateLimit,
        ctx.clientIp,
        req.headers,
        verified,
      ));
    if (limit && !limit.allowed) return limit.response(requestId);

    const body = await readBody(req, route.maxBodyBytes);
    if (!body.ok) {
      return body.reason === "too-large"
        ? gatewayProblem({
            status: 413,
            title: "Content too large",
            requestId,
            detail: `the body exceeds ${route.maxBodyBytes} bytes`,
            extensions: { limit: route.maxBodyBytes },
          })
        : gatewayProblem({
            status: 400,
            title: "Incomplete request body",
            requestId,
            detail: "the client closed the connection before the body was complete",
          });
    }
    // Upstreams parse and validate bodies themselves, but deep nesting is where parsers and
    // validators break; a few dozen levels are all any API here needs. A gRPC route's body is
    // always JSON; on HTTP routes other media types pass.
    const { limits } = state.config;
    const isJson = route.grpcMethod !== undefined || isJsonMediaType(req.headers.get("content-type"));
    if (body.bytes && isJson && exceedsJsonDepth(body.bytes, limits.maxJsonDepth))
      return tooDeepProblem(route, requestId, limits.maxJsonDepth);
    extendDeadline(server, req, route.timeoutMs, this.#listenerIdleTimeoutSec);

    // The state's own upstream; if a reload retired it meanwhile (a slow upload outlasted the grace
    // the retired upstreams get), the one in service under its name, should there be one.
    let upstream = state.upstreams.get(route.upstream)!;
    if (upstream.closed) upstream = this.#state.upstreams.get(route.upstream) ?? upstream;
    const routed: RoutedRequest = {
      req,
      ctx,
      route,
      upstream,
      body: body.bytes,
      limits,
    };
    const response = await (route.grpcMethod
      ? transcodeGrpc(routed, this.#routeDeps)
      : proxyHttp(routed, this.#routeDeps));
    limit?.setHeaders(response.headers);
    return response;
  };
}

/** 405 problem+json naming the methods `path` takes, in `Allow` and in the body. */
function methodNotAllowed(method: string, path: string, allow: readonly string[], requestId: string): Response {
  return gatewayProblem({
    status: 405,
    title: "Method not allowed",
    requestId,
    detail: `${method} is not allowed on ${path}`,
    extensions: { allow },
    headers: { allow: allow.join(", ") },
  });
}

/** The methods the public probes answer, as the routes' 405 lists them. */
const PROBE_METHODS = ["GET", "HEAD"];

/** Whether a request declares a body: chunked, or a Content-Length other than 0 (`00` is 0 too). */
function carriesBody(headers: Headers): boolean {
  const length = headers.get("content-length");
  return (length !== null && length !== "0" && !/^0+(?:\s*,\s*0+)*$/.test(length)) || headers.has("transfer-encoding");
}

/** 400 for a JSON body nested deeper than the limit; a gRPC route's also lists the field, as its other 400s do. */
function tooDeepProblem(route: RouteConfig, requestId: string, maxDepth: number): Response {
  if (!route.grpcMethod)
    return gatewayProblem({
      status: 400,
      title: "Invalid request",
      requestId,
      detail: `the JSON body is nested deeper than ${maxDepth} levels`,
    });
  return gatewayProblem({
    status: 400,
    title: "Invalid request",
    requestId,
    detail: `the body is nested deeper than ${maxDepth} levels`,
    extensions: { errors: [{ field: "(body)", message: `nested deeper than ${maxDepth} levels` }] },
  });
}
