/**
 * scripts/tls/pki.ts (`make certs`, `TLS=1 make dev`): what it keeps and what it reissues. It used
 * to keep an edge certificate without the names EDGE_HOSTS asked for, and a certificate whose key
 * file an interrupted run had already replaced — a pair every service then refuses to start with.
 */
import { afterAll, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readTlsMaterial } from "../../lib/tls.ts";
import { createCa, ensureLocalPki, issue, loadCa, localIdentities } from "../tls/pki.ts";

const dir = mkdtempSync(join(tmpdir(), "portico-pki-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const read = (path: string) => readFileSync(path, "utf8");

test("a second run keeps what is good; a certificate without a name EDGE_HOSTS now asks for is reissued", async () => {
  const first = await ensureLocalPki(dir, localIdentities());
  expect(first.issued).toEqual(["ca", "edge", "gateway-client", "webapp", "rpcapp"]);
  const edgeBefore = read(first.certFile("edge"));
  expect((await ensureLocalPki(dir, localIdentities())).issued).toEqual([]);

  const withHost = await ensureLocalPki(dir, localIdentities({ edgeHosts: ["portico.lan"] }));
  expect(withHost.issued).toEqual(["edge"]);
  const edge = new X509Certificate(read(withHost.certFile("edge")));
  expect(edge.subjectAltName).toContain("DNS:portico.lan");
  expect(read(withHost.certFile("edge"))).not.toBe(edgeBefore);
  // The same CA signs it, and the names it already had (IPv6 included) count as present next time.
  expect(edge.checkIssued(new X509Certificate(read(withHost.caFile)))).toBe(true);
  expect((await ensureLocalPki(dir, localIdentities({ edgeHosts: ["PORTICO.lan"] }))).issued).toEqual([]);
});

test("a key file that is not its certificate's (a run interrupted after writing the key) is reissued as a pair", async () => {
  const pki = await ensureLocalPki(dir, localIdentities());
  const ca = await loadCa(read(pki.caFile), read(join(dir, "ca.key")));
  // What an interrupted run leaves: the new key written, the certificate not yet.
  writeFileSync(pki.keyFile("webapp"), (await issue(ca, localIdentities().webapp!)).key);
  expect(() => readTlsMaterial({ cert: pki.certFile("webapp"), key: pki.keyFile("webapp") })).toThrow(
    "is not the key of certificate",
  );

  expect((await ensureLocalPki(dir, localIdentities())).issued).toEqual(["webapp"]);
  expect(readTlsMaterial({ cert: pki.certFile("webapp"), key: pki.keyFile("webapp") }).subject).toBe("CN=webapp");
});

test("a certificate never outlives the CA that signed it", async () => {
  // A CA with 30 days left, a leaf asked for 90: it ends with the CA, and its own expiry says so.
  const ca = await createCa("short-lived CA", 30);
  const leaf = new X509Certificate(
    (await issue(ca, { commonName: "w", dnsNames: ["localhost"], usage: "server" })).cert,
  );
  expect(Date.parse(leaf.validTo)).toBe(Date.parse(new X509Certificate(ca.cert).validTo));
  // One asked for less keeps its own end.
  const short = new X509Certificate((await issue(ca, { commonName: "w", usage: "server", validDays: 10 })).cert);
  expect(Date.parse(short.validTo)).toBeLessThan(Date.parse(leaf.validTo));
});
