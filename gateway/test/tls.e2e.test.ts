/**
 * TLS on every hop, as real processes (the stack of `TLS=1 make dev` on free ports): HTTPS at the
 * gateways with two certificates chosen by SNI, HSTS and the plain listener's redirect, mutual TLS
 * from the gateways to webapp (HTTPS) and rpcapp (gRPC over TLS), services that refuse any client
 * without the gateway's certificate, and the edge certificate renewed under load without a failed
 * request. The independent scanner's verdict is in tls-scan.e2e.test.ts.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:tls";
import { parse as parseYaml, stringify as toYaml } from "yaml";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { replaceFile } from "../../scripts/stack/testing/files.ts";
import { freePort } from "../../scripts/stack/testing/ports.ts";
import { requireBinary, waitFor } from "../../scripts/stack/testing/processes.ts";
import { readTcpMigrateReq } from "../../scripts/stack/listener-handover.ts";
import { clusterPrometheusFile } from "../../scripts/monitor.ts";
import { startTestStack, type TestStack } from "../../scripts/stack/testing/stack.ts";
import { createCa, ensureLocalPki, issue, type LocalPki, loadCa, localIdentities } from "../../scripts/tls/pki.ts";

const E2E_TIMEOUT_MS = 60_000;
const hasPromtool = requireBinary("promtool");
const RELOAD_MS = 200;
/** The second certificate's SNI name (the edge certificate is the default). */
const OTHER_NAME = "api.example.test";
/** A proxy in front that terminated TLS itself: trusted for X-Forwarded-*. */
const PROXY_ADDRESS = "127.0.0.2";

const dir = mkdtempSync(join(tmpdir(), "gateway-tls-"));
let pki: LocalPki;
let stack: TestStack;
let https: string;
let httpsPort: number;
let ca: string;

const read = (path: string) => readFileSync(path, "utf8");
const fingerprintOf = (pem: string) => new X509Certificate(pem).fingerprint256;
const json = { "content-type": "application/json" };

/** routes.yaml for the test: the repository's routes, with SNI, HSTS and the redirect switched on. */
function routesFile(): string {
  const base = read("gateway/routes.yaml").replace(/\ntls:\n[\s\S]*?(?=\n\S|$)/, "");
  const file = join(dir, "routes.yaml");
  writeFileSync(
    file,
    `${base}
trustedProxies: ["${PROXY_ADDRESS}"]
tls:
  enabled: \${TLS:-false}
  reloadIntervalMs: ${RELOAD_MS}
  redirectHttp: true
  hsts:
    maxAgeSec: 31536000
    includeSubDomains: true
  certificates:
    - cert: \${TLS_DIR}/edge.crt
      key: \${TLS_DIR}/edge.key
    - cert: \${TLS_DIR}/other.crt
      key: \${TLS_DIR}/other.key
      serverNames: ["${OTHER_NAME}"]
`,
  );
  return file;
}

/** The certificate a new handshake on the HTTPS port presents for `servername` (none: no SNI). */
function presented(servername?: string): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const socket = connect(
      { host: "127.0.0.1", port: httpsPort, rejectUnauthorized: false, ...(servername ? { servername } : {}) },
      () => {
        const cert = socket.getPeerX509Certificate();
        socket.destroy();
        if (cert) resolve(cert);
        else reject(new Error("no certificate presented"));
      },
    );
    socket.once("error", reject);
  });
}

/** curl, trusting only the local CA: the acceptance's own client. */
function curl(args: string[]): { status: string; body: string; version: string } {
  const out = Bun.spawnSync(
    ["curl", "-sS", "--cacert", pki.caFile, "-o", "-", "-w", "\n%{http_code} %{http_version}", ...args],
    { timeout: 10_000 },
  );
  if (out.exitCode !== 0) throw new Error(`curl ${args.join(" ")}: ${out.stderr.toString()}`);
  const text = out.stdout.toString();
  const cut = text.lastIndexOf("\n");
  const [status = "", version = ""] = text.slice(cut + 1).split(" ");
  return { status, version, body: text.slice(0, cut) };
}

beforeAll(async () => {
  pki = await ensureLocalPki(join(dir, "pki"), {
    ...localIdentities(),
    other: { commonName: OTHER_NAME, dnsNames: [OTHER_NAME], usage: "server" },
  });
  ca = read(pki.caFile);
  httpsPort = await freePort();
  stack = await startTestStack({
    gatewayReplicas: 2,
    webappReplicas: 2,
    rpcappReplicas: 2,
    routesFile: routesFile(),
    tls: { dir: pki.dir, httpsPort },
    // The renewal test's eight clients pass the route's 1,000/s per client on a fast machine: a
    // 429 there would be the limit at work, not a failed request.
    env: { PROJECTS_RATE_LIMIT: "100000", PROJECTS_RATE_BURST: "100000" },
  });
  https = stack.gatewayHttpsUrl!;
}, E2E_TIMEOUT_MS);

afterAll(async () => {
  await stack?.stop(5000);
  rmSync(dir, { recursive: true, force: true });
});

describe("TLS at the edge and inside", () => {
  test("the seed requests succeed over HTTPS (curl with the local CA); HTTP/1.1, as Bun serves no HTTP/2", () => {
    const created = curl([
      "-X",
      "POST",
      "-H",
      "Content-type: application/json",
      "-d",
      '{"title":"Over TLS"}',
      `${https}/projects/`,
    ]);
    expect(created.status).toBe("201");
    expect(JSON.parse(created.body)).toMatchObject({ title: "Over TLS", url: "Project-Over TLS" });
    const verified = curl([
      "-X",
      "POST",
      "-H",
      "Content-type: application/json",
      "-d",
      '{"id": 121, "token": "a$$" }',
      `${https}/verify/`,
    ]);
    expect(verified.status).toBe("200");
    expect(JSON.parse(verified.body)).toEqual({ message: "Verified: 121" });
    // Asked for HTTP/2, the handshake offers no ALPN h2 and curl goes on in HTTP/1.1 (docs/security.md).
    const h2 = curl(["--http2", `${https}/projects/`]);
    expect(h2.status).toBe("200");
    expect(h2.version).toBe("1.1");
  });

  test("webapp and rpcapp refuse a client without the gateway's certificate; the gateway gets through", async () => {
    const webapp = stack.processes.find((p) => p.kind === "webapp")!;
    const webappUrl = `https://127.0.0.1:${webapp.env.PORT}/projects`;
    // Trusting the CA is not enough: the handshake needs a client certificate the CA signed.
    await expect(fetch(webappUrl, { tls: { ca } })).rejects.toThrow();
    const stranger = await issue(await createCa("Another CA"), { commonName: "gateway", usage: "client" });
    await expect(fetch(webappUrl, { tls: { ca, cert: stranger.cert, key: stranger.key } })).rejects.toThrow();
    await expect(fetch(`http://127.0.0.1:${webapp.env.PORT}/projects`)).rejects.toThrow();

    const rpcapp = stack.processes.find((p) => p.kind === "rpcapp")!;
    const proto = grpc.loadPackageDefinition(protoLoader.loadSync("proto/userverify.proto")) as unknown as {
      userverify: { UserVerify: grpc.ServiceClientConstructor };
    };
    const call = (credentials: grpc.ChannelCredentials) =>
      new Promise<grpc.ServiceError | null>((resolve) => {
        const client = new proto.userverify.UserVerify(`127.0.0.1:${rpcapp.env.PORT}`, credentials, {
          // The certificate names localhost and 127.0.0.1; grpc-js on Bun checks the override.
          "grpc.ssl_target_name_override": "localhost",
        });
        client.VerifyUser!(
          { id: 121, token: "a$$" },
          { deadline: Date.now() + 3000 },
          (err: grpc.ServiceError | null) => {
            client.close();
            resolve(err);
          },
        );
      });
    const refused = await call(grpc.credentials.createSsl(Buffer.from(ca)));
    expect(refused?.code).toBe(grpc.status.UNAVAILABLE);
    const admitted = await call(
      grpc.credentials.createSsl(
        Buffer.from(ca),
        Buffer.from(read(pki.keyFile("gateway-client"))),
        Buffer.from(read(pki.certFile("gateway-client"))),
      ),
    );
    expect(admitted).toBeNull();
    // Through the gateways, every replica answers (the gateways hold the client certificate).
    const servedBy = new Set<string>();
    for (let i = 0; i < 12; i++) {
      const res = await fetch(`${https}/verify/`, {
        method: "POST",
        headers: json,
        body: '{"id": 121, "token": "a$$" }',
        tls: { ca },
      });
      expect(res.status).toBe(200);
      servedBy.add(res.headers.get("x-served-by") ?? "");
    }
    expect(servedBy.size).toBe(2);
  });

  test("SNI picks each name's certificate; no name, or one nobody lists, gets the first (default)", async () => {
    const edge = fingerprintOf(read(pki.certFile("edge")));
    const other = fingerprintOf(read(pki.certFile("other")));
    expect((await presented(OTHER_NAME)).fingerprint256).toBe(other);
    expect((await presented("localhost")).fingerprint256).toBe(edge);
    expect((await presented("unknown.example.test")).fingerprint256).toBe(edge);
    expect((await presented()).fingerprint256).toBe(edge);
  });

  test("HSTS on HTTPS answers only; the plain port redirects with 308 except the probes and a trusted proxy's HTTPS", async () => {
    const secure = await fetch(`${https}/projects/?limit=1`, { tls: { ca } });
    expect(secure.status).toBe(200);
    expect(secure.headers.get("strict-transport-security")).toBe("max-age=31536000; includeSubDomains");

    const plain = await fetch(`${stack.gatewayUrl}/projects/?limit=1`, {
      method: "POST",
      redirect: "manual",
      headers: { ...json, host: "portico.example:8080" },
      body: "{}",
    });
    expect(plain.status).toBe(308);
    expect(plain.headers.get("location")).toBe(`https://portico.example:${httpsPort}/projects/?limit=1`);
    expect(plain.headers.get("strict-transport-security")).toBeNull();
    expect((await fetch(`${stack.gatewayUrl}/healthz`)).status).toBe(200);
    expect((await fetch(`${stack.gatewayUrl}/readyz`)).status).toBe(200);

    // From the trusted proxy, a request it received over HTTPS is served; over HTTP, redirected.
    const fromProxy = (proto: string) =>
      new Promise<number>((resolve, reject) => {
        const req = httpRequest(
          `${stack.gatewayUrl}/projects/?limit=1`,
          { localAddress: PROXY_ADDRESS, headers: { "x-forwarded-proto": proto, "x-forwarded-for": "203.0.113.9" } },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.once("error", reject);
        req.end();
      });
    expect(await fromProxy("https")).toBe(200);
    expect(await fromProxy("http")).toBe(308);
  });

  test(
    "the edge certificate renewed mid-load: new handshakes get the new one, 0 failed requests",
    async () => {
      const gateways = stack.processes.filter((p) => p.kind === "gateway");
      const reloads = () =>
        gateways.filter((g) =>
          (stack.output.get(g.name) ?? []).some((l) => l.includes('"msg":"tls certificate reloaded"')),
        ).length;
      expect(reloads()).toBe(0);
      const authority = await loadCa(ca, read(join(pki.dir, "ca.key")));
      const renewed = await issue(authority, localIdentities().edge!);
      let running = true;
      let ok = 0;
      const failures: string[] = [];
      // Keep-alive clients, and clients that open a connection (a handshake) per request.
      const loop = async (keepAlive: boolean) => {
        const kind = keepAlive ? "keep-alive" : "new-connection";
        while (running) {
          try {
            const res = await fetch(`${https}/projects/?limit=1`, {
              tls: { ca },
              keepalive: keepAlive,
              ...(keepAlive ? {} : { headers: { connection: "close" } }),
            });
            await res.arrayBuffer();
            if (res.status === 200) ok++;
            else failures.push(`${kind}: status ${res.status}`);
          } catch (err) {
            failures.push(`${kind}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
          }
        }
      };
      const clients = [...Array.from({ length: 4 }, () => loop(true)), ...Array.from({ length: 4 }, () => loop(false))];
      await Bun.sleep(500);
      // Key first, then the certificate, each replaced in one step (as a Secret volume swaps them).
      replaceFile(pki.keyFile("edge"), renewed.key);
      replaceFile(pki.certFile("edge"), renewed.cert);
      await waitFor("every gateway to log the reload", () => reloads() === gateways.length, { timeoutMs: 15_000 });
      await Bun.sleep(300);
      running = false;
      await Promise.all(clients);
      console.log(`edge certificate renewal under load: ${ok} ok, ${failures.length} failed`);
      if (readTcpMigrateReq() === false) {
        // Without net.ipv4.tcp_migrate_req the closing listener resets the connections queued to it
        // (lib/tls-listener.ts): only resets of new connections, in their handshake, are expected.
        expect(failures.filter((f) => f !== "new-connection: ECONNRESET")).toEqual([]);
      } else {
        expect(failures).toEqual([]);
      }
      expect(ok).toBeGreaterThan(100);
      for (let i = 0; i < 10; i++)
        expect((await presented("localhost")).fingerprint256).toBe(fingerprintOf(renewed.cert));
    },
    E2E_TIMEOUT_MS,
  );

  test.skipIf(!hasPromtool)(
    "PorticoCertificateExpiresSoon watches every certificate the stack presents and every CA it verifies by: 60 days on none fires, 88 days on each leaf does, 350 days on the CAs too",
    async () => {
      // What each process exports, labelled as Prometheus's scrape labels it (job, instance).
      const DAY = 86_400;
      const now = Date.now() / 1000;
      const series: { labels: Record<string, string>; remaining: number }[] = [];
      for (const p of stack.processes) {
        const port = p.kind === "gateway" ? p.env.ADMIN_PORT : (p.env.METRICS_PORT ?? p.env.PORT);
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
        for (const [, labelText = "", value = ""] of text.matchAll(
          /^tls_certificate_expiry_timestamp_seconds\{([^}]*)\} (\S+)$/gm,
        )) {
          const labels: Record<string, string> = { job: p.kind, instance: p.name };
          for (const [, k = "", v = ""] of labelText.matchAll(/(\w+)="([^"]*)"/g)) labels[k] = v;
          series.push({ labels, remaining: Number(value) - now });
        }
      }
      const gateways = stack.processes.filter((p) => p.kind === "gateway");
      const described = series.map((s) => `${s.labels.instance} ${s.labels.certificate} ${s.labels.upstream ?? ""}`);
      expect(described.sort()).toEqual(
        [
          ...gateways.flatMap((g) => [
            `${g.name} server `,
            `${g.name} upstream-client rpcapp`,
            `${g.name} upstream-client webapp`,
            `${g.name} upstream-ca rpcapp`,
            `${g.name} upstream-ca webapp`,
          ]),
          ...stack.processes
            .filter((p) => p.kind !== "gateway")
            .flatMap((p) => [`${p.name} server `, `${p.name} client-ca `]),
        ].sort(),
      );
      // make dev's certificates last 90 days, its CA 365.
      const isCa = (s: (typeof series)[number]) => s.labels.certificate!.endsWith("-ca");
      for (const s of series) expect(Math.round(s.remaining / DAY)).toBe(isCa(s) ? 365 : 90);

      const rules = parseYaml(clusterPrometheusFile("alerts.yml")) as {
        groups: { rules: Record<string, unknown>[] }[];
      };
      for (const group of rules.groups) for (const rule of group.rules) delete rule.annotations;
      writeFileSync(join(dir, "alerts.yml"), toYaml(rules));
      const selector = (labels: Record<string, string>) =>
        `tls_certificate_expiry_timestamp_seconds{${Object.entries(labels)
          .map(([k, v]) => `${k}="${v}"`)
          .join(",")}}`;
      // The test's clock starts at 0: each series says when its certificate ends, `days` from then.
      // Evaluated 2 h in: a warning under 21 days left, a critical under 3 (both past their `for`).
      const left = (s: (typeof series)[number], days: number) => s.remaining - days * DAY - 7200;
      const later = (days: number) => ({
        interval: "1m",
        input_series: series.map((s) => ({ series: selector(s.labels), values: `${s.remaining - days * DAY}x180` })),
        alert_rule_test: [
          {
            eval_time: "2h",
            alertname: "PorticoCertificateExpiresSoon",
            exp_alerts: series.flatMap((s) => [
              ...(left(s, days) < 21 * DAY ? [{ exp_labels: { ...s.labels, severity: "warning" } }] : []),
              ...(left(s, days) < 3 * DAY ? [{ exp_labels: { ...s.labels, severity: "critical" } }] : []),
            ]),
          },
        ],
      });
      const frames = [later(60), later(88), later(350)];
      const leaves = series.filter((s) => !isCa(s)).length;
      expect(frames.map((f) => f.alert_rule_test[0]!.exp_alerts.length)).toEqual([
        0,
        2 * leaves,
        2 * leaves + (series.length - leaves),
      ]);
      writeFileSync(
        join(dir, "certificates.test.yml"),
        toYaml({ rule_files: ["alerts.yml"], evaluation_interval: "1m", tests: frames }),
      );
      const proc = Bun.spawn(["promtool", "test", "rules", join(dir, "certificates.test.yml")], {
        stdout: "pipe",
        stderr: "pipe",
        stdin: "ignore",
      });
      const timer = setTimeout(() => proc.kill(), 20_000);
      const output = (await new Response(proc.stdout).text()) + (await new Response(proc.stderr).text());
      clearTimeout(timer);
      const exitCode = await proc.exited;
      expect({ exitCode, output: exitCode === 0 ? "" : output }).toEqual({ exitCode: 0, output: "" });
    },
    E2E_TIMEOUT_MS,
  );

  test(
    "a reload that removes the tls block is refused: HTTPS, HSTS and the redirect stay as they are until a restart",
    async () => {
      const file = join(dir, "routes.yaml");
      const withTls = read(file);
      const admins = stack.processes
        .filter((p) => p.kind === "gateway")
        .map((g) => g.readyUrl.replace(/\/readyz$/, ""));
      type Reload = { reloads: number; lastError: { message: string } | null };
      const reloadOf = async (admin: string) =>
        ((await (await fetch(`${admin}/config`)).json()) as { reload: Reload }).reload;
      const before = await Promise.all(admins.map(reloadOf));
      try {
        replaceFile(file, withTls.replace(/\ntls:\n[\s\S]*$/, "\n"));
        await waitFor(
          "every gateway to refuse the reload",
          async () =>
            (await Promise.all(admins.map(reloadOf))).every((r) =>
              r.lastError?.message.includes("restart the gateway to stop serving HTTPS"),
            ),
          { timeoutMs: 10_000 },
        );
        for (const [i, r] of (await Promise.all(admins.map(reloadOf))).entries())
          expect(r.reloads).toBe(before[i]!.reloads);
        const secure = await fetch(`${https}/projects/?limit=1`, { tls: { ca } });
        expect(secure.status).toBe(200);
        expect(secure.headers.get("strict-transport-security")).toBe("max-age=31536000; includeSubDomains");
        const plain = await fetch(`${stack.gatewayUrl}/projects/?limit=1`, { redirect: "manual" });
        expect(plain.status).toBe(308);
      } finally {
        replaceFile(file, withTls);
      }
    },
    E2E_TIMEOUT_MS,
  );
});
