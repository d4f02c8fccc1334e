/**
 * What stops the gateway at start, or fails `gateway --check`, about TLS — one line saying what is
 * wrong, from the real entry point:
 * - HTTPS_PORT set to PORT: both listeners bound it (SO_REUSEPORT) and about half the connections
 *   of each scheme failed;
 * - an edge or client certificate outside its validity window: it used to be accepted, and every
 *   handshake with it failed.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EnvError } from "../../lib/env.ts";
import { freePorts } from "../../scripts/stack/testing/ports.ts";
import { createCa, issue } from "../../scripts/tls/pki.ts";
import { checkHttpsPort, loadSettings } from "../src/settings.ts";
import { runGateway } from "./run-entry.ts";

const DAY_MS = 86_400_000;
const dir = mkdtempSync(join(tmpdir(), "portico-tls-start-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const gateway = (args: string[], env: Record<string, string>) => runGateway(args, env);

describe("PORT and HTTPS_PORT", () => {
  test("HTTPS_PORT set to PORT stops the start with one line; PORT on HTTPS_PORT's default is left to the tls check", async () => {
    const [port, admin] = await freePorts(2);
    const { code, stderr } = await gateway([], {
      PORT: String(port),
      HTTPS_PORT: String(port),
      ADMIN_PORT: String(admin),
      ROUTES_FILE: "gateway/routes.yaml",
    });
    expect(code).toBe(1);
    expect(stderr.trim()).toBe(
      `gateway: HTTPS_PORT=${port} is PORT too: the HTTPS listener (routes.yaml's tls block) and the plain one would share the port and about half the connections of each would fail; give HTTPS_PORT another port`,
    );
    // Without a tls block HTTPS_PORT is not opened: its default may be PORT.
    expect(loadSettings({ PORT: "8443" }).port).toBe(8443);
    expect(() => checkHttpsPort({ port: 8443, httpsPort: 8443 })).toThrow(EnvError);
    // 0: each listener gets a free port of its own.
    expect(loadSettings({ PORT: "0", HTTPS_PORT: "0" }).httpsPort).toBe(0);
  });
});

describe("certificates outside their validity window", () => {
  let routes: string;
  beforeAll(async () => {
    const ca = await createCa("start test CA");
    const past = { validFrom: new Date(Date.now() - 100 * DAY_MS), validDays: 10 };
    const edge = await issue(ca, { commonName: "edge", dnsNames: ["localhost"], usage: "server", ...past });
    const client = await issue(ca, {
      commonName: "gateway",
      usage: "client",
      validFrom: new Date(Date.now() + DAY_MS),
    });
    for (const [name, text] of Object.entries({
      "ca.crt": ca.cert,
      "edge.crt": edge.cert,
      "edge.key": edge.key,
      "client.crt": client.cert,
      "client.key": client.key,
    }))
      writeFileSync(join(dir, name), text);
    routes = join(dir, "routes.yaml");
    writeFileSync(
      routes,
      [
        "upstreams:",
        "  web:",
        "    protocol: http",
        "    endpoints: 127.0.0.1:1",
        `    tls: { ca: ${dir}/ca.crt, cert: ${dir}/client.crt, key: ${dir}/client.key, serverName: localhost }`,
        "tls:",
        "  certificates:",
        `    - { cert: ${dir}/edge.crt, key: ${dir}/edge.key }`,
        "routes:",
        "  - { name: r, path: /r, upstream: web }",
      ].join("\n"),
    );
  });

  test("gateway --check reports both, at their line", async () => {
    const { code, stderr } = await gateway(["--check", routes], {});
    expect(code).toBe(78);
    expect(stderr).toContain(`${routes}:5:`);
    expect(stderr).toContain(`upstreams.web.tls.cert: certificate ${dir}/client.crt is not valid before `);
    expect(stderr).toContain(`${routes}:8:`);
    expect(stderr).toContain(`tls.certificates[0].cert: certificate ${dir}/edge.crt expired at `);
  });

  test("the gateway does not start with them", async () => {
    const [port, httpsPort, admin] = await freePorts(3);
    const { code, stderr } = await gateway([], {
      PORT: String(port),
      HTTPS_PORT: String(httpsPort),
      ADMIN_PORT: String(admin),
      ROUTES_FILE: routes,
    });
    expect(code).toBe(78);
    expect(stderr).toContain(`certificate ${dir}/edge.crt expired at `);
  });
});

describe("PORT on HTTPS_PORT's default, with a tls block", () => {
  test("the start stops with the same line: the tls block opens HTTPS_PORT (8443 by default)", async () => {
    const ca = await createCa("port test CA");
    const edge = await issue(ca, { commonName: "edge", dnsNames: ["localhost"], usage: "server" });
    writeFileSync(join(dir, "ok-edge.crt"), edge.cert);
    writeFileSync(join(dir, "ok-edge.key"), edge.key);
    const routes = join(dir, "routes-ok.yaml");
    writeFileSync(
      routes,
      [
        "upstreams:",
        "  web: { protocol: http, endpoints: 127.0.0.1:1, healthCheck: { enabled: false } }",
        "tls:",
        "  certificates:",
        `    - { cert: ${dir}/ok-edge.crt, key: ${dir}/ok-edge.key }`,
        "routes:",
        "  - { name: r, path: /r, upstream: web }",
      ].join("\n"),
    );
    const [admin] = await freePorts(1);
    // PORT=8443 and no HTTPS_PORT: nothing binds 8443 here, the check comes first.
    const { code, stderr } = await gateway([], { PORT: "8443", ADMIN_PORT: String(admin), ROUTES_FILE: routes });
    expect(code).toBe(1);
    expect(stderr.trim()).toStartWith("gateway: HTTPS_PORT=8443 is PORT too");
  });
});
