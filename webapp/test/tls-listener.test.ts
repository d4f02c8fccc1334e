/**
 * The handover of src/tls-listener.ts, in process: while a renewed certificate takes over the
 * port, the replaced listener still answers its open keep-alive connections, with `Connection:
 * close`, so their clients reconnect before it closes; the new one answers without it.
 */
import { afterAll, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type TLSSocket } from "node:tls";
import type { ServiceIdentity } from "../../lib/env.ts";
import { createLogger } from "../../lib/log.ts";
import { replaceFile } from "../../scripts/stack/testing/files.ts";
import { waitFor } from "../../scripts/stack/testing/processes.ts";
import { ensureLocalPki, issue, loadCa, localIdentities } from "../../scripts/tls/pki.ts";
import { TlsListener } from "../src/tls-listener.ts";

const IDENTITY: ServiceIdentity = { service: "webapp", version: "test", instance: "webapp-tls-listener" };
const dir = mkdtempSync(join(tmpdir(), "webapp-tls-listener-"));
let listener: TlsListener | undefined;

afterAll(async () => {
  await listener?.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** One request on an open connection; the response's head, lower-cased. */
function requestOn(socket: TLSSocket, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let head = "";
    const onData = (chunk: Buffer) => {
      head += chunk.toString("latin1");
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      socket.off("data", onData);
      resolve(head.slice(0, end).toLowerCase());
    };
    socket.on("data", onData);
    socket.once("error", reject);
    socket.write(`GET ${path} HTTP/1.1\r\nhost: localhost\r\n\r\n`);
  });
}

test("during a handover the replaced listener answers its open connections with Connection: close", async () => {
  const pki = await ensureLocalPki(join(dir, "pki"));
  const ca = await loadCa(readFileSync(pki.caFile, "utf8"), readFileSync(join(pki.dir, "ca.key"), "utf8"));
  mkdirSync(join(dir, "served"));
  const paths = { cert: join(dir, "served", "webapp.crt"), key: join(dir, "served", "webapp.key") };
  copyFileSync(pki.certFile("webapp"), paths.cert);
  copyFileSync(pki.keyFile("webapp"), paths.key);
  const logs: Record<string, unknown>[] = [];
  const log = createLogger(IDENTITY, { destination: { write: (line: string) => void logs.push(JSON.parse(line)) } });
  listener = new TlsListener({
    host: "127.0.0.1",
    port: 0,
    settings: { paths, requireClientCert: false, reloadIntervalMs: 100 },
    fetch: () => new Response("ok"),
    log,
    // Long enough that the test cannot miss it; it ends with the test (stop()).
    handoverMs: 30_000,
  });
  const first = listener.server;
  const { port } = first;
  const open = (): Promise<TLSSocket> =>
    new Promise((resolve, reject) => {
      const socket: TLSSocket = connect(
        { host: "127.0.0.1", port, servername: "localhost", ca: readFileSync(pki.caFile) },
        () => resolve(socket),
      );
      socket.once("error", reject);
    });
  const old = await open();
  expect(await requestOn(old, "/")).not.toContain("connection: close");

  const renewed = await issue(ca, localIdentities().webapp!);
  replaceFile(paths.key, renewed.key);
  replaceFile(paths.cert, renewed.cert);
  await waitFor("the renewed certificate's listener", () => listener!.server !== first, { timeoutMs: 10_000 });

  expect(listener.server.port).toBe(port);
  expect(await requestOn(old, "/")).toContain("connection: close");
  // New connections reach either listener until the old one closes: only the old one's say close.
  for (let i = 0; i < 10; i++) {
    const socket = await open();
    const head = await requestOn(socket, "/");
    const fromNew = socket.getPeerCertificate().fingerprint256 === new X509Certificate(renewed.cert).fingerprint256;
    expect(head.includes("connection: close")).toBe(!fromNew);
    socket.destroy();
  }
  old.destroy();
  // Not logged before the old listener closes.
  expect(logs.filter((l) => l.msg === "tls certificate reloaded")).toEqual([]);
});
