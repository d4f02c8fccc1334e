/**
 * The gateway as a TLS client of its upstreams, against real TLS servers on 127.0.0.1 with
 * certificates from the repo's PKI helpers:
 * - a failed handshake says why, on both transports: the TLS error's code and text when the
 *   gateway refuses the upstream's certificate, and that the upstream may have refused the
 *   gateway's client certificate when it closes right after the handshake (it used to read "the
 *   upstream closed the connection before answering" / "connection closed before the upstream's
 *   settings");
 * - a failed health check carries that reason, for the line that marks the endpoint unhealthy;
 * - the client certificate's expiry and reloads are on /metrics, beside the edge certificate's
 *   (`certificate="upstream-client"`): only the edge one used to be.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import http2, { type ServerHttp2Stream } from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Registry } from "prom-client";
import { type CertificateAuthority, createCa, issue } from "../../scripts/tls/pki.ts";
import { GatewayMetrics } from "../src/telemetry/metrics.ts";
import { checkGrpc, checkHttp } from "../src/upstream/health.ts";
import type { Upstream } from "../src/upstream/upstream.ts";
import { testConfig, testUpstream } from "./upstream-harness.ts";

const DAY_MS = 86_400_000;
const dir = mkdtempSync(join(tmpdir(), "portico-tls-upstream-"));
const cleanup: (() => void)[] = [];
afterAll(() => {
  for (const f of cleanup) f();
  rmSync(dir, { recursive: true, force: true });
});

let ca: CertificateAuthority;
let stranger: CertificateAuthority;
const file = (name: string, text: string) => {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
};

beforeAll(async () => {
  ca = await createCa("upstream test CA");
  stranger = await createCa("a CA the upstream does not trust");
  file("ca.crt", ca.cert);
  const client = await issue(ca, { commonName: "gateway", usage: "client" });
  file("client.crt", client.cert);
  file("client.key", client.key);
  const foreign = await issue(stranger, { commonName: "gateway", usage: "client" });
  file("foreign.crt", foreign.cert);
  file("foreign.key", foreign.key);
});

const server = (opts: { validFrom?: Date; validDays?: number } = {}) =>
  issue(ca, { commonName: "upstream", dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"], usage: "server", ...opts });

/** An upstream at `port` whose tls block presents `client` (a pair in `dir`). */
async function upstreamAt(
  port: number,
  protocol: "http" | "grpc",
  client = "client",
  /** null: none (the endpoints' own addresses are the names). */
  serverName: string | null = "localhost",
): Promise<Upstream> {
  const name = serverName === null ? "" : `, serverName: "${serverName}"`;
  const tls = `tls: { ca: ${join(dir, "ca.crt")}, cert: ${join(dir, `${client}.crt`)}, key: ${join(dir, `${client}.key`)}${name} }`;
  const upstream = testUpstream(testConfig({ endpoints: `127.0.0.1:${port}`, protocol, upstream: tls }));
  cleanup.push(() => upstream.close());
  await upstream.ready;
  return upstream;
}

/** A gRPC server over TLS (node:http2) that answers every call SERVING; `mutual`: it requires a client certificate from `ca`. */
async function grpcServer(cert: { cert: string; key: string }, mutual: boolean): Promise<number> {
  const h2 = http2.createSecureServer({
    cert: cert.cert,
    key: cert.key,
    ...(mutual ? { ca: ca.cert, requestCert: true, rejectUnauthorized: true } : {}),
  });
  h2.on("stream", (stream: ServerHttp2Stream) => {
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    // HealthCheckResponse { status: SERVING (1) }
    stream.end(Buffer.from([0, 0, 0, 0, 2, 0x08, 0x01]));
  });
  await new Promise<void>((resolve) => h2.listen(0, "127.0.0.1", resolve));
  cleanup.push(() => h2.close());
  return (h2.address() as { port: number }).port;
}

describe("endpoints written as IP addresses, on gRPC as on HTTP/1.1", () => {
  // An IP cannot be sent as the TLS server name (SNI): node:http2 throws on it, which ended the
  // gateway at its first health check. The certificate is checked against the address instead.
  test("without serverName, each endpoint's own address is the name its certificate must carry", async () => {
    const withIp = await grpcServer(await server(), false);
    expect(await checkGrpc((await upstreamAt(withIp, "grpc", "client", null)).endpoints[0]!, "", 2000)).toEqual({
      passed: true,
    });
    const dnsOnly = await grpcServer(
      await issue(ca, { commonName: "u", dnsNames: ["localhost"], usage: "server" }),
      false,
    );
    const result = await checkGrpc((await upstreamAt(dnsOnly, "grpc", "client", null)).endpoints[0]!, "", 2000);
    expect(result).toEqual({ passed: false, reason: expect.stringContaining("ERR_TLS_CERT_ALTNAME_INVALID") });
  });

  test("a serverName that is an address is checked as one: the certificate must carry that address", async () => {
    const port = await grpcServer(await server(), false);
    expect(await checkGrpc((await upstreamAt(port, "grpc", "client", "127.0.0.1")).endpoints[0]!, "", 2000)).toEqual({
      passed: true,
    });
    const other = await checkGrpc((await upstreamAt(port, "grpc", "client", "10.9.9.9")).endpoints[0]!, "", 2000);
    expect(other).toEqual({ passed: false, reason: expect.stringContaining("ERR_TLS_CERT_ALTNAME_INVALID") });
  });
});

describe("a failed handshake says why", () => {
  test("gRPC: the upstream's expired certificate, with the TLS error's code and text", async () => {
    const expired = await server({ validFrom: new Date(Date.now() - 100 * DAY_MS), validDays: 10 });
    const port = await grpcServer(expired, false);
    const upstream = await upstreamAt(port, "grpc");
    expect(await checkGrpc(upstream.endpoints[0]!, "", 2000)).toEqual({
      passed: false,
      reason: `UNAVAILABLE: cannot connect to 127.0.0.1:${port}: the TLS handshake with the upstream failed: CERT_HAS_EXPIRED certificate has expired`,
    });
  });

  test("gRPC: the upstream refusing the gateway's client certificate", async () => {
    const port = await grpcServer(await server(), true);
    const trusted = await upstreamAt(port, "grpc");
    expect(await checkGrpc(trusted.endpoints[0]!, "", 2000)).toEqual({ passed: true });
    const refused = await upstreamAt(port, "grpc", "foreign");
    const result = await checkGrpc(refused.endpoints[0]!, "", 2000);
    expect(result.passed).toBe(false);
    expect(result.reason).toContain(`cannot connect to 127.0.0.1:${port}: the upstream closed the TLS connection`);
    expect(result.reason).toContain("it may have refused the gateway's client certificate");
  });

  test("HTTP: the upstream refusing the gateway's client certificate, as the health check's reason", async () => {
    const cert = await server();
    const https = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      tls: { cert: cert.cert, key: cert.key, ca: ca.cert, requestCert: true, rejectUnauthorized: true },
      fetch: () => new Response("ready"),
    });
    cleanup.push(() => https.stop(true));
    const trusted = await upstreamAt(https.port!, "http");
    expect(await checkHttp(trusted.endpoints[0]!, "/readyz", 2000)).toEqual({ passed: true });
    const refused = await upstreamAt(https.port!, "http", "foreign");
    const result = await checkHttp(refused.endpoints[0]!, "/readyz", 2000);
    expect(result.passed).toBe(false);
    expect(result.reason).toContain("it may have refused the gateway's client certificate");
  });
});

describe("an HTTPS upstream without mutual TLS that closes without answering", () => {
  test("is not said to have refused a client certificate the gateway never presented", async () => {
    const cert = await server();
    // Reads the request and closes: crashed, restarting, or refusing it.
    const closing = Bun.listen({
      hostname: "127.0.0.1",
      port: 0,
      tls: { cert: cert.cert, key: cert.key },
      socket: {
        data(socket) {
          socket.end();
        },
      },
    });
    cleanup.push(() => closing.stop(true));
    const tls = `tls: { ca: ${join(dir, "ca.crt")}, serverName: localhost }`;
    const upstream = testUpstream(
      testConfig({ endpoints: `127.0.0.1:${closing.port}`, protocol: "http", upstream: tls }),
    );
    cleanup.push(() => upstream.close());
    await upstream.ready;
    const result = await checkHttp(upstream.endpoints[0]!, "/readyz", 2000);
    expect(result.passed).toBe(false);
    expect(result.reason).toBe("the upstream closed the connection before answering");
  });
});

test("the client certificate's expiry and reloads are on /metrics, next to the edge certificate's metric", async () => {
  const https = Bun.serve({ hostname: "127.0.0.1", port: 0, tls: await server(), fetch: () => new Response("ok") });
  cleanup.push(() => https.stop(true));
  const upstream = await upstreamAt(https.port!, "http");
  const metrics = new GatewayMetrics(new Registry());
  // Read at each scrape, as the gateway's upstreams are (a reload replaces them).
  const gateway = { upstreams: new Map([[upstream.name, upstream]]) };
  metrics.watch(gateway);
  const seconds = (pem: string) => new Date(new X509Certificate(pem).validTo).getTime() / 1000;
  const labels = `{certificate="upstream-client",upstream="${upstream.name}"}`;

  const before = await metrics.registry.metrics();
  const first = await Bun.file(join(dir, "client.crt")).text();
  expect(before).toContain(`tls_certificate_expiry_timestamp_seconds${labels} ${seconds(first)}`);
  expect(before).toContain(`tls_certificate_reloads_total${labels} 0`);
  // The CA the upstream is verified by: its expiry, and no reloads series of its own.
  const caLabels = `{certificate="upstream-ca",upstream="${upstream.name}"}`;
  expect(before).toContain(`tls_certificate_expiry_timestamp_seconds${caLabels} ${seconds(ca.cert)}`);
  expect(before).not.toContain(`tls_certificate_reloads_total${caLabels}`);

  // A renewal with a later expiry: the series follows it.
  const renewed = await issue(ca, { commonName: "gateway", usage: "client", validDays: 120 });
  file("client.key", renewed.key);
  file("client.crt", renewed.cert);
  await upstream.tls!.check();
  const after = await metrics.registry.metrics();
  expect(after).toContain(`tls_certificate_expiry_timestamp_seconds${labels} ${seconds(renewed.cert)}`);
  expect(after).toContain(`tls_certificate_reloads_total${labels} 1`);

  // A config reload that rebuilds the upstream: the count goes on from where it was (a counter
  // must not go down in a running process).
  const rebuilt = await upstreamAt(https.port!, "http");
  rebuilt.takeOver(upstream);
  gateway.upstreams = new Map([[rebuilt.name, rebuilt]]);
  expect(await metrics.registry.metrics()).toContain(`tls_certificate_reloads_total${labels} 1`);
});
