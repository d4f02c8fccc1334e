/**
 * Who may use the admin listener when ADMIN_TOKEN is set
 * (docs/security.md, "The admin listener"): every route but /metrics, /healthz and /readyz —
 * which Prometheus and the kubelet call without credentials, and which reveal nothing secret —
 * needs `Authorization: Bearer <token>`. The other gateways send it when they fetch this one's
 * dashboard snapshot.
 *
 * A browser cannot send a bearer token by itself, so the dashboard accepts the token once —
 * typed into a login form (POST /dashboard/login) or given as `/dashboard?token=…` — and answers
 * with a session cookie that the page's own requests carry:
 *
 * - HttpOnly: the page's scripts never see it; SameSite=Strict: no other site's page can make the
 *   browser send it;
 * - Path=/dashboard: cookies are scoped by host, not port, so one set by an admin port on
 *   127.0.0.1 would otherwise also go to the public listener on 127.0.0.1:8080 and from there to
 *   the upstreams; under /dashboard the public routes never see it. The cookie is accepted on
 *   /dashboard/* only, and the page reads the config source at /dashboard/config-source;
 * - its value is an HMAC of a fixed label under the token, not the token: it opens the
 *   dashboard but cannot be replayed as a bearer token, and a new ADMIN_TOKEN voids it;
 * - no Secure flag: the admin listener speaks plain HTTP (reach it by port-forward).
 *
 * Tokens are compared in constant time: both sides are hashed to 32 bytes first, so neither the
 * content nor the length of the token leaks through the comparison's timing.
 */
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { problemResponse } from "../../../lib/problem.ts";

/** Routes anyone who reaches the port may call: scrapes and probes. */
export const OPEN_ADMIN_PATHS: ReadonlySet<string> = new Set(["/metrics", "/healthz", "/readyz"]);
export const SESSION_COOKIE = "portico_admin";
const COOKIE_PATH = "/dashboard";
/** The sign-in form's target: the one admin POST that takes a form, not JSON (lib/request-guard.ts). */
export const LOGIN_PATH = `${COOKIE_PATH}/login`;
const REALM = "portico-admin";
const SESSION_LABEL = "portico admin dashboard session v1";

/** What a request presented. */
export type Credential = "none" | "valid" | "invalid";

export class AdminAuth {
  readonly #tokenDigest: Buffer;
  readonly #session: string;
  readonly #sessionDigest: Buffer;

  constructor(token: string) {
    this.#tokenDigest = sha256(token);
    this.#session = createHmac("sha256", token).update(SESSION_LABEL).digest("base64url");
    this.#sessionDigest = sha256(this.#session);
  }

  /** Whether `token` is the admin token (constant time). */
  isToken(token: string): boolean {
    return timingSafeEqual(sha256(token), this.#tokenDigest);
  }

  /**
   * The answer to a request that may not pass, or undefined when it may: the open routes, a
   * valid bearer token, or on /dashboard/* a valid session cookie. Also handles the dashboard's
   * login (the form, its POST, and `?token=`).
   */
  async gate(request: Request): Promise<Response | undefined> {
    const url = new URL(request.url);
    const path = url.pathname;
    if (OPEN_ADMIN_PATHS.has(path)) return undefined;
    const bearer = this.#bearer(request);
    if (bearer === "valid") return undefined;
    const onDashboard = path === COOKIE_PATH || path.startsWith(`${COOKIE_PATH}/`);
    if (onDashboard && bearer === "none") {
      if (this.#cookie(request) === "valid") return undefined;
      if (path === LOGIN_PATH && request.method === "POST") return this.#login(await formToken(request));
      const given = url.searchParams.get("token");
      if (path === COOKIE_PATH && given !== null) return this.#login(given);
      if (path === COOKIE_PATH && wantsHtml(request)) return loginPage(401);
    }
    return unauthorized(bearer);
  }

  /** A right token opens a session and goes to the dashboard; a wrong one shows the form again. */
  #login(token: string | undefined): Response {
    if (token === undefined || !this.isToken(token)) return loginPage(401, "That is not the admin token.");
    return new Response(null, {
      status: 303,
      headers: {
        // Back to the page without ?token=, so the token does not stay in the address bar.
        location: COOKIE_PATH,
        "set-cookie": `${SESSION_COOKIE}=${this.#session}; Path=${COOKIE_PATH}; HttpOnly; SameSite=Strict`,
        "cache-control": "no-store",
      },
    });
  }

  #bearer(request: Request): Credential {
    const header = request.headers.get("authorization");
    if (header === null) return "none";
    const match = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
    return match && this.isToken(match[1]!) ? "valid" : "invalid";
  }

  #cookie(request: Request): Credential {
    const header = request.headers.get("cookie");
    if (header === null) return "none";
    for (const part of header.split(";")) {
      const [name, ...value] = part.trim().split("=");
      if (name === SESSION_COOKIE)
        return timingSafeEqual(sha256(value.join("=")), this.#sessionDigest) ? "valid" : "invalid";
    }
    return "none";
  }
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

async function formToken(request: Request): Promise<string | undefined> {
  try {
    const value = (await request.formData()).get("token");
    return typeof value === "string" ? value.trim() : undefined;
  } catch {
    return undefined;
  }
}

function wantsHtml(request: Request): boolean {
  return request.method === "GET" && (request.headers.get("accept") ?? "").includes("text/html");
}

/** RFC 6750 §3: a challenge always; `invalid_token` when a token was sent and is wrong. */
function unauthorized(presented: Credential): Response {
  return problemResponse(
    {
      title: "Unauthorized",
      status: 401,
      detail:
        presented === "invalid"
          ? "the bearer token is not this gateway's ADMIN_TOKEN"
          : "the admin API needs `Authorization: Bearer <ADMIN_TOKEN>` (only /metrics, /healthz and /readyz are open); in a browser, open /dashboard and enter the token",
    },
    {
      "www-authenticate":
        presented === "invalid" ? `Bearer realm="${REALM}", error="invalid_token"` : `Bearer realm="${REALM}"`,
    },
  );
}

/** The dashboard's login form: one field, posted to /dashboard/login. */
function loginPage(status: number, error?: string): Response {
  const html = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Portico admin: sign in</title>
<style>body{font:16px system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}input{font:inherit;width:100%;box-sizing:border-box;padding:.4rem;margin:.5rem 0}.error{color:#b00020}</style>
</head>
<body>
<h1>Portico dashboard</h1>
<p>This admin listener needs the gateway's admin token (ADMIN_TOKEN).</p>
${error ? `<p class="error" role="alert">${error}</p>` : ""}
<form method="post" action="${LOGIN_PATH}">
<label for="token">Admin token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Open the dashboard</button>
</form>
</body>
</html>
`;
  return new Response(html, {
    status,
    headers: {
      "content-type": "text/html; charset=utf-8",
      "www-authenticate": `Bearer realm="${REALM}"`,
      "cache-control": "no-store",
    },
  });
}
