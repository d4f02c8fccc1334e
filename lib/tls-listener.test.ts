/**
 * lib/tls-listener.ts: a renewal hands the port over without waiting for the replaced listener's
 * requests in flight. It used to await the old listener's stop inside the watcher's onChange, so
 * one long request on it (a slow upload, a stream) held off every later renewal until it ended.
 * And the certificate served is on /metrics, labelled as the HTTPS port's (`certificate="server"`).
 */
import { afterAll, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:tls";
import { Registry } from "prom-client";
import { createCa, issue, localIdentities } from "../scripts/tls/pki.ts";
import { createLogger } from "./log.ts";
import { readTlsMaterial, type TlsMaterial, TlsFileWatcher } from "./tls.ts";
import { TlsListener } from "./tls-listener.ts";

const dir = mkdtempSync(join(tmpdir(), "portico-lib-tls-listener-"));
let listener: TlsListener<TlsMaterial> | undefined;
afterAll(async () => {
  await listener?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const ca = await createCa("listener test CA");
const identity = localIdentities().webapp!;
const paths = { cert: join(dir, "served.crt"), key: join(dir, "served.key") };

async function renew(): Promise<string> {
  const next = await issue(ca, identity);
  writeFileSync(paths.key, next.key);
  writeFileSync(paths.cert, next.cert);
  return next.cert;
}

/** The fingerprint of the certificate a new connection to `port` gets. */
function presented(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: "127.0.0.1", port, servername: "localhost", ca: ca.cert }, () => {
      resolve(socket.getPeerCertificate().fingerprint256);
      socket.destroy();
    });
    socket.once("error", reject);
  });
}

const fingerprint = (pem: string) => new X509Certificate(pem).fingerprint256;

test("a request in flight on the replaced listener holds off no later renewal, and still finishes", async () => {
  await renew();
  let release!: () => void;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  const registry = new Registry();
  listener = new TlsListener<TlsMaterial>({
    host: "127.0.0.1",
    port: 0,
    exclusive: false,
    // Polled by hand (recheck): the test decides when a renewal is seen.
    watch: (onChange) => new TlsFileWatcher(paths, { intervalMs: 3_600_000, onChange, onError: () => {} }),
    tls: (m) => ({ cert: m.cert, key: m.key }),
    summarize: (m) => ({ subject: m.subject, notAfter: m.notAfter }),
    fetch: async (request) => {
      if (new URL(request.url).pathname === "/slow") await released;
      return new Response("done");
    },
    idleTimeout: 30,
    log: createLogger({ service: "test", version: "test", instance: "tls-listener" }, { destination: { write() {} } }),
    registry,
    handoverMs: 50,
  });
  const { port } = listener;
  const slow = fetch(`https://127.0.0.1:${port}/slow`, { tls: { ca: ca.cert } });
  // The slow request is in the first listener's hands before it is replaced.
  await Bun.sleep(200);

  const hurry = (what: Promise<void>) =>
    Promise.race([what.then(() => "renewed"), Bun.sleep(5000).then(() => "held off by the request in flight")]);
  const second = await renew();
  expect(await hurry(listener.recheck())).toBe("renewed");
  expect(await presented(port)).toBe(fingerprint(second));
  const third = await renew();
  expect(await hurry(listener.recheck())).toBe("renewed");
  expect(await presented(port)).toBe(fingerprint(third));

  release();
  const answer = await slow;
  expect([answer.status, await answer.text()]).toEqual([200, "done"]);

  const metrics = await registry.metrics();
  const notAfter = readTlsMaterial(paths).notAfter.getTime() / 1000;
  expect(metrics).toContain(`tls_certificate_expiry_timestamp_seconds{certificate="server"} ${notAfter}`);
  expect(metrics).toContain('tls_certificate_reloads_total{certificate="server"} 2');
}, 20_000);
