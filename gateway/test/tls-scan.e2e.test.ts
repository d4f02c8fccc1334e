/**
 * An independent TLS scanner (Debian's sslscan) against the gateway's HTTPS listener: it must
 * report no protocol below TLS 1.2, no cipher suite without forward secrecy or AEAD, and no
 * vulnerability finding (Heartbleed, renegotiation, compression, missing fallback SCSV). The
 * scanner's findings are printed, so the run's log is the report.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePorts } from "../../scripts/stack/testing/ports.ts";
import {
  requireBinary,
  type Spawned,
  spawnService,
  stopAll,
  waitForHttp,
} from "../../scripts/stack/testing/processes.ts";
import { ensureLocalPki } from "../../scripts/tls/pki.ts";

const hasScanner = requireBinary("sslscan");
const dir = mkdtempSync(join(tmpdir(), "gateway-tls-scan-"));
let gateway: Spawned;
let httpsPort: number;

beforeAll(async () => {
  if (!hasScanner) return;
  const pki = await ensureLocalPki(join(dir, "pki"));
  const [port, https, admin, upstream] = await freePorts(4);
  httpsPort = https!;
  const routes = join(dir, "routes.yaml");
  writeFileSync(
    routes,
    `upstreams:
  app:
    protocol: http
    endpoints: 127.0.0.1:${upstream}
routes:
  - name: app
    path: /
    match: prefix
    upstream: app
tls:
  certificates:
    - cert: ${pki.certFile("edge")}
      key: ${pki.keyFile("edge")}
`,
  );
  gateway = spawnService("gateway", {
    HOST: "127.0.0.1",
    PORT: String(port),
    HTTPS_PORT: String(httpsPort),
    ADMIN_PORT: String(admin),
    ROUTES_FILE: routes,
  });
  await waitForHttp(`http://127.0.0.1:${admin}/readyz`, gateway);
}, 30_000);

afterAll(async () => {
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
});

interface Scan {
  protocols: Record<string, boolean>;
  ciphers: { protocol: string; bits: number; cipher: string }[];
  heartbleedVulnerable: string[];
  renegotiation: { supported: boolean; secure: boolean };
  compression: boolean;
}

/** sslscan's XML report, read into what the verdict needs. */
function parseScan(xml: string): Scan {
  const attrs = (tag: string) =>
    [...xml.matchAll(new RegExp(`<${tag}\\s([^>]*)/?>`, "g"))].map((m) =>
      Object.fromEntries([...m[1]!.matchAll(/(\w+)="([^"]*)"/g)].map((a) => [a[1]!, a[2]!])),
    );
  const protocols: Record<string, boolean> = {};
  for (const p of attrs("protocol")) protocols[`${p.type}v${p.version}`] = p.enabled === "1";
  const reneg = attrs("renegotiation")[0] ?? {};
  return {
    protocols,
    ciphers: attrs("cipher").map((c) => ({ protocol: c.sslversion!, bits: Number(c.bits), cipher: c.cipher! })),
    heartbleedVulnerable: attrs("heartbleed")
      .filter((h) => h.vulnerable === "1")
      .map((h) => h.sslversion!),
    renegotiation: { supported: reneg.supported === "1", secure: reneg.secure === "1" },
    compression: attrs("compression").some((c) => c.supported === "1"),
  };
}

/** Forward secrecy (ECDHE/DHE, or TLS 1.3) and an AEAD cipher (GCM, ChaCha20-Poly1305), ≥ 128 bits. */
function isStrong(c: Scan["ciphers"][number]): boolean {
  const aead = /GCM|CHACHA20/.test(c.cipher);
  const forwardSecret = c.protocol === "TLSv1.3" || /^(ECDHE|DHE)-/.test(c.cipher);
  return aead && forwardSecret && c.bits >= 128;
}

test.skipIf(!hasScanner)(
  "sslscan finds only TLS 1.2 and 1.3, strong ciphers and no vulnerability on the HTTPS listener",
  () => {
    const target = `127.0.0.1:${httpsPort}`;
    // The scanner's own report, printed as it wrote it; the XML form of the same scan is checked.
    const report = Bun.spawnSync(["sslscan", "--no-colour", target], { timeout: 60_000 }).stdout.toString();
    console.log(`sslscan ${target} (the gateway's HTTPS listener):\n${report}`);
    const xml = Bun.spawnSync(["sslscan", "--no-colour", "--xml=-", target], { timeout: 60_000 }).stdout.toString();
    expect(xml).toContain("<ssltest");
    const scan = parseScan(xml);
    const weak = scan.ciphers.filter((c) => !isStrong(c));
    expect(scan.protocols).toEqual({
      sslv2: false,
      sslv3: false,
      "tlsv1.0": false,
      "tlsv1.1": false,
      "tlsv1.2": true,
      "tlsv1.3": true,
    });
    expect(scan.ciphers.length).toBeGreaterThan(0);
    expect(weak).toEqual([]);
    expect(scan.heartbleedVulnerable).toEqual([]);
    expect(scan.renegotiation.supported && !scan.renegotiation.secure).toBe(false);
    expect(scan.compression).toBe(false);
    // Only in the text report: a downgrade attempt is refused (RFC 7507).
    expect(report).toContain("Server supports TLS Fallback SCSV");
  },
  90_000,
);
