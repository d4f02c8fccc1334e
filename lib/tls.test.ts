/**
 * lib/tls.ts: the files a renewal is caught writing are refused, never served — a certificate
 * chain or a CA bundle cut inside a later block used to pass (only the first block was parsed),
 * and rpcapp's gRPC port then dropped every new connection until the next poll. Nor is a
 * certificate outside its validity window: a renewal to an expired one used to replace a working
 * certificate, and every handshake failed from then on.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCa, issue } from "../scripts/tls/pki.ts";
import { caNotAfter, readClientTls, readTlsMaterial, TlsFileError, TlsFileWatcher } from "./tls.ts";

const dir = mkdtempSync(join(tmpdir(), "portico-lib-tls-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const root = await createCa("test root");
const other = await createCa("another root");
const leafA = await issue(root, { commonName: "a.test", dnsNames: ["a.test"], usage: "server" });
const leafB = await issue(root, { commonName: "b.test", dnsNames: ["b.test"], usage: "server" });

let n = 0;
function file(content: string): string {
  const path = join(dir, `f${++n}.pem`);
  writeFileSync(path, content);
  return path;
}

/** `text` cut in the middle of its last PEM block, as a writer caught half-way leaves it. */
const cutInLastBlock = (text: string) => text.slice(0, text.lastIndexOf("-----BEGIN ") + 90);

/** A TlsFileWatcher on fresh copies of leaf A's files, recording the subjects it takes and its errors. */
function watchLeafA() {
  const certPath = file(leafA.cert);
  const keyPath = file(leafA.key);
  const changes: string[] = [];
  const errors: string[] = [];
  const watcher = new TlsFileWatcher(
    { cert: certPath, key: keyPath },
    {
      intervalMs: 60_000,
      onChange: (m) => void changes.push(m.subject),
      onError: (e) => void errors.push(e.message),
    },
  );
  return { certPath, keyPath, changes, errors, watcher };
}

describe("a file caught half-written is refused", () => {
  const chain = `${leafA.cert.trimEnd()}\n${other.cert}`;
  const bundle = `${root.cert.trimEnd()}\n${other.cert}`;

  test("whole files pass: a chain, a CA bundle, a bundle with comments between its certificates", () => {
    expect(readTlsMaterial({ cert: file(chain), key: file(leafA.key), ca: file(bundle) }).subject).toContain("a.test");
    const commented = `# Issuer: test root\n${root.cert}\n# Issuer: another root\n${other.cert}`;
    expect(readClientTls({ ca: file(commented) }).ca).toBe(commented);
  });

  test("a chain cut inside its second certificate", () => {
    expect(() => readTlsMaterial({ cert: file(cutInLastBlock(chain)), key: file(leafA.key) })).toThrow(
      /1 of its 2 PEM blocks are incomplete/,
    );
  });

  test("a CA bundle cut inside its second certificate, or inside its last END line", () => {
    const cut = file(cutInLastBlock(bundle));
    expect(() => readTlsMaterial({ cert: file(leafA.cert), key: file(leafA.key), ca: cut })).toThrow(TlsFileError);
    expect(() => readClientTls({ ca: cut })).toThrow(/incomplete/);
    const endCut = file(bundle.trimEnd().slice(0, -3));
    expect(() => readClientTls({ ca: endCut })).toThrow(/1 of its 2 PEM blocks are incomplete/);
  });

  test("a complete block that is no certificate names which one", () => {
    const broken = `${root.cert.trimEnd()}\n-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n`;
    expect(() => readClientTls({ ca: file(broken) })).toThrow(/certificate 2 does not parse/);
  });

  test("the watcher keeps serving the old pair while the new chain is half-written, then takes it whole", async () => {
    const { certPath, keyPath, changes, errors, watcher } = watchLeafA();
    const renewed = `${leafB.cert.trimEnd()}\n${root.cert}`;
    writeFileSync(keyPath, leafB.key);
    writeFileSync(certPath, cutInLastBlock(renewed));
    await watcher.check();
    expect(changes).toEqual([]);
    expect(watcher.current.subject).toContain("a.test");
    expect(errors).toHaveLength(1);
    writeFileSync(certPath, renewed);
    await watcher.check();
    expect(changes).toHaveLength(1);
    expect(watcher.current.subject).toContain("b.test");
  });

  test("a version the owner cannot put into use (onChange throws) is not taken as current, and is tried again", async () => {
    const certPath = file(leafA.cert);
    const keyPath = file(leafA.key);
    const errors: string[] = [];
    let refuse = true;
    const watcher = new TlsFileWatcher(
      { cert: certPath, key: keyPath },
      {
        intervalMs: 60_000,
        onChange: () => {
          if (refuse) throw new Error("cannot serve it");
        },
        onError: (e) => void errors.push(e.message),
      },
    );
    writeFileSync(keyPath, leafB.key);
    writeFileSync(certPath, leafB.cert);
    await watcher.check();
    await watcher.check();
    expect(watcher.current.subject).toContain("a.test");
    expect(errors).toEqual(["cannot serve it"]);
    refuse = false;
    await watcher.check();
    expect(watcher.current.subject).toContain("b.test");
  });
});

describe("a certificate outside its validity window is refused", () => {
  const DAY = 86_400_000;
  const expired = issue(root, {
    commonName: "expired.test",
    dnsNames: ["expired.test"],
    usage: "server",
    validFrom: new Date(Date.now() - 100 * DAY),
    validDays: 10,
  });
  const notYet = issue(root, {
    commonName: "future.test",
    dnsNames: ["future.test"],
    usage: "client",
    validFrom: new Date(Date.now() + 10 * DAY),
  });

  test("expired, or not valid yet: a TlsFileError naming the file and the date, for a server and a client pair", async () => {
    const old = await expired;
    const certPath = file(old.cert);
    const error = (() => {
      try {
        readTlsMaterial({ cert: certPath, key: file(old.key) });
      } catch (err) {
        return err;
      }
    })();
    expect(error).toBeInstanceOf(TlsFileError);
    const until = new Date(new X509Certificate(old.cert).validTo).toISOString();
    expect((error as Error).message).toBe(
      `certificate ${certPath} expired at ${until}: every TLS handshake with it would fail; renew it (locally: make certs)`,
    );
    const future = await notYet;
    const futurePath = file(future.cert);
    expect(() => readClientTls({ ca: file(root.cert), cert: futurePath, key: file(future.key) })).toThrow(
      `certificate ${futurePath} is not valid before ${new Date(new X509Certificate(future.cert).validFrom).toISOString()}`,
    );
  });

  test("a renewal to an expired certificate keeps the current one and is reported once, however many polls see it", async () => {
    const { certPath, keyPath, changes, errors, watcher } = watchLeafA();
    const old = await expired;
    writeFileSync(keyPath, old.key);
    writeFileSync(certPath, old.cert);
    for (let i = 0; i < 3; i++) await watcher.check();
    expect(changes).toEqual([]);
    expect(watcher.current.subject).toContain("a.test");
    expect(errors).toEqual([expect.stringContaining(`certificate ${certPath} expired at`)]);
  });
});

test("a CA bundle's expiry is its first certificate's to end, as the server and the client material report it", async () => {
  const shortLived = await createCa("short-lived root", 30);
  const validTo = (pem: string) => Date.parse(new X509Certificate(pem).validTo);
  const bundle = `${root.cert.trimEnd()}\n# a comment between the two\n${shortLived.cert}`;
  expect(validTo(shortLived.cert)).toBeLessThan(validTo(root.cert));
  expect(caNotAfter(bundle).getTime()).toBe(validTo(shortLived.cert));
  expect(caNotAfter(root.cert).getTime()).toBe(validTo(root.cert));
  const ca = file(bundle);
  expect(readTlsMaterial({ cert: file(leafA.cert), key: file(leafA.key), ca }).caNotAfter?.getTime()).toBe(
    validTo(shortLived.cert),
  );
  expect(readTlsMaterial({ cert: file(leafA.cert), key: file(leafA.key) }).caNotAfter).toBeUndefined();
  expect(readClientTls({ ca }).caNotAfter.getTime()).toBe(validTo(shortLived.cert));
});
