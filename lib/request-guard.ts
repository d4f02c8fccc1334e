/**
 * What keeps web pages out of a listener on the operator's machine: the gateway's admin listener
 * (docs/security.md, "The admin listener") and `make dev`'s control port
 * (scripts/stack/control.ts). Told for the admin listener; the control port has no token. A
 * browser on the operator's machine reaches 127.0.0.1:9901 as well as curl does, and without
 * ADMIN_TOKEN (`make dev`) nothing else stands in the way:
 *
 * - CSRF: any site's page can POST there without asking first — a `<form>` (urlencoded,
 *   multipart or `text/plain`, whose one field can spell a JSON object) or a `no-cors` fetch (a
 *   text/plain body, or none). `Content-Type: application/json` is not among the types a page may
 *   send across origins without a CORS preflight, which this listener never grants: every
 *   POST/PUT/PATCH/DELETE must carry it (415 otherwise). The canary routes parse their bodies as
 *   JSON whatever the type said; now the type says so too. The one exception is the dashboard's
 *   sign-in form (auth.ts), a form by nature, which only exists with a token.
 * - A request whose `Origin` is not the listener's own — `http(s)://` and the Host it was sent
 *   to — is refused (403), read or write, token or no token: no page of another origin gets an
 *   answer, and the sign-in form cannot be posted from one.
 * - DNS rebinding: a name of the attacker's that first resolves to its server, then to
 *   127.0.0.1, makes its page same-origin with the listener — Origin and Host both that name.
 *   Without a token the Host must then be `localhost`, an IP address (no name to rebind: a
 *   request to an address came to this listener by that address) or the name the listener was
 *   bound to (ADMIN_HOST); anything else is refused (403, saying why). With ADMIN_TOKEN the
 *   token does that work, and the Host is whatever the cluster calls the pod (Service names,
 *   pod addresses, port-forwards): it is not checked.
 *
 * A request built in the process (`app.handle`, the tests) has no Host header: nothing to check.
 */
import { isIP } from "node:net";
import { mediaType } from "./json.ts";
import { problemResponse } from "./problem.ts";

/** The methods that may change state; GET, HEAD and OPTIONS never do here. */
const STATE_CHANGING_METHODS: ReadonlySet<string> = new Set(["POST", "PUT", "PATCH", "DELETE"]);

export interface OriginGuard {
  /** ADMIN_TOKEN is set: the token, not the Host, keeps pages out. */
  authenticated: boolean;
  /** The address the listener is bound to (ADMIN_HOST), always an acceptable Host. */
  listenerHost?: string | undefined;
  /** How the refusals name the listener and what they advise; the admin listener's by default. */
  wording?: GuardWording;
}

export interface GuardWording {
  /** "admin listener" */
  listener: string;
  /** "the admin API" */
  api: string;
  /** When the Host check applies ("without ADMIN_TOKEN "), or "" when it always does. */
  hostCheckWhen: string;
  /** The setting that names the address it is bound to ("its ADMIN_HOST"). */
  boundName: string;
  /** How to reach it instead, after a refused Host. */
  hostAdvice: string;
}

const ADMIN_WORDING: GuardWording = {
  listener: "admin listener",
  api: "the admin API",
  hostCheckWhen: "without ADMIN_TOKEN ",
  boundName: "its ADMIN_HOST",
  hostAdvice: "Use http://127.0.0.1:<admin port>, or set ADMIN_TOKEN",
};

/** 403 for a request that a page of another origin, or a rebound name, sent; undefined otherwise. */
export function originProblem(request: Request, guard: OriginGuard): Response | undefined {
  const w = guard.wording ?? ADMIN_WORDING;
  const host = request.headers.get("host");
  if (host !== null && !guard.authenticated && !isLocalHost(host, guard.listenerHost))
    return forbidden(
      `Host ${JSON.stringify(host)} is not this ${w.listener}'s: ${w.hostCheckWhen}it answers only requests addressed to localhost, an IP address (127.0.0.1, [::1]…) or ${w.boundName}, so that no web page can reach it through a DNS name of its own that resolves to this machine (DNS rebinding). ${w.hostAdvice}`,
    );
  const origin = request.headers.get("origin");
  if (origin !== null && !isOwnOrigin(origin, host ?? new URL(request.url).host))
    return forbidden(
      `Origin ${JSON.stringify(origin)} is not this ${w.listener}'s own (http://${host ?? new URL(request.url).host}): ${w.api} answers no page of another origin; scripts and curl send no Origin`,
    );
  return undefined;
}

/**
 * 415 for a state-changing request that does not say `Content-Type: application/json`;
 * undefined otherwise. `formPath`: the one path that takes a form (the sign-in form).
 */
export function contentTypeProblem(
  request: Request,
  formPath?: string,
  wording: GuardWording = ADMIN_WORDING,
): Response | undefined {
  if (!STATE_CHANGING_METHODS.has(request.method)) return undefined;
  // Exactly application/json (any case, any parameters), as the 415 says.
  if (mediaType(request.headers.get("content-type")) === "application/json") return undefined;
  if (formPath !== undefined && new URL(request.url).pathname === formPath) return undefined;
  const given = request.headers.get("content-type");
  return problemResponse({
    title: "Unsupported Media Type",
    status: 415,
    detail: `a ${request.method} to ${wording.api} must carry Content-Type: application/json (${given === null ? "none was sent" : `not ${JSON.stringify(given)}`}), with a JSON body or none (e.g. curl -X ${request.method} -H 'Content-Type: application/json' -d '{}'): any web page can send a form, text/plain or no type across sites, never application/json`,
  });
}

/** A Host (`name[:port]`, `[v6]:port`) naming this machine, an address, or the bound name. */
export function isLocalHost(host: string, listenerHost?: string): boolean {
  const name = hostname(host);
  if (name === undefined) return false;
  if (name === "localhost" || isIP(name) !== 0) return true;
  return listenerHost !== undefined && name === listenerHost.replace(/^\[(.*)\]$/, "$1").toLowerCase();
}

/** The hostname of a Host header, lower case, IPv6 without brackets; undefined when it is not one. */
function hostname(host: string): string | undefined {
  try {
    const url = new URL(`http://${host}`);
    // Not a bare host[:port]: userinfo, a path or a query smuggled into the header.
    if (url.username || url.password || url.pathname !== "/" || url.search || url.hash) return undefined;
    return url.hostname.replace(/^\[(.*)\]$/, "$1");
  } catch {
    return undefined;
  }
}

/** Whether `origin` is `http(s)://` and the very host (and port) the request was sent to. */
function isOwnOrigin(origin: string, host: string): boolean {
  try {
    // `null` (a sandboxed or privacy-sensitive context) does not parse: refused as well.
    const from = new URL(origin);
    if (from.protocol !== "http:" && from.protocol !== "https:") return false;
    return from.host === new URL(`http://${host}`).host;
  } catch {
    return false;
  }
}

function forbidden(detail: string): Response {
  return problemResponse({ title: "Forbidden", status: 403, detail });
}
