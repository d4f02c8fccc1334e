/**
 * webapp with TLS, as real processes: HTTPS only on PORT with mutual TLS, the probes and /metrics
 * in plain HTTP on METRICS_PORT, a renewed certificate taken into use under load without a failed
 * request, a half-written renewal ignored, and bad files stopping the start with their name.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:tls";
import { readTcpMigrateReq } from "../../scripts/stack/listener-handover.ts";
import { replaceFile } from "../../scripts/stack/testing/files.ts";
import { freePorts } from "../../scripts/stack/testing/ports.ts";
import {
  type Spawned,
  spawnService,
  stopAll,
  stopProcess,
  waitFor,
  waitForHttp,
} from "../../scripts/stack/testing/processes.ts";
import {
  type CertificateAuthority,
  createCa,
  ensureLocalPki,
  issue,
  type LocalPki,
  loadCa,
  localIdentities,
} from "../../scripts/tls/pki.ts";

const RELOAD_MS = 200;
const E2E_TIMEOUT_MS = 60_000;
const DAY_MS = 86_400_000;
const dir = mkdtempSync(join(tmpdir(), "webapp-tls-"));
/** The files the webapp serves (copies, so the tests can renew them). */
const served = { cert: join(dir, "served", "webapp.crt"), key: join(dir, "served", "webapp.key") };

let pki: LocalPki;
let ca: CertificateAuthority;
/** What the gateway presents to webapp: trusts the local CA, with its client certificate. */
let gatewayTls: { ca: string; cert: string; key: string };
let webapp: Spawned;
let url: string;
let port: number;
let statusUrl: string;

const read = (path: string) => readFileSync(path, "utf8");
const fingerprintOf = (pem: string) => new X509Certificate(pem).fingerprint256;
const tlsWarnings = () => webapp.lines.filter((l) => l.includes("tls files changed but cannot be used yet"));

/** The certificate a new handshake with the webapp presents (its SHA-256 fingerprint). */
function presented(): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port, servername: "localhost", ...gatewayTls }, () => {
      const { fingerprint256 } = socket.getPeerCertificate();
      socket.destroy();
      resolve(fingerprint256);
    });
    socket.once("error", reject);
  });
}

const reloads = () => webapp.lines.filter((l) => l.includes('"msg":"tls certificate reloaded"'));

/**
 * Waits for the `n`th reload: logged once the replaced listener has closed, so from then on every
 * new handshake presents the new certificate.
 */
const waitForReload = (n: number) =>
  waitFor(`reload ${n} to be logged`, () => reloads().length >= n, { proc: webapp, timeoutMs: 20_000 });

async function expectPresented(pem: string, handshakes = 10): Promise<void> {
  for (let i = 0; i < handshakes; i++) expect(await presented()).toBe(fingerprintOf(pem));
}

const webappLeaf = () => issue(ca, localIdentities().webapp!);

function startTlsWebapp(env: Record<string, string | undefined>, name: string): Spawned {
  return spawnService(
    "webapp",
    {
      HOST: "127.0.0.1",
      DB_PATH: ":memory:",
      TLS_CERT_FILE: served.cert,
      TLS_KEY_FILE: served.key,
      TLS_CLIENT_CA_FILE: pki.caFile,
      TLS_RELOAD_INTERVAL_MS: String(RELOAD_MS),
      INSTANCE_ID: name,
      ...env,
    },
    name,
  );
}

/** The value of `name`'s series whose labels include `certificate` (the server certificate's by default). */
async function metricValue(name: string, certificate = "server"): Promise<number> {
  const text = await (await fetch(`${statusUrl}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(`certificate="${certificate}"`));
  if (!line) throw new Error(`${name}{certificate="${certificate}"} is not on /metrics`);
  return Number(line.split(" ").at(-1));
}

beforeAll(async () => {
  pki = await ensureLocalPki(join(dir, "pki"));
  ca = await loadCa(read(pki.caFile), read(join(pki.dir, "ca.key")));
  gatewayTls = {
    ca: read(pki.caFile),
    cert: read(pki.certFile("gateway-client")),
    key: read(pki.keyFile("gateway-client")),
  };
  mkdirSync(join(dir, "served"));
  copyFileSync(pki.certFile("webapp"), served.cert);
  copyFileSync(pki.keyFile("webapp"), served.key);
  const [appPort, metricsPort] = await freePorts(2);
  port = appPort!;
  url = `https://127.0.0.1:${port}`;
  statusUrl = `http://127.0.0.1:${metricsPort}`;
  webapp = startTlsWebapp({ PORT: String(port), METRICS_PORT: String(metricsPort) }, "webapp-tls");
  await waitForHttp(`${statusUrl}/readyz`, webapp);
}, E2E_TIMEOUT_MS);

afterAll(async () => {
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
});

describe("webapp over mutual TLS", () => {
  test("the gateway's client certificate gets 201 on POST /projects and 200 on GET over HTTPS", async () => {
    const created = await fetch(`${url}/projects/`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ title: "Over TLS" }),
      tls: gatewayTls,
    });
    expect(created.status).toBe(201);
    const project = (await created.json()) as { id: number };
    const readBack = await fetch(`${url}/projects/${project.id}`, { tls: gatewayTls });
    expect(readBack.status).toBe(200);
    expect(await readBack.json()).toEqual(project);
    expect(readBack.headers.get("x-served-by")).toBe("webapp-tls");
    const line = webapp.lines.find((l) => l.includes('"msg":"webapp listening"'));
    expect(JSON.parse(line!)).toMatchObject({
      url: `${url}/`,
      metrics: `${statusUrl}/metrics`,
      tls: { subject: "CN=webapp", mutual: true },
    });
  });

  test("a client without a certificate, or with one from another CA, cannot complete the handshake", async () => {
    await expect(fetch(`${url}/projects`, { tls: { ca: gatewayTls.ca } })).rejects.toThrow();
    const otherCa = await createCa("Another CA");
    const stranger = await issue(otherCa, { commonName: "gateway", usage: "client" });
    await expect(
      fetch(`${url}/projects`, { tls: { ca: gatewayTls.ca, cert: stranger.cert, key: stranger.key } }),
    ).rejects.toThrow();
    // The same server still answers a client it trusts.
    expect((await fetch(`${url}/projects`, { tls: gatewayTls })).status).toBe(200);
  });

  test("PORT refuses plain HTTP; METRICS_PORT serves /healthz, /readyz and /metrics in plain HTTP, and 404 for the API", async () => {
    await expect(fetch(`http://127.0.0.1:${port}/healthz`)).rejects.toThrow();
    expect(await (await fetch(`${statusUrl}/healthz`)).json()).toEqual({ status: "ok" });
    expect(await (await fetch(`${statusUrl}/readyz`)).json()).toEqual({ status: "ready" });
    const notAfter = new Date(new X509Certificate(read(served.cert)).validTo).getTime() / 1000;
    expect(await metricValue("tls_certificate_expiry_timestamp_seconds")).toBe(notAfter);
    expect(await metricValue("tls_certificate_reloads_total")).toBe(0);
    // The CA client certificates must come from (TLS_CLIENT_CA_FILE): its expiry, no reloads series.
    const caNotAfter = new Date(new X509Certificate(read(pki.caFile)).validTo).getTime() / 1000;
    expect(await metricValue("tls_certificate_expiry_timestamp_seconds", "client-ca")).toBe(caNotAfter);
    await expect(metricValue("tls_certificate_reloads_total", "client-ca")).rejects.toThrow("is not on /metrics");
    for (const [method, path] of [
      ["GET", "/projects"],
      ["POST", "/projects"],
      ["GET", "/version"],
    ] as const) {
      const res = await fetch(`${statusUrl}${path}`, { method });
      expect(res.status).toBe(404);
      expect(res.headers.get("content-type")).toBe("application/problem+json");
      expect((await res.json()).detail).toContain(`no route for ${method} ${path} on this port`);
    }
  });

  test(
    "a renewed certificate reaches new handshakes without a restart and without one failed request",
    async () => {
      const before = read(served.cert);
      expect(await presented()).toBe(fingerprintOf(before));
      const renewed = await webappLeaf();
      let running = true;
      let ok = 0;
      const failures: string[] = [];
      // Four clients open a connection per request: every request is a new handshake, through the
      // whole handover. Two create projects over keep-alive connections, as the gateway's pool does.
      const loop = async (kind: "new-connection" | "keep-alive") => {
        while (running) {
          try {
            const res =
              kind === "keep-alive"
                ? await fetch(`${url}/projects`, {
                    method: "POST",
                    headers: { "content-type": "application/json" },
                    body: JSON.stringify({ title: "During the handover" }),
                    tls: gatewayTls,
                  })
                : await fetch(`${url}/projects?limit=1`, { keepalive: false, tls: gatewayTls });
            await res.arrayBuffer();
            if (res.status === (kind === "keep-alive" ? 201 : 200)) ok++;
            else failures.push(`${kind}: status ${res.status}`);
          } catch (err) {
            failures.push(`${kind}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
          }
        }
      };
      const loops = [
        ...Array.from({ length: 4 }, () => loop("new-connection")),
        ...Array.from({ length: 4 }, () => loop("keep-alive")),
      ];
      try {
        await waitFor("requests before the renewal", () => ok >= 50, { proc: webapp });
        // The key first, then the certificate: in between, the files do not match.
        replaceFile(served.key, renewed.key);
        replaceFile(served.cert, renewed.cert);
        await waitForReload(1);
        const handedOver = ok;
        await waitFor("requests after the handover", () => ok >= handedOver + 50, { proc: webapp });
      } finally {
        running = false;
        await Promise.all(loops);
      }
      if (readTcpMigrateReq() === false) {
        // Without net.ipv4.tcp_migrate_req, a closing listener resets the connections queued to it
        // (src/tls-listener.ts): only such resets of new connections, in the handshake, are expected.
        expect(failures.filter((f) => f !== "new-connection: ECONNRESET")).toEqual([]);
      } else {
        expect(failures).toEqual([]);
      }
      expect(ok).toBeGreaterThan(100);
      expect(webapp.proc.exitCode).toBeNull();
      await expectPresented(renewed.cert);
      const reloaded = reloads();
      expect(reloaded).toHaveLength(1);
      const notAfter = new Date(new X509Certificate(renewed.cert).validTo);
      expect(JSON.parse(reloaded[0]!).tls).toEqual({ subject: "CN=webapp", notAfter: notAfter.toISOString() });
      expect(await metricValue("tls_certificate_reloads_total")).toBe(1);
      expect(await metricValue("tls_certificate_expiry_timestamp_seconds")).toBe(notAfter.getTime() / 1000);
    },
    E2E_TIMEOUT_MS,
  );

  test(
    "a certificate written without its key is not served, is logged once naming the key, and the current one keeps serving",
    async () => {
      const current = read(served.cert);
      const next = await webappLeaf();
      const warningsBefore = tlsWarnings().length;
      replaceFile(served.cert, next.cert);
      await waitFor("the warning about the half-written renewal", () => tlsWarnings().length > warningsBefore, {
        proc: webapp,
      });
      expect(tlsWarnings().at(-1)).toContain(`private key ${served.key} is not the key of certificate ${served.cert}`);
      // Five more polls see the same unusable pair: no further warning, no change.
      await Bun.sleep(RELOAD_MS * 5);
      expect(tlsWarnings()).toHaveLength(warningsBefore + 1);
      await expectPresented(current, 5);
      expect((await fetch(`${url}/projects?limit=1`, { tls: gatewayTls })).status).toBe(200);

      // The key completes the pair: it is taken into use.
      replaceFile(served.key, next.key);
      await waitForReload(2);
      await expectPresented(next.cert);
      expect((await fetch(`${url}/projects?limit=1`, { tls: gatewayTls })).status).toBe(200);
    },
    E2E_TIMEOUT_MS,
  );

  test(
    "a renewal to an expired certificate is not served: logged once naming the file, the current one keeps serving",
    async () => {
      const current = read(served.cert);
      const expired = await issue(ca, {
        ...localIdentities().webapp!,
        validFrom: new Date(Date.now() - 100 * DAY_MS),
        validDays: 10,
      });
      const warningsBefore = tlsWarnings().length;
      const reloadsBefore = reloads().length;
      replaceFile(served.key, expired.key);
      replaceFile(served.cert, expired.cert);
      const saysExpired = (l: string) => l.includes(`certificate ${served.cert} expired at `);
      const expiredWarnings = () => tlsWarnings().slice(warningsBefore).filter(saysExpired);
      await waitFor("the warning about the expired certificate", () => expiredWarnings().length > 0, {
        proc: webapp,
      });
      await Bun.sleep(RELOAD_MS * 5);
      expect(expiredWarnings()).toHaveLength(1);
      // A poll between the two renames may also have found the new key with the old certificate
      // (a half-written renewal): said once too, and nothing else.
      const others = tlsWarnings()
        .slice(warningsBefore)
        .filter((l) => !saysExpired(l));
      expect(others.length).toBeLessThanOrEqual(1);
      for (const l of others) expect(l).toContain(`is not the key of certificate ${served.cert}`);
      expect(reloads()).toHaveLength(reloadsBefore);
      await expectPresented(current, 5);
      expect((await fetch(`${url}/projects?limit=1`, { tls: gatewayTls })).status).toBe(200);

      // A valid renewal after it is taken in.
      const next = await webappLeaf();
      replaceFile(served.key, next.key);
      replaceFile(served.cert, next.cert);
      await waitForReload(reloadsBefore + 1);
      await expectPresented(next.cert);
    },
    E2E_TIMEOUT_MS,
  );

  test(
    "a second webapp with TLS on the same PORT fails to start, as without TLS",
    async () => {
      const [metricsPort] = await freePorts(1);
      const second = startTlsWebapp({ PORT: String(port), METRICS_PORT: String(metricsPort) }, "webapp-tls-second");
      expect(await second.exited).toBe(1);
      await waitFor("the start-up error line", () => second.lines.some((l) => l.includes(`port ${port} in use`)), {
        timeoutMs: 2000,
      });
      expect((await fetch(`${url}/projects?limit=1`, { tls: gatewayTls })).status).toBe(200);
    },
    E2E_TIMEOUT_MS,
  );

  test(
    "SIGTERM after renewals stops the listener in use and exits 0",
    async () => {
      expect(await stopProcess(webapp, "SIGTERM")).toBe(0);
      await waitFor("the stopped line", () => webapp.lines.some((l) => l.includes('"msg":"stopped"')), {
        timeoutMs: 2000,
      });
      await expect(fetch(`${url}/healthz`, { tls: gatewayTls })).rejects.toThrow();
    },
    E2E_TIMEOUT_MS,
  );
});

describe("start-up", () => {
  /** Starts a webapp with `env` on free ports and expects exit 1 with a line containing `message`. */
  async function expectStartFailure(name: string, env: Record<string, string | undefined>, message: string) {
    const [appPort, metricsPort] = await freePorts(2);
    const proc = startTlsWebapp({ PORT: String(appPort), METRICS_PORT: String(metricsPort), ...env }, name);
    expect(await proc.exited).toBe(1);
    await waitFor(`a line containing ${message}`, () => proc.lines.some((l) => l.includes(message)), {
      timeoutMs: 2000,
    });
  }

  test(
    "TLS_CERT_FILE without TLS_KEY_FILE stops the process with exit 1 naming TLS_KEY_FILE",
    () => expectStartFailure("webapp-no-key", { TLS_KEY_FILE: undefined }, "TLS_KEY_FILE is required"),
    E2E_TIMEOUT_MS,
  );

  test(
    "a missing key file stops the process with exit 1 naming the file",
    () => {
      const missing = join(dir, "nowhere", "webapp.key");
      return expectStartFailure("webapp-missing-key", { TLS_KEY_FILE: missing }, `private key ${missing}: ENOENT`);
    },
    E2E_TIMEOUT_MS,
  );

  test(
    "a key that is not the certificate's stops the process with exit 1 naming both files",
    () => {
      const other = pki.keyFile("gateway-client");
      return expectStartFailure(
        "webapp-wrong-key",
        { TLS_CERT_FILE: pki.certFile("webapp"), TLS_KEY_FILE: other },
        `private key ${other} is not the key of certificate ${pki.certFile("webapp")}`,
      );
    },
    E2E_TIMEOUT_MS,
  );

  test(
    "an expired certificate stops the process with exit 1 naming the file and when it expired",
    async () => {
      const expired = await issue(ca, {
        ...localIdentities().webapp!,
        validFrom: new Date(Date.now() - 100 * DAY_MS),
        validDays: 10,
      });
      mkdirSync(join(dir, "expired"), { recursive: true });
      const cert = join(dir, "expired", "webapp.crt");
      const key = join(dir, "expired", "webapp.key");
      writeFileSync(cert, expired.cert);
      writeFileSync(key, expired.key, { mode: 0o600 });
      const until = new Date(new X509Certificate(expired.cert).validTo).toISOString();
      await expectStartFailure(
        "webapp-expired",
        { TLS_CERT_FILE: cert, TLS_KEY_FILE: key },
        `certificate ${cert} expired at ${until}`,
      );
    },
    E2E_TIMEOUT_MS,
  );

  test(
    "without TLS, PORT serves everything in plain HTTP and nothing listens on METRICS_PORT",
    async () => {
      const [appPort, metricsPort] = await freePorts(2);
      const plain = spawnService(
        "webapp",
        { HOST: "127.0.0.1", PORT: String(appPort), METRICS_PORT: String(metricsPort), DB_PATH: ":memory:" },
        "webapp-plain",
      );
      await waitForHttp(`http://127.0.0.1:${appPort}/readyz`, plain);
      expect((await fetch(`http://127.0.0.1:${appPort}/projects`)).status).toBe(200);
      const metrics = await (await fetch(`http://127.0.0.1:${appPort}/metrics`)).text();
      expect(metrics).not.toContain("tls_certificate");
      await expect(fetch(`http://127.0.0.1:${metricsPort}/healthz`)).rejects.toThrow();
      expect(await stopProcess(plain, "SIGTERM")).toBe(0);
    },
    E2E_TIMEOUT_MS,
  );
});
