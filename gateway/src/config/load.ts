/**
 * Loads routes.yaml: parse → interpolate `${VAR:-default}` → validate against the schema →
 * cross-check (routes name real upstreams, gRPC methods exist in their proto) → typed config.
 * Every problem is reported at once, each with file:line:column and the field's path, e.g.
 * `gateway/routes.yaml:14:5 routes[1].methds: unknown field (did you mean "methods"?)`.
 */
import { readFileSync } from "node:fs";
import { isIP } from "node:net";
import { dirname, resolve } from "node:path";
import type { Static, TSchema } from "@sinclair/typebox";
import { Value, type ValueError, ValueErrorType } from "@sinclair/typebox/value";
import { isMap, isSeq, LineCounter, parseDocument, type Document, type Node as YamlNode, visit } from "yaml";
import type protobuf from "protobufjs";
import { parseProtos, ProtoLoadError } from "../../../lib/proto.ts";
import { compileRouteAuth } from "../auth/config.ts";
import type { RouteAuth } from "../auth/guard.ts";
import { type GrpcMethod, resolveMethod } from "../grpc/method.ts";
import { closest } from "../../../lib/suggest.ts";
import { checkCidrs } from "../net/client-ip.ts";
import { normalizePath } from "../routing/path.ts";
import { compilePolicies, type RateLimitSettings, type RouteRateLimit } from "../ratelimit/policy.ts";
import { RateLimitSettingsSchema } from "../ratelimit/schema.ts";
import { fieldOf, interpolateDocument, unquotedReferenceInFlow } from "./interpolate.ts";
import { configFileDir } from "./paths.ts";
import { compileListenerTls, compileUpstreamTls, type ListenerTls, type UpstreamTls } from "./tls.ts";
import { GatewayConfigSchema, HTTP_METHODS, type HttpMethod, type RawGatewayConfig } from "./schema.ts";
import {
  BalancerSchema,
  CanarySchema,
  CircuitBreakerSchema,
  DiscoverySchema,
  HealthCheckSchema,
  LimitsSchema,
  OutlierDetectionSchema,
  RetrySchema,
} from "./schema.ts";

export interface UpstreamConfig {
  name: string;
  protocol: "http" | "grpc";
  /** host:port strings; hosts may be names to resolve. */
  endpoints: string[];
  proto?: string;
  /** Parsed once here so a missing method is a config error, not a runtime 500. */
  protoRoot?: protobuf.Root;
  timeoutMs: number;
  discovery: Required<Static<typeof DiscoverySchema>>;
  balancer: Required<Static<typeof BalancerSchema>>;
  healthCheck: Required<Static<typeof HealthCheckSchema>>;
  outlierDetection: Required<Static<typeof OutlierDetectionSchema>>;
  circuitBreaker: Required<Static<typeof CircuitBreakerSchema>>;
  /** How a canary version is stepped up and judged (canary/controller.ts). */
  canary: CanaryPolicy;
  /** TLS to the endpoints (HTTPS, gRPC over TLS), mutual when a client certificate is given. */
  tls?: UpstreamTls;
}

/** An upstream's canary policy, every key filled in (schema.ts CanarySchema). */
export type CanaryPolicy = Required<Static<typeof CanarySchema>>;

/** A route's retry policy; `perTryTimeoutMs` absent means one try may use the whole route timeout. */
export type RetryConfig = Required<Omit<Static<typeof RetrySchema>, "perTryTimeoutMs">> & { perTryTimeoutMs?: number };

export interface RouteConfig {
  name: string;
  path: string;
  match: "prefix" | "exact";
  methods: readonly HttpMethod[];
  upstream: string;
  timeoutMs: number;
  maxBodyBytes: number;
  retry: RetryConfig;
  http?: { rewritePrefix?: string };
  grpc?: { method: string; idempotent?: boolean };
  /** The resolved gRPC method, for grpc routes. */
  grpcMethod?: GrpcMethod;
  /** Rate-limit policies, compiled; absent on unlimited routes. */
  rateLimit?: RouteRateLimit;
  /** The route's authentication guard (auth/guard.ts); absent on open routes. */
  auth?: RouteAuth;
}

export interface GatewayConfig {
  /** Absolute path of the file this came from. */
  file: string;
  upstreams: Map<string, UpstreamConfig>;
  routes: RouteConfig[];
  limits: Required<Static<typeof LimitsSchema>>;
  trustedProxies: string[];
  rateLimit: RateLimitSettings;
  /** The public HTTPS listener; absent: plain HTTP only. */
  tls?: ListenerTls;
}

export interface ConfigProblem {
  line: number;
  column: number;
  /** Dotted path of the field, e.g. `routes[1].methods`. */
  field: string;
  message: string;
}

export class ConfigError extends Error {
  override name = "ConfigError";
  constructor(
    readonly file: string,
    readonly problems: ConfigProblem[],
  ) {
    super(
      `invalid gateway config ${file}:\n` +
        problems.map((p) => `  ${file}:${p.line}:${p.column} ${p.field || "(top level)"}: ${p.message}`).join("\n"),
    );
  }
}

const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * Reads and validates a config file. Throws ConfigError naming every problem. `env`: what
 * `${VAR}` references read — none unless given (the gateway passes its settings' env).
 */
export function loadConfig(file: string, env: Readonly<Record<string, string | undefined>> = {}): GatewayConfig {
  const { text, dir } = readConfigFile(file);
  return parseConfig(text, file, env, dir);
}

/** A config file's text and folder; an unreadable file is a ConfigError like any other problem. */
export function readConfigFile(file: string): { text: string; dir: string } {
  const absolute = resolve(file);
  try {
    return { text: readFileSync(absolute, "utf8"), dir: dirname(absolute) };
  } catch (err) {
    throw new ConfigError(file, [
      { line: 0, column: 0, field: "", message: `cannot read file: ${(err as Error).message}` },
    ]);
  }
}

/** `[v6]:port` not inside quotes, as a YAML value or list item. */
const UNQUOTED_IPV6_ENDPOINT = /(?:^|[\s,:-])(\[[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*\]:(\d+))/;

/**
 * Validates config text. `file` is only used in messages; `env` is what `${VAR}` references
 * read (none unless given); `baseDir` is the file's own folder: relative paths in it (protos,
 * certificates, key files) are looked up in the working directory first, then there (paths.ts).
 */
export function parseConfig(
  text: string,
  file: string,
  env: Readonly<Record<string, string | undefined>> = {},
  baseDir = process.cwd(),
): GatewayConfig {
  const lines = new LineCounter();
  const doc = parseDocument(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: true });
  const at = (offset: number, field: string, message: string): ConfigProblem => {
    const { line, col } = lines.linePos(offset);
    return { line, column: col, field, message };
  };
  const problems: ConfigProblem[] = doc.errors.map((e) => at(e.pos[0], "", e.message.split("\n")[0] ?? e.message));
  if (problems.length > 0) {
    // A `${…}` in a `{ … }` or `[ … ]` breaks the parse into a cascade of token errors starting at
    // the reference: said first, with the first of them, instead of all.
    const firstIndex = doc.errors.reduce((m, e, i) => (e.pos[0] < doc.errors[m]!.pos[0] ? i : m), 0);
    const first = doc.errors[firstIndex]!.pos[0];
    const reference = unquotedReferenceInFlow(text, first);
    if (reference && first >= reference.offset && first < reference.offset + reference.reference.length)
      throw new ConfigError(file, [
        at(
          reference.offset,
          "",
          `${reference.reference} is inside a flow collection ({ … } or [ … ]), where YAML reads its braces as structure: write that entry in block style (key: ${reference.reference} on a line of its own), or quote it ("${reference.reference}") if the value is text — quoted, it stays a string, never a number or a boolean`,
        ),
        problems[firstIndex]!,
      ]);
    // `endpoints: [::1]:3001` reads as a list ([::1]) and then a stray `:3001`.
    const line = text.split("\n")[lines.linePos(first).line - 1] ?? "";
    const ipv6 = UNQUOTED_IPV6_ENDPOINT.exec(line);
    if (ipv6)
      throw new ConfigError(file, [
        at(
          first,
          "",
          `${ipv6[1]} is an IPv6 endpoint, which YAML reads as a list ([…]) followed by a stray ":${ipv6[2]}": quote it ("${ipv6[1]}")`,
        ),
        ...problems,
      ]);
    throw new ConfigError(file, problems);
  }

  for (const p of interpolateDocument(doc, env)) problems.push(at(p.offset, p.field, p.message));
  if (problems.length > 0) throw new ConfigError(file, problems);

  let raw: unknown;
  try {
    // An alias to no anchor, or one expanding past reason ("billion laughs"), throws here.
    raw = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (err) {
    const alias = firstAlias(doc);
    const message = (err as Error).message;
    const hint = /unresolved/i.test(message)
      ? "YAML aliases: *name must follow an &name anchor"
      : `a file may expand at most ${MAX_ALIAS_COUNT} aliases`;
    throw new ConfigError(file, [at(alias?.offset ?? 0, alias?.field ?? "", `${message} (${hint})`)]);
  }
  if (!Value.Check(GatewayConfigSchema, raw)) {
    for (const error of firstErrorPerPath(unionBranchErrors(Value.Errors(GatewayConfigSchema, raw)))) {
      problems.push(schemaProblem(doc, lines, error));
    }
    throw new ConfigError(file, problems);
  }
  const config = buildConfig(raw, file, baseDir, env, (path, message) => {
    problems.push(at(offsetOf(doc, path), fieldName(path), message));
  });
  if (problems.length > 0) throw new ConfigError(file, problems);
  return config;
}

function buildConfig(
  raw: RawGatewayConfig,
  file: string,
  baseDir: string,
  env: Readonly<Record<string, string | undefined>>,
  report: (path: (string | number)[], message: string) => void,
): GatewayConfig {
  const upstreams = new Map<string, UpstreamConfig>();
  for (const [name, u] of Object.entries(raw.upstreams)) {
    const endpoints = (typeof u.endpoints === "string" ? u.endpoints.split(",") : u.endpoints)
      .map((e) => e.trim())
      .filter(Boolean);
    if (endpoints.length === 0) report(["upstreams", name, "endpoints"], "no endpoints given");
    for (const endpoint of endpoints) {
      const problem = checkHostPort(endpoint);
      if (problem) report(["upstreams", name, "endpoints"], `"${endpoint}": ${problem}`);
    }
    const upstream: UpstreamConfig = {
      name,
      protocol: u.protocol,
      endpoints,
      timeoutMs: u.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      ...resilienceOf(u, (key, message) => report(["upstreams", name, ...key], message)),
    };
    const tls = compileUpstreamTls(u.tls, baseDir, (key, message) =>
      report(["upstreams", name, "tls", ...key], message),
    );
    if (tls) {
      upstream.tls = tls;
      const names = new Set(
        endpoints.map((e) => e.slice(0, e.lastIndexOf(":")).replace(/^\[|\]$/g, "")).filter((h) => isIP(h) === 0),
      );
      if (!tls.serverName && names.size > 1)
        report(
          ["upstreams", name, "tls"],
          `the endpoints name several hosts (${[...names].join(", ")}): set serverName, the name their certificates carry`,
        );
    }
    if (u.protocol === "grpc") {
      if (!u.proto) {
        report(
          ["upstreams", name, "protocol"],
          'a grpc upstream needs "proto": the .proto file that defines its methods',
        );
      } else {
        upstream.proto = u.proto;
        try {
          // From the working directory if the file is there, else the routes file's folder (and
          // the protos embedded in the binary, when neither has it).
          upstream.protoRoot = parseProtos([u.proto], configFileDir(baseDir, u.proto));
        } catch (err) {
          report(["upstreams", name, "proto"], err instanceof ProtoLoadError ? err.message : String(err));
        }
      }
    } else if (u.proto) {
      report(["upstreams", name, "proto"], '"proto" only applies to grpc upstreams');
    }
    upstreams.set(name, upstream);
  }

  const limits = withDefaults(LimitsSchema, raw.limits);
  const names = new Set<string>();
  const paths = new Set<string>();
  const routes: RouteConfig[] = raw.routes.map((r, i) => {
    const where = (key: string) => ["routes", i, key];
    if (names.has(r.name)) report(where("name"), `duplicate route name "${r.name}"`);
    names.add(r.name);
    const match = r.match ?? "prefix";
    const path = r.path.length > 1 ? r.path.replace(/\/+$/, "") : r.path;
    const unmatchable = unmatchablePath(path, r.path);
    if (unmatchable) report(where("path"), unmatchable);
    if (paths.has(`${match} ${path}`)) report(where("path"), `another route already matches ${match} "${path}"`);
    paths.add(`${match} ${path}`);
    const upstream = upstreams.get(r.upstream);
    let grpcMethod: GrpcMethod | undefined;
    if (upstream?.protocol === "grpc" && r.http)
      report(
        ["routes", i, "http"],
        `upstream "${r.upstream}" speaks grpc: http options (rewritePrefix…) do not apply to a gRPC route; remove http`,
      );
    if (!upstream) {
      report(where("upstream"), `no upstream named "${r.upstream}" (known: ${[...upstreams.keys()].join(", ")})`);
    } else if (upstream.protocol === "grpc" && !r.grpc) {
      report(where("upstream"), `upstream "${r.upstream}" speaks grpc: the route needs grpc.method`);
    } else if (upstream.protocol === "http" && r.grpc) {
      report(["routes", i, "grpc"], `upstream "${r.upstream}" speaks http: remove grpc or pick a grpc upstream`);
    } else if (r.grpc && upstream.protoRoot) {
      const [service = "", method = ""] = r.grpc.method.split("/");
      const definition = upstream.protoRoot.lookup(service);
      const rpc = definition && "methods" in definition ? (definition as protobuf.Service).methods[method] : undefined;
      if (!rpc) {
        report(["routes", i, "grpc", "method"], `${r.grpc.method} is not defined in ${upstream.proto}`);
      } else if (rpc.requestStream || rpc.responseStream) {
        report(
          ["routes", i, "grpc", "method"],
          `${r.grpc.method} is a streaming method; only unary methods can be transcoded`,
        );
      } else {
        grpcMethod = resolveMethod(upstream.protoRoot, r.grpc.method);
      }
    }
    const methods = r.methods ?? (r.grpc ? (["POST"] as const) : HTTP_METHODS);
    const perTry = r.retry?.perTryTimeoutMs;
    if (perTry !== undefined && perTry >= (r.timeoutMs ?? upstream?.timeoutMs ?? DEFAULT_TIMEOUT_MS)) {
      report(
        ["routes", i, "retry", "perTryTimeoutMs"],
        `${perTry} is not below the route's timeout: leave it out, or make it shorter so a retry fits`,
      );
    }
    return {
      name: r.name,
      path,
      match,
      methods,
      upstream: r.upstream,
      timeoutMs: r.timeoutMs ?? upstream?.timeoutMs ?? DEFAULT_TIMEOUT_MS,
      maxBodyBytes: r.maxBodyBytes ?? limits.maxBodyBytes,
      retry: withDefaults(RetrySchema, r.retry),
      ...(r.http ? { http: r.http } : {}),
      ...(r.grpc ? { grpc: r.grpc } : {}),
      ...(grpcMethod ? { grpcMethod } : {}),
      ...(r.rateLimit
        ? {
            rateLimit: compilePolicies(r.rateLimit, (at, message) =>
              report(["routes", i, "rateLimit", ...at], message),
            ),
          }
        : {}),
      ...(r.auth
        ? {
            auth: compileRouteAuth(r.auth, { env, baseDir }, (at, message) =>
              report(["routes", i, "auth", ...at], message),
            ),
          }
        : {}),
    };
  });
  const trustedProxies = raw.trustedProxies ?? [];
  for (const { index, message } of checkCidrs(trustedProxies)) report(["trustedProxies", index], message);
  const tls = compileListenerTls(raw.tls, baseDir, (key, message) => report(["tls", ...key], message));
  return {
    file,
    upstreams,
    routes,
    limits,
    trustedProxies,
    rateLimit: withDefaults(RateLimitSettingsSchema, raw.rateLimit),
    ...(tls ? { tls } : {}),
  };
}

/** Fills every unset resilience key from the schema's `default`, so the schema is their one source. */
function withDefaults<S extends TSchema>(schema: S, raw: Static<S> | undefined): Required<Static<S>> {
  return Value.Default(schema, structuredClone(raw ?? {})) as Required<Static<S>>;
}

function resilienceOf(u: RawGatewayConfig["upstreams"][string], report: (key: string[], message: string) => void) {
  const settings = {
    discovery: withDefaults(DiscoverySchema, u.discovery),
    balancer: withDefaults(BalancerSchema, u.balancer),
    healthCheck: withDefaults(HealthCheckSchema, u.healthCheck),
    outlierDetection: withDefaults(OutlierDetectionSchema, u.outlierDetection),
    circuitBreaker: withDefaults(CircuitBreakerSchema, u.circuitBreaker),
    canary: withDefaults(CanarySchema, u.canary) as CanaryPolicy,
  };
  const { healthCheck: h, outlierDetection: o, circuitBreaker: c } = settings;
  if (h.timeoutMs > h.intervalMs)
    report(
      ["healthCheck", "timeoutMs"],
      `${h.timeoutMs} is longer than intervalMs (${h.intervalMs}): checks would overlap`,
    );
  if (o.baseEjectionMs > o.maxEjectionMs)
    report(["outlierDetection", "baseEjectionMs"], `${o.baseEjectionMs} is above maxEjectionMs (${o.maxEjectionMs})`);
  const steps = settings.canary.steps;
  if (steps.some((step, i) => i > 0 && step <= steps[i - 1]!))
    report(["canary", "steps"], `${JSON.stringify(steps)} must rise: each step above the one before`);
  if (c.halfOpenAfterMs > c.maxHalfOpenAfterMs)
    report(
      ["circuitBreaker", "halfOpenAfterMs"],
      `${c.halfOpenAfterMs} is above maxHalfOpenAfterMs (${c.maxHalfOpenAfterMs})`,
    );
  if (u.protocol === "grpc" && u.healthCheck?.path !== undefined)
    report(
      ["healthCheck", "path"],
      "grpc upstreams are checked with grpc.health.v1.Health/Check: use healthCheck.service",
    );
  if (u.protocol === "http" && u.healthCheck?.service !== undefined)
    report(["healthCheck", "service"], "http upstreams are checked with GET healthCheck.path: remove service");
  return settings;
}

function checkHostPort(endpoint: string): string | null {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9._-]+):(\d+)$/.exec(endpoint);
  if (!m) return "expected host:port (a DNS name, an IPv4 address or a [bracketed] IPv6 one)";
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return `port ${port} is out of range 1-65535`;
  return null;
}

/**
 * A value that fails a union (one rate-limit policy or a list of them) is reported as the errors
 * of the branch of its own shape, so a misspelt key inside it is named instead of "expected union".
 */
function* unionBranchErrors(errors: Iterable<ValueError>): Iterable<ValueError> {
  for (const e of errors) {
    const shape = Array.isArray(e.value)
      ? "array"
      : typeof e.value === "object" && e.value !== null
        ? "object"
        : undefined;
    const branch =
      e.type === ValueErrorType.Union && shape
        ? (e.schema.anyOf as TSchema[] | undefined)?.findIndex((s) => s.type === shape)
        : -1;
    if (branch !== undefined && branch >= 0 && e.errors[branch]) yield* unionBranchErrors(e.errors[branch]);
    else yield e;
  }
}

/** TypeBox reports a union failure once per branch; keep the first error per path. */
function firstErrorPerPath(errors: Iterable<ValueError>): ValueError[] {
  const byPath = new Map<string, ValueError>();
  for (const e of errors) if (!byPath.has(e.path)) byPath.set(e.path, e);
  return [...byPath.values()];
}

function schemaProblem(doc: Document, lines: LineCounter, error: ValueError): ConfigProblem {
  const path = error.path
    .split("/")
    .slice(1)
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s.replace(/~1/g, "/").replace(/~0/g, "~")));
  const isUnknownKey = error.type === ValueErrorType.ObjectAdditionalProperties;
  const offset = isUnknownKey ? keyOffset(doc, path) : offsetOf(doc, path);
  const { line, col } = lines.linePos(offset);
  return { line, column: col, field: fieldName(path), message: describe(error, path, isUnknownKey) };
}

function describe(error: ValueError, path: (string | number)[], isUnknownKey: boolean): string {
  if (isUnknownKey) {
    const key = String(path.at(-1));
    const names = parentSchemaPattern(path);
    if (names) return `"${key}" is not a valid name here: names match ${names}`;
    const allowed = Object.keys(parentSchemaProperties(path) ?? {});
    const guess = closest(key, allowed);
    return `unknown field${guess ? ` (did you mean "${guess}"?)` : ""}; allowed: ${allowed.join(", ")}`;
  }
  if (error.type === ValueErrorType.ObjectRequiredProperty) return "required field is missing";
  const schema = error.schema as TSchema & { anyOf?: TSchema[] };
  if (schema.anyOf?.every((s) => s.const !== undefined)) {
    return `must be one of ${schema.anyOf.map((s) => JSON.stringify(s.const)).join(", ")}; got ${shown(error.value)}`;
  }
  const description = typeof schema.description === "string" ? ` (${schema.description})` : "";
  // Only the first letter lowered: the rest may be a pattern, whose case matters.
  const message = error.message.charAt(0).toLowerCase() + error.message.slice(1);
  return `${message}; got ${shown(error.value)}${description}`;
}

/**
 * Why a route's path can never match a request, if it cannot: requests are matched on their
 * normalised path (routing/path.ts) with the query split off, so `/a//b`, `/d/../e`, `/q?x=1` or a
 * path with spaces would answer 404 to every request.
 */
function unmatchablePath(path: string, written: string): string | undefined {
  if (/[?#\s]/.test(path))
    return `"${written}" never matches: a route path has no query, fragment or whitespace (requests are matched without their query)`;
  const normalized = normalizePath(path);
  if (!normalized.ok) return `"${written}" never matches: ${normalized.reason}`;
  if (normalized.path !== path)
    return `"${written}" never matches: requests are matched on their normalised path; write "${normalized.path}"`;
  return undefined;
}

/** Aliases a file may use in all (each counts its expansion): far above any real routes.yaml, far below a "billion laughs". */
const MAX_ALIAS_COUNT = 1_000;

/** A value as an error shows it: JSON, cut to 200 characters; one that contains itself (a cyclic alias) said so. */
function shown(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    return "a value that contains itself (a cyclic YAML alias)";
  }
  return text.length > 200 ? `${text.slice(0, 200)}… (${text.length} characters)` : text;
}

/** The first alias (`*name`) in the document: where an alias problem is reported. */
function firstAlias(doc: Document): { offset: number; field: string } | undefined {
  let found: { offset: number; field: string } | undefined;
  visit(doc, {
    Alias(key, node, ancestors) {
      found = { offset: node.range?.[0] ?? 0, field: fieldOf(key, ancestors) };
      return visit.BREAK;
    },
  });
  return found;
}

/** The key pattern of a map (`patternProperties`, e.g. upstream names) that holds the key at `path`. */
function parentSchemaPattern(path: (string | number)[]): string | undefined {
  const parent = parentSchema(path);
  return parent?.patternProperties ? Object.keys(parent.patternProperties as object)[0] : undefined;
}

/** The `properties` of the object schema that holds the key at `path`. */
function parentSchemaProperties(path: (string | number)[]): Record<string, TSchema> | undefined {
  return parentSchema(path)?.properties as Record<string, TSchema> | undefined;
}

/** The object schema that holds the key at `path`. */
function parentSchema(path: (string | number)[]): TSchema | undefined {
  let schema: TSchema | undefined = GatewayConfigSchema;
  for (const [i, segment] of path.slice(0, -1).entries()) {
    if (!schema) return undefined;
    if (schema.type === "array") schema = schema.items as TSchema;
    else if (schema.patternProperties) schema = Object.values(schema.patternProperties as Record<string, TSchema>)[0];
    else if (schema.properties) schema = (schema.properties as Record<string, TSchema>)[String(segment)];
    else return undefined;
    const shape = typeof path[i + 1] === "number" ? "array" : "object";
    if (schema?.anyOf) schema = (schema.anyOf as TSchema[]).find((s) => s.type === shape) ?? schema;
  }
  return schema;
}

/** Where the value at `path` starts in the source; falls back to the nearest existing parent. */
function offsetOf(doc: Document, path: (string | number)[]): number {
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n), true) as YamlNode | undefined;
    if (node && typeof node === "object" && "range" in node && node.range) return node.range[0];
  }
  return 0;
}

/** Where the key at the end of `path` is written (for unknown keys, point at the key itself). */
function keyOffset(doc: Document, path: (string | number)[]): number {
  const parent = doc.getIn(path.slice(0, -1), true);
  const key = path.at(-1);
  if (isMap(parent)) {
    for (const pair of parent.items) {
      const k = pair.key as YamlNode & { value?: unknown };
      if (k && k.value === key && k.range) return k.range[0];
    }
  }
  if (isSeq(parent) && typeof key === "number") return offsetOf(doc, path);
  return offsetOf(doc, path.slice(0, -1));
}

function fieldName(path: (string | number)[]): string {
  return path.reduce<string>((name, s) => (typeof s === "number" ? `${name}[${s}]` : name ? `${name}.${s}` : s), "");
}
