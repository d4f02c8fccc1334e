/**
 * rpcapp's gRPC port over TLS, as real processes: mutual TLS with the gateway's client certificate,
 * refusals of every other client, an independent client (python3-grpcio), the HTTP port staying
 * plain, a certificate renewed under load without a failed call, and bad files refused at start.
 *
 * grpc-js clients dial 127.0.0.1 with `grpc.ssl_target_name_override: "localhost"`: Bun refuses an
 * IP address as the TLS server name, which grpc-js would otherwise send. The python client dials
 * the IP address itself (its TLS stack checks the certificate's IP names).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { X509Certificate } from "node:crypto";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import * as tls from "node:tls";
import { loadPackageDefinition } from "../../lib/grpc-proto.ts";
import { createCa, ensureLocalPki, issue, type LocalPki, loadCa, localIdentities } from "../../scripts/tls/pki.ts";
import { replaceFile } from "../../scripts/stack/testing/files.ts";
import { freePorts } from "../../scripts/stack/testing/ports.ts";
import {
  type Spawned,
  spawnProcess,
  spawnService,
  stopAll,
  waitFor,
  waitForHttp,
} from "../../scripts/stack/testing/processes.ts";
import { reflectionDefinition } from "../src/reflection.ts";
import { serviceDefinition } from "../src/service-definition.ts";
import { pythonWithGrpc } from "./python.ts";

const contracts = loadPackageDefinition(["userverify.proto", "grpc/health/v1/health.proto"]);
const reflection = reflectionDefinition();

let dir: string;
let pki: LocalPki;
const read = (path: string) => readFileSync(path);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "rpcapp-tls-"));
  pki = await ensureLocalPki(join(dir, "pki"));
});

afterAll(async () => {
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
});

interface Rpcapp {
  proc: Spawned;
  grpcPort: number;
  httpPort: number;
}

async function startRpcapp(env: Record<string, string>): Promise<Rpcapp> {
  const [grpcPort, httpPort] = (await freePorts(2)) as [number, number];
  const proc = spawnService("rpcapp", {
    HOST: "127.0.0.1",
    PORT: String(grpcPort),
    METRICS_PORT: String(httpPort),
    INSTANCE_ID: "rpcapp-tls-1",
    ...env,
  });
  // Readiness on the plain HTTP port: what the kubelet sees with TLS on.
  await waitForHttp(`http://127.0.0.1:${httpPort}/readyz`, proc);
  return { proc, grpcPort, httpPort };
}

/** rpcapp's own certificate and key, with the CA for client certificates. */
function mutualEnv(cert = pki.certFile("rpcapp"), key = pki.keyFile("rpcapp")): Record<string, string> {
  return { TLS_CERT_FILE: cert, TLS_KEY_FILE: key, TLS_CLIENT_CA_FILE: pki.caFile };
}

/** The gateway's credentials: trusts the local CA, presents gateway-client. */
function gatewayCredentials(verify?: grpc.VerifyOptions): grpc.ChannelCredentials {
  return grpc.credentials.createSsl(
    read(pki.caFile),
    read(pki.keyFile("gateway-client")),
    read(pki.certFile("gateway-client")),
    verify,
  );
}

const CHANNEL_OPTIONS: grpc.ChannelOptions = {
  "grpc.ssl_target_name_override": "localhost",
  // A channel of its own connection: grpc-js would otherwise share one between equal channels, and
  // a "new" client would not make a new handshake.
  "grpc.use_local_subchannel_pool": 1,
};

function client(service: string, port: number, credentials: grpc.ChannelCredentials, definition = contracts) {
  const Client = grpc.makeGenericClientConstructor(
    serviceDefinition(definition, service) as grpc.ServiceDefinition<grpc.UntypedServiceImplementation>,
    service,
  );
  return new Client(`127.0.0.1:${port}`, credentials, CHANNEL_OPTIONS);
}

type Unary = (
  request: object,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (error: grpc.ServiceError | null, reply: unknown) => void,
) => void;

function unary<T>(c: grpc.Client, method: string, request: object): Promise<{ reply?: T; error?: grpc.ServiceError }> {
  return new Promise((resolve) =>
    (c as unknown as Record<string, Unary>)[method]!.call(
      c,
      request,
      new grpc.Metadata(),
      { deadline: Date.now() + 5_000 },
      (error, reply) => resolve(error ? { error } : { reply: reply as T }),
    ),
  );
}

/** One VerifyUser on a new channel (so a new handshake), closed afterwards. */
async function verifyOnce(port: number, credentials: grpc.ChannelCredentials) {
  const c = client("userverify.UserVerify", port, credentials);
  try {
    return await unary<{ message: string }>(c, "VerifyUser", { id: 121, token: "a$$" });
  } finally {
    c.close();
  }
}

function listServices(port: number, credentials: grpc.ChannelCredentials): Promise<string[]> {
  const c = client("grpc.reflection.v1.ServerReflection", port, credentials, reflection);
  const open = (c as unknown as Record<string, (o: grpc.CallOptions) => grpc.ClientDuplexStream<object, unknown>>)
    .ServerReflectionInfo!;
  return new Promise<string[]>((resolve, reject) => {
    const stream = open.call(c, { deadline: Date.now() + 5_000 });
    stream.on("data", (reply: { listServicesResponse?: { service: { name: string }[] } }) => {
      resolve((reply.listServicesResponse?.service ?? []).map((s) => s.name).sort());
      stream.end();
    });
    stream.on("error", reject);
    stream.write({ listServices: "*" });
  }).finally(() => c.close());
}

/** The serial of the certificate a new TLS handshake (ALPN h2, as gRPC) on `port` presents. */
function presentedSerial(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect(
      {
        host: "127.0.0.1",
        port,
        servername: "localhost",
        ALPNProtocols: ["h2"],
        ca: read(pki.caFile),
        key: read(pki.keyFile("gateway-client")),
        cert: read(pki.certFile("gateway-client")),
      },
      () => {
        const serial = socket.getPeerCertificate().serialNumber;
        socket.destroy();
        if (socket.alpnProtocol !== "h2") reject(new Error(`ALPN gave ${socket.alpnProtocol}, not h2`));
        else resolve(serial.toUpperCase());
      },
    );
    socket.on("error", reject);
  });
}

/** Checks the server's name as usual, and records the serial of the certificate of each handshake. */
function recordingSerials(into: string[]): grpc.VerifyOptions {
  return {
    checkServerIdentity: (host, cert) => {
      into.push(cert.serialNumber.toUpperCase());
      return tls.checkServerIdentity(host, cert);
    },
  };
}

const serialOf = (pem: string | Buffer) => new X509Certificate(pem).serialNumber.toUpperCase();

function startLine(proc: Spawned): Record<string, unknown> | undefined {
  const line = proc.lines.find((l) => l.includes('"msg":"rpcapp listening"'));
  return line === undefined ? undefined : JSON.parse(line);
}

async function metricsText(httpPort: number): Promise<string> {
  return (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
}

const python = pythonWithGrpc();
const isCI = process.env.CI === "true";

describe("rpcapp with mutual TLS", () => {
  let app: Rpcapp;
  beforeAll(async () => {
    app = await startRpcapp(mutualEnv());
  });

  test("the gateway's client certificate calls VerifyUser, Health/Check and reflection", async () => {
    expect(await verifyOnce(app.grpcPort, gatewayCredentials())).toEqual({ reply: { message: "Verified: 121" } });
    const health = client("grpc.health.v1.Health", app.grpcPort, gatewayCredentials());
    try {
      expect(await unary(health, "Check", { service: "" })).toEqual({ reply: { status: "SERVING" } });
      expect(await unary(health, "Check", { service: "userverify.UserVerify" })).toEqual({
        reply: { status: "SERVING" },
      });
    } finally {
      health.close();
    }
    expect(await listServices(app.grpcPort, gatewayCredentials())).toEqual([
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
      "userverify.UserVerify",
    ]);
  });

  test("refuses a client without a certificate, one from another CA, a server certificate, and plain text", async () => {
    const ca = read(pki.caFile);
    const otherCa = await createCa("Another CA");
    const stranger = await issue(otherCa, { commonName: "gateway", usage: "client" });
    const refused = {
      "no certificate": grpc.credentials.createSsl(ca),
      "another CA": grpc.credentials.createSsl(ca, Buffer.from(stranger.key), Buffer.from(stranger.cert)),
      // Signed by the right CA, but for serverAuth only: not a client certificate.
      "a server certificate": grpc.credentials.createSsl(ca, read(pki.keyFile("webapp")), read(pki.certFile("webapp"))),
      "plain text": grpc.credentials.createInsecure(),
    };
    const codes: Record<string, string> = {};
    for (const [name, credentials] of Object.entries(refused)) {
      const { reply, error } = await verifyOnce(app.grpcPort, credentials);
      codes[name] = error ? grpc.status[error.code] : `answered ${JSON.stringify(reply)}`;
    }
    expect(codes).toEqual({
      "no certificate": "UNAVAILABLE",
      "another CA": "UNAVAILABLE",
      "a server certificate": "UNAVAILABLE",
      "plain text": "UNAVAILABLE",
    });
    // The same server still answers the gateway: the refusals were about the clients.
    expect((await verifyOnce(app.grpcPort, gatewayCredentials())).reply).toEqual({ message: "Verified: 121" });
  });

  test("TLS 1.2 with forward secrecy and AEAD only: a client offering CBC with SHA-1 alone is refused", async () => {
    const handshake = (ciphers: string) =>
      new Promise<string>((resolve) => {
        const socket = tls.connect(
          {
            host: "127.0.0.1",
            port: app.grpcPort,
            servername: "localhost",
            ALPNProtocols: ["h2"],
            minVersion: "TLSv1.2",
            maxVersion: "TLSv1.2",
            ciphers,
            ca: read(pki.caFile),
            key: read(pki.keyFile("gateway-client")),
            cert: read(pki.certFile("gateway-client")),
          },
          () => {
            resolve(`${socket.getProtocol()} ${socket.getCipher().standardName}`);
            socket.destroy();
          },
        );
        socket.on("error", (err) => resolve(`refused: ${err.message}`));
      });
    expect(await handshake("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")).toStartWith("refused");
    expect(await handshake("ECDHE-ECDSA-AES128-GCM-SHA256")).toBe("TLSv1.2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256");
  });

  test("keeps /healthz, /readyz and /metrics plain HTTP, with the certificate's expiry in /metrics", async () => {
    for (const path of ["/healthz", "/readyz"]) {
      expect((await fetch(`http://127.0.0.1:${app.httpPort}${path}`)).status).toBe(200);
    }
    const notAfter = new Date(new X509Certificate(read(pki.certFile("rpcapp"))).validTo).getTime() / 1000;
    const metrics = await metricsText(app.httpPort);
    expect(metrics).toContain(
      `tls_certificate_expiry_timestamp_seconds{certificate="server",service="rpcapp"} ${notAfter}`,
    );
    expect(metrics).toContain('tls_certificate_reloads_total{certificate="server",service="rpcapp"} 0');
    // The CA client certificates must come from: its expiry, and no reloads series of its own.
    const caNotAfter = new Date(new X509Certificate(read(pki.caFile)).validTo).getTime() / 1000;
    expect(metrics).toContain(
      `tls_certificate_expiry_timestamp_seconds{certificate="client-ca",service="rpcapp"} ${caNotAfter}`,
    );
    expect(metrics).not.toContain('tls_certificate_reloads_total{certificate="client-ca"');
  });

  test("logs who it is and that TLS is mutual in its start line", () => {
    const cert = new X509Certificate(read(pki.certFile("rpcapp")));
    expect(startLine(app.proc)?.tls).toEqual({
      subject: "CN=rpcapp",
      notAfter: new Date(cert.validTo).toISOString(),
      mutual: true,
    });
  });

  test.skipIf(!python && !isCI)("answers an independent python grpcio client over mutual TLS", async () => {
    if (!python) throw new Error("python3 with `import grpc` is required under CI: apt-get install python3-grpcio");
    const script = resolve(import.meta.dir, "../scripts/python_tls_client.py");
    const argv = [
      python,
      script,
      `127.0.0.1:${app.grpcPort}`,
      pki.caFile,
      pki.certFile("gateway-client"),
      pki.keyFile("gateway-client"),
    ];
    // The refused attempt would be logged by the C core on stderr: quiet it, leave tracebacks.
    const child = Bun.spawn(argv, { stdout: "pipe", stderr: "pipe", env: { ...process.env, GRPC_VERBOSITY: "NONE" } });
    const timer = setTimeout(() => child.kill(), 20_000);
    const [code, out, err] = await Promise.all([
      child.exited,
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
    ]);
    clearTimeout(timer);
    expect(err).toBe("");
    expect(code).toBe(0);
    expect(JSON.parse(out)).toEqual({
      verify: { message: "Verified: 121", "x-request-id": "py-tls-1" },
      health: "SERVING",
      without_certificate: "UNAVAILABLE",
    });
  });
});

describe("rpcapp with TLS but no client CA", () => {
  test("serves TLS only, to clients without a certificate too", async () => {
    const app = await startRpcapp({ TLS_CERT_FILE: pki.certFile("rpcapp"), TLS_KEY_FILE: pki.keyFile("rpcapp") });
    const anonymous = grpc.credentials.createSsl(read(pki.caFile));
    expect(await verifyOnce(app.grpcPort, anonymous)).toEqual({ reply: { message: "Verified: 121" } });
    const plain = await verifyOnce(app.grpcPort, grpc.credentials.createInsecure());
    expect(plain.error?.code).toBe(grpc.status.UNAVAILABLE);
    expect(startLine(app.proc)?.tls).toMatchObject({ subject: "CN=rpcapp", mutual: false });
    // No client CA, no series for one.
    const metrics = await metricsText(app.httpPort);
    expect(metrics).toContain('tls_certificate_expiry_timestamp_seconds{certificate="server",service="rpcapp"}');
    expect(metrics).not.toContain('certificate="client-ca"');
  });
});

describe("rpcapp certificate rotation", () => {
  test("a renewed certificate is served to new handshakes without a restart and without a failed call", async () => {
    const certFile = join(dir, "rotating.crt");
    const keyFile = join(dir, "rotating.key");
    copyFileSync(pki.certFile("rpcapp"), certFile);
    copyFileSync(pki.keyFile("rpcapp"), keyFile);
    const oldSerial = serialOf(read(certFile));
    const app = await startRpcapp({
      ...mutualEnv(certFile, keyFile),
      TLS_RELOAD_INTERVAL_MS: "100",
      // No age limit: the long-lived connection below must stay the one it opened.
      GRPC_MAX_CONNECTION_AGE_MS: "0",
    });
    expect(await presentedSerial(app.grpcPort)).toBe(oldSerial);

    // A connection opened before the renewal, and what it saw at its handshakes.
    const longSerials: string[] = [];
    const long = client("userverify.UserVerify", app.grpcPort, gatewayCredentials(recordingSerials(longSerials)));
    expect((await unary(long, "VerifyUser", { id: 1, token: "t" })).error).toBeUndefined();

    // Calls in a loop, each on a new channel (a new handshake), recording the certificate each saw.
    const seen: string[] = [];
    const failures: string[] = [];
    let calls = 0;
    let running = true;
    const credentials = gatewayCredentials(recordingSerials(seen));
    // Four callers at once, so handshakes overlap the moment the certificate changes.
    const worker = async () => {
      while (running) {
        const { error } = await verifyOnce(app.grpcPort, credentials);
        calls++;
        if (error) failures.push(`${grpc.status[error.code]}: ${error.details}`);
      }
    };
    const loop = Promise.all([worker(), worker(), worker(), worker()]);
    const callsReach = (n: number) => waitFor(`${n} calls in the loop`, () => calls >= n, { proc: app.proc });

    try {
      await callsReach(100);
      const ca = await loadCa(readFileSync(pki.caFile, "utf8"), readFileSync(join(pki.dir, "ca.key"), "utf8"));
      const renewed = await issue(ca, localIdentities().rpcapp!);
      const newSerial = serialOf(renewed.cert);

      // Half-written: the new key beside the old certificate. Logged once, naming the file; the old
      // pair keeps serving. (Each file is replaced in one step: a poll never reads one half written.)
      replaceFile(keyFile, renewed.key);
      await waitFor(
        "the warning about the half-written pair",
        () => app.proc.lines.some((l) => l.includes('"level":"warn"') && l.includes(`private key ${keyFile}`)),
        { proc: app.proc },
      );
      const atHalfWritten = calls;
      await callsReach(atHalfWritten + 100);
      expect(await presentedSerial(app.grpcPort)).toBe(oldSerial);

      replaceFile(certFile, renewed.cert);
      await waitFor(
        "the reload line",
        () => app.proc.lines.some((l) => l.includes('"msg":"tls certificate reloaded"')),
        { proc: app.proc },
      );
      expect(await presentedSerial(app.grpcPort)).toBe(newSerial);
      // The new secure context still requires a client certificate.
      const anonymous = await verifyOnce(app.grpcPort, grpc.credentials.createSsl(read(pki.caFile)));
      expect(anonymous.error?.code).toBe(grpc.status.UNAVAILABLE);
      await waitFor(
        "100 loop calls that saw the new certificate",
        () => seen.filter((s) => s === newSerial).length >= 100,
        { proc: app.proc },
      );
      running = false;
      await loop;

      expect(failures).toEqual([]);
      expect(new Set(seen)).toEqual(new Set([oldSerial, newSerial]));
      // Only handshakes under way at the switch can still get the old one: the last 50 all got the new.
      expect(seen.slice(-50)).toEqual(Array(50).fill(newSerial));
      // The connection opened before the renewal was kept: it still answers, without a new handshake.
      expect((await unary(long, "VerifyUser", { id: 2, token: "t" })).error).toBeUndefined();
      expect(longSerials).toEqual([oldSerial]);

      const warnings = app.proc.lines.filter((l) => l.includes('"level":"warn"') && l.includes("tls files changed"));
      expect(warnings).toHaveLength(1);
      const reloaded = JSON.parse(app.proc.lines.find((l) => l.includes('"msg":"tls certificate reloaded"'))!);
      expect(reloaded.tls).toEqual({
        subject: "CN=rpcapp",
        notAfter: new Date(new X509Certificate(renewed.cert).validTo).toISOString(),
      });
      const metrics = await metricsText(app.httpPort);
      expect(metrics).toContain('tls_certificate_reloads_total{certificate="server",service="rpcapp"} 1');
      expect(metrics).toContain(
        `tls_certificate_expiry_timestamp_seconds{certificate="server",service="rpcapp"} ${new Date(new X509Certificate(renewed.cert).validTo).getTime() / 1000}`,
      );
      if (process.env.TEST_VERBOSE)
        console.error(`rotation: ${calls} calls, ${failures.length} failed, ${seen.length} handshakes`);
    } finally {
      running = false;
      await loop;
      long.close();
    }
  }, 60_000);
});

describe("rpcapp with bad TLS files", () => {
  test.each([
    [
      "a missing certificate",
      () => ({ TLS_CERT_FILE: join(dir, "missing.crt"), TLS_KEY_FILE: pki.keyFile("rpcapp") }),
      () => `certificate ${join(dir, "missing.crt")}: ENOENT`,
    ],
    [
      "a key of another certificate",
      () => ({ TLS_CERT_FILE: pki.certFile("rpcapp"), TLS_KEY_FILE: pki.keyFile("webapp") }),
      () => `private key ${pki.keyFile("webapp")} is not the key of certificate ${pki.certFile("rpcapp")}`,
    ],
    [
      "a CA file that is not PEM",
      () => ({ ...mutualEnv(), TLS_CLIENT_CA_FILE: join(dir, "not-pem.txt") }),
      () => `CA bundle ${join(dir, "not-pem.txt")}: not a PEM file`,
    ],
    [
      "a key without a certificate",
      () => ({ TLS_KEY_FILE: pki.keyFile("rpcapp") }),
      () => "TLS_CERT_FILE is required when TLS_KEY_FILE is set",
    ],
  ])("refuses to start on %s, naming the file", async (_name, env, message) => {
    writeFileSync(join(dir, "not-pem.txt"), "not a certificate\n");
    const [grpcPort, httpPort] = (await freePorts(2)) as [number, number];
    const proc = spawnProcess("rpcapp-bad-tls", [process.execPath, "rpcapp/src/main.ts"], {
      HOST: "127.0.0.1",
      PORT: String(grpcPort),
      METRICS_PORT: String(httpPort),
      ...env(),
    });
    expect(await proc.exited).toBe(1);
    await waitFor("the error line", () => proc.lines.some((l) => l.includes(message())));
    const line = JSON.parse(proc.lines.find((l) => l.includes(message()))!);
    // One line naming the file, as webapp and the gateway write it: no stack trace.
    expect(line.msg).toContain(message());
    expect(line.err).toBeUndefined();
  });
});
