/**
 * The admin listener's authentication, on real gateway processes (admin/auth.ts, settings.ts):
 * with ADMIN_TOKEN every admin route but /metrics, /healthz and /readyz needs the bearer token,
 * the dashboard accepts it once through a login form or ?token= and answers with a session
 * cookie, the replicas send it to each other for the merged dashboard, and the config source
 * shows no secret. Without ADMIN_TOKEN the listener stays on loopback, and a non-loopback
 * ADMIN_HOST is refused at start unless ADMIN_INSECURE=true.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { launchChromium } from "../../scripts/stack/testing/browser.ts";
import { requireBinary, spawnService, stopAll, waitFor, testTempDir } from "../../scripts/stack/testing/processes.ts";
import { startTestStack, type TestStack } from "../../scripts/stack/testing/stack.ts";
import { loadSettings } from "../src/settings.ts";

const TOKEN = "test-admin-token-0123456789abcdef";
const JWT_SECRET = "a-jwt-secret-of-at-least-32-bytes-long!!";
const API_KEY_DIGEST = createHash("sha256").update("the-ci-key").digest("hex");
const OTHER_DIGEST = createHash("sha256").update("a-retired-key").digest("hex");
const DEFAULT_TOKEN = "fallback-token-written-in-the-file";

const ROUTES = `# retired key, kept for the record: ${OTHER_DIGEST}
# the admin token is ${TOKEN} (a careless comment)
upstreams:
  webapp:
    protocol: http
    endpoints: \${WEBAPP_ENDPOINTS}
  rpcapp:
    protocol: grpc
    endpoints: \${RPCAPP_ENDPOINTS}
    proto: proto/userverify.proto
routes:
  - name: projects
    path: /projects
    methods: [GET, POST]
    upstream: webapp
  - name: verify
    path: /verify
    match: exact
    methods: [POST]
    upstream: rpcapp
    grpc: { method: userverify.UserVerify/VerifyUser, idempotent: true }
  - name: private
    path: /private
    methods: [GET]
    upstream: webapp
    http: { rewritePrefix: /projects }
    auth:
      realm: "\${REALM_TOKEN:-${DEFAULT_TOKEN}}"
      jwt:
        secretEnv: ADMIN_TEST_JWT_SECRET
      apiKey:
        keys:
          - name: ci
            sha256: ${API_KEY_DIGEST}
`;

const hasChromium = requireBinary("chromium");
const SECRETS = [TOKEN, JWT_SECRET, API_KEY_DIGEST, OTHER_DIGEST, DEFAULT_TOKEN];

let stack: TestStack;
const admin = (i = 0) => stack.adminUrls()[i]!;
const bearer = { authorization: `Bearer ${TOKEN}` };

beforeAll(async () => {
  const dir = testTempDir("admin-auth");
  writeFileSync(join(dir, "routes.yaml"), ROUTES);
  stack = await startTestStack({
    gatewayReplicas: 2,
    webappReplicas: 1,
    rpcappReplicas: 1,
    routesFile: join(dir, "routes.yaml"),
    env: { ADMIN_TOKEN: TOKEN, ADMIN_TEST_JWT_SECRET: JWT_SECRET, LOG_LEVEL: "warn" },
  });
}, 60_000);

afterAll(async () => {
  await stack?.stop(5_000);
  await stopAll();
});

describe("with ADMIN_TOKEN", () => {
  test("/metrics, /healthz and /readyz stay open: Prometheus and the kubelet send no token", async () => {
    for (const path of ["/metrics", "/healthz", "/readyz"]) {
      const res = await fetch(`${admin()}${path}`);
      expect([path, res.status]).toEqual([path, 200]);
    }
    expect(await (await fetch(`${admin()}/metrics`)).text()).toContain("# TYPE");
  });

  test("every other route, and any unknown path, answers 401 problem+json with a Bearer challenge", async () => {
    for (const path of [
      "/config",
      "/config/source",
      "/upstreams",
      "/version",
      "/dashboard/snapshot.json",
      "/dashboard/events",
      "/dashboard/config-source",
      "/dashboard/assets/dashboard.js",
      "/no-such-path",
    ]) {
      const res = await fetch(`${admin()}${path}`);
      expect([path, res.status, res.headers.get("content-type")]).toEqual([path, 401, "application/problem+json"]);
      expect(res.headers.get("www-authenticate")).toBe('Bearer realm="portico-admin"');
      expect(((await res.json()) as { detail: string }).detail).toContain("Authorization: Bearer");
    }
  });

  test("a wrong token is refused with error=invalid_token; the right one opens every route", async () => {
    const wrong = await fetch(`${admin()}/config`, { headers: { authorization: `Bearer ${TOKEN}x` } });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get("www-authenticate")).toBe('Bearer realm="portico-admin", error="invalid_token"');
    for (const path of ["/config", "/config/source", "/upstreams", "/version", "/dashboard/snapshot.json"]) {
      const res = await fetch(`${admin()}${path}`, { headers: bearer });
      expect([path, res.status]).toEqual([path, 200]);
      await res.arrayBuffer();
    }
  });

  test("/config/source shows the file in force with no key digest, secret or token in it", async () => {
    const text = await (await fetch(`${admin()}/config/source`, { headers: bearer })).text();
    expect(text).toContain("name: private");
    expect(text).toContain("secretEnv: ADMIN_TEST_JWT_SECRET");
    expect(text).toContain('sha256: "<redacted>"');
    expect(text).toContain("${REALM_TOKEN:-<redacted>}");
    for (const secret of SECRETS) expect({ leaked: text.includes(secret) }).toEqual({ leaked: false });
    // The dashboard page's copy is the same text.
    const copy = await fetch(`${admin()}/dashboard/config-source`, { headers: bearer });
    expect(await copy.text()).toBe(text);
  });

  test("each gateway sends the token to its peers: the merged dashboard shows both replicas reachable", async () => {
    const res = await fetch(`${admin()}/dashboard/events`, { headers: bearer });
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    let gateways: { reachable: boolean; error: string | null }[] = [];
    try {
      await waitFor(
        "a dashboard state listing 2 reachable gateways",
        async () => {
          const { value, done } = await reader.read();
          if (done) throw new Error("the event stream ended");
          buffered += decoder.decode(value, { stream: true });
          const states = [...buffered.matchAll(/^data: (.*)$/gm)].map((m) => JSON.parse(m[1]!));
          const last = states.at(-1);
          if (last?.gateways) gateways = last.gateways;
          return gateways.length === 2 && gateways.every((g) => g.reachable);
        },
        { timeoutMs: 10_000 },
      );
    } finally {
      await reader.cancel();
    }
    expect(gateways.map((g) => g.error)).toEqual([null, null]);
  });

  describe("the dashboard in a browser", () => {
    test("without a session, /dashboard shows a login form (401, never the page)", async () => {
      const res = await fetch(`${admin()}/dashboard`, { headers: { accept: "text/html" } });
      expect(res.status).toBe(401);
      const html = await res.text();
      expect(html).toContain('<form method="post" action="/dashboard/login">');
      expect(html).not.toContain("dashboard.js");
    });

    test("a wrong token in the form shows the form again; the right one sets a strict, HttpOnly session cookie", async () => {
      const wrong = await fetch(`${admin()}/dashboard/login`, {
        method: "POST",
        body: new URLSearchParams({ token: "not-the-token" }),
        redirect: "manual",
      });
      expect(wrong.status).toBe(401);
      expect(wrong.headers.get("set-cookie")).toBeNull();
      expect(await wrong.text()).toContain("That is not the admin token.");

      const right = await fetch(`${admin()}/dashboard/login`, {
        method: "POST",
        body: new URLSearchParams({ token: TOKEN }),
        redirect: "manual",
      });
      expect(right.status).toBe(303);
      expect(right.headers.get("location")).toBe("/dashboard");
      const cookie = right.headers.get("set-cookie")!;
      expect(cookie).toMatch(/^portico_admin=[A-Za-z0-9_-]{40,}; Path=\/dashboard; HttpOnly; SameSite=Strict$/);
      // The cookie is not the token: it cannot be replayed as a bearer token.
      expect(cookie).not.toContain(TOKEN);
      const session = cookie.split(";")[0]!;

      const page = await fetch(`${admin()}/dashboard`, { headers: { cookie: session, accept: "text/html" } });
      expect(page.status).toBe(200);
      expect(await page.text()).toContain("dashboard.js");
      for (const path of ["/dashboard/config-source", "/dashboard/snapshot.json", "/dashboard/assets/dashboard.js"]) {
        const res = await fetch(`${admin()}${path}`, { headers: { cookie: session } });
        expect([path, res.status]).toEqual([path, 200]);
        await res.arrayBuffer();
      }
      // Outside /dashboard the cookie opens nothing, and as a bearer token it is refused.
      expect((await fetch(`${admin()}/config`, { headers: { cookie: session } })).status).toBe(401);
      const value = session.split("=")[1]!;
      expect((await fetch(`${admin()}/config`, { headers: { authorization: `Bearer ${value}` } })).status).toBe(401);
      // Another replica with the same token accepts the same session.
      expect((await fetch(`${admin(1)}/dashboard/snapshot.json`, { headers: { cookie: session } })).status).toBe(200);
    });

    // Without Chromium this is skipped (visibly); under CI requireBinary has already failed the file.
    test.skipIf(!hasChromium)(
      "in Chromium: the form's token opens the live page, whose event stream and config source the cookie carries",
      async () => {
        const context = await launchChromium();
        try {
          const page = context.pages()[0] ?? (await context.newPage());
          const pageErrors: string[] = [];
          page.on("pageerror", (err) => pageErrors.push(err.message));
          await page.goto(`${admin()}/dashboard`);
          await page.fill("#token", TOKEN);
          await Promise.all([page.waitForURL(`${admin()}/dashboard`), page.click("button[type=submit]")]);
          // Both replicas' rows: the page's event stream is authorised, and so are the peer fetches.
          await page.waitForSelector('#gateways tr[data-gateway="gateway-2"]', { timeout: 10_000 });
          await page.waitForFunction(
            () => document.querySelector("#config-source code")?.textContent?.includes("name: private"),
            undefined,
            { timeout: 10_000 },
          );
          const source = (await page.textContent("#config-source code")) ?? "";
          for (const secret of SECRETS) expect({ leaked: source.includes(secret) }).toEqual({ leaked: false });
          const cookies = await context.cookies(`${admin()}/dashboard`);
          expect(cookies.map((c) => [c.name, c.path, c.httpOnly, c.sameSite])).toEqual([
            ["portico_admin", "/dashboard", true, "Strict"],
          ]);
          expect(pageErrors).toEqual([]);
        } finally {
          await context.close();
        }
      },
      30_000,
    );

    test("?token= opens a session too and redirects to /dashboard without the token in the address", async () => {
      const res = await fetch(`${admin()}/dashboard?token=${encodeURIComponent(TOKEN)}`, { redirect: "manual" });
      expect(res.status).toBe(303);
      expect(res.headers.get("location")).toBe("/dashboard");
      expect(res.headers.get("set-cookie")).toStartWith("portico_admin=");
      const wrong = await fetch(`${admin()}/dashboard?token=nope`, { redirect: "manual" });
      expect(wrong.status).toBe(401);
      expect(wrong.headers.get("set-cookie")).toBeNull();
    });
  });
});

describe("without ADMIN_TOKEN", () => {
  test("the admin listener defaults to 127.0.0.1, whatever HOST is; with a token it follows HOST", () => {
    expect(loadSettings({ HOST: "0.0.0.0" }).adminHost).toBe("127.0.0.1");
    expect(loadSettings({ HOST: "0.0.0.0", ADMIN_TOKEN: TOKEN }).adminHost).toBe("0.0.0.0");
    expect(loadSettings({ ADMIN_HOST: "::1" }).adminHost).toBe("::1");
  });

  test("a non-loopback ADMIN_HOST is refused unless ADMIN_INSECURE=true; a short token is refused", () => {
    expect(() => loadSettings({ ADMIN_HOST: "0.0.0.0" })).toThrow(/ADMIN_HOST=0\.0\.0\.0 .*without authentication/);
    expect(loadSettings({ ADMIN_HOST: "0.0.0.0", ADMIN_INSECURE: "true" }).adminHost).toBe("0.0.0.0");
    expect(() => loadSettings({ ADMIN_TOKEN: "short" })).toThrow(/at least 16 characters/);
  });

  test("the gateway refuses to start with an unauthenticated admin listener on 0.0.0.0, saying what to do", async () => {
    const gw = spawnService(
      "gateway",
      {
        HOST: "127.0.0.1",
        PORT: String(await freePort()),
        ADMIN_PORT: String(await freePort()),
        ADMIN_HOST: "0.0.0.0",
      },
      "gateway-insecure",
    );
    expect(await gw.exited).toBe(1);
    expect(gw.lines.join("\n")).toContain("Set ADMIN_TOKEN");
  });

  test("on loopback it starts, serves the admin routes without a token, and says once that it is unauthenticated", async () => {
    const adminPort = await freePort();
    const gw = spawnService(
      "gateway",
      {
        HOST: "0.0.0.0",
        PORT: String(await freePort()),
        ADMIN_PORT: String(adminPort),
        ROUTES_FILE: "gateway/routes.yaml",
        LOG_LEVEL: "info",
      },
      "gateway-open",
    );
    await waitFor("the gateway to be ready", () => gw.lines.some((l) => l.includes('"gateway ready"')), {
      proc: gw,
      timeoutMs: 20_000,
    });
    expect((await fetch(`http://127.0.0.1:${adminPort}/config`)).status).toBe(200);
    // Said once, at info: on loopback it is the safe default of `make dev`, not a warning.
    const notices = gw.lines.filter((l) => l.includes("the admin listener has no authentication"));
    expect(notices).toHaveLength(1);
    expect(JSON.parse(notices[0]!)).toMatchObject({ admin_host: "127.0.0.1", level: "info" });
  }, 30_000);
});
