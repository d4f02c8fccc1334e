/**
 * `make up`'s TLS step (scripts/cluster/tls.ts) against a fake kubectl (see fakes.ts): the
 * certificate Secrets are created when the namespace lacks them, from one CA, with the names each
 * peer verifies; existing ones are left alone (cert-manager's, an earlier run's); keys reach
 * kubectl on its standard input only, never on a command line or in the output.
 */
import { afterEach, expect, test } from "bun:test";
import { createPrivateKey, X509Certificate } from "node:crypto";
import { parseAllDocuments } from "yaml";
import { clusterIdentities, TLS_CA_SECRET, TLS_SECRETS } from "../cluster/tls.ts";
import { createCa, DAY_MS, issue } from "../tls/pki.ts";
import { type Fakes, HAPPY, makeFakes, runScript } from "./fakes.ts";

let fakes: Fakes | undefined;
afterEach(() => fakes?.cleanup());

const LEAVES = Object.keys(TLS_SECRETS);
const SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
const CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
const NOT_FOUND = `echo 'Error from server (NotFound): secrets not found' >&2; exit 1`;

/** A kubectl that answers the TLS step's questions with `cases` (sh `case` arms), else as the happy one. */
function withKubectl(cases: string): Fakes {
  fakes = makeFakes({ ...HAPPY, kubectl: `case "$*" in\n${cases}\nesac\n${HAPPY.kubectl}` });
  return fakes;
}

interface AppliedSecret {
  name: string;
  namespace: string;
  type: string;
  data: Record<string, string>;
}

/** The Secrets given to `kubectl apply -f -`, decoded. */
function appliedSecrets(f: Fakes): AppliedSecret[] {
  return f.appliedStdin().flatMap((text) =>
    parseAllDocuments(text).map((doc) => {
      const o = doc.toJS() as {
        kind: string;
        type: string;
        metadata: { name: string; namespace: string };
        data: Record<string, string>;
      };
      expect(o.kind).toBe("Secret");
      return {
        name: o.metadata.name,
        namespace: o.metadata.namespace,
        type: o.type,
        data: Object.fromEntries(Object.entries(o.data).map(([k, v]) => [k, Buffer.from(v, "base64").toString()])),
      };
    }),
  );
}

/** Long pieces of a PEM's body: none may appear in a command line or the output. */
function fragments(pem: string): string[] {
  const body = pem.replace(/-----[^-]+-----/g, "").replace(/\s/g, "");
  return [body.slice(0, 48), body.slice(-48), Buffer.from(pem).toString("base64").slice(0, 48)];
}

test("without TLS Secrets, up creates a CA and the five certificates, each for the names its peer verifies, through stdin only", async () => {
  const f = withKubectl(`  *"get secret"*) ${NOT_FOUND} ;;`);
  const run = await runScript("up", f, { EDGE_HOSTS: "portico.example, api.portico.example" });
  expect(run.stderr).toBe("");
  expect(run.exitCode).toBe(0);

  // What ran: each Secret looked up, the CA's Secret too, minikube's address for the edge
  // certificate, then one apply from stdin, all before k8s/ itself.
  const calls = f.calls();
  for (const name of [...LEAVES, TLS_CA_SECRET])
    expect(calls).toContainEqual(expect.stringMatching(new RegExp(`^kubectl .*get secret ${name} -o (name|json)$`)));
  expect(calls).toContain("minikube ip");
  const applies = calls.filter((c) => c === "kubectl --context=minikube apply -f -");
  expect(applies).toHaveLength(1);
  expect(calls.indexOf(applies[0]!)).toBeLessThan(calls.findIndex((c) => c.includes("apply -k")));

  const secrets = appliedSecrets(f);
  expect(secrets.map((s) => s.name)).toEqual([TLS_CA_SECRET, ...LEAVES]);
  for (const s of secrets)
    expect({ name: s.name, namespace: s.namespace, type: s.type, keys: Object.keys(s.data).sort() }).toEqual({
      name: s.name,
      namespace: "portico",
      type: "kubernetes.io/tls",
      keys: ["ca.crt", "tls.crt", "tls.key"],
    });
  const byName = Object.fromEntries(secrets.map((s) => [s.name, s.data]));
  const ca = new X509Certificate(byName[TLS_CA_SECRET]!["tls.crt"]!);
  expect(ca.ca).toBe(true);
  const leaf = (name: string) => new X509Certificate(byName[name]!["tls.crt"]!);
  for (const name of LEAVES) {
    const cert = leaf(name);
    // Signed by that CA, which every Secret names as its ca.crt; the key is the certificate's.
    expect({ name, issued: cert.checkIssued(ca), verified: cert.verify(ca.publicKey), ca: cert.ca }).toEqual({
      name,
      issued: true,
      verified: true,
      ca: false,
    });
    expect(byName[name]!["ca.crt"]).toBe(byName[TLS_CA_SECRET]!["tls.crt"]!);
    expect(cert.checkPrivateKey(createPrivateKey(byName[name]!["tls.key"]!))).toBe(true);
  }
  // The gateway verifies each upstream by its headless Service's name, which only its own certificate carries.
  expect(leaf("portico-webapp-tls").checkHost("webapp-headless")).toBe("webapp-headless");
  expect(leaf("portico-webapp-tls").checkHost("10-0-0-7.webapp-headless.portico.svc.cluster.local")).toBeDefined();
  expect(leaf("portico-webapp-tls").checkHost("rpcapp-headless")).toBeUndefined();
  expect(leaf("portico-rpcapp-tls").checkHost("rpcapp-headless")).toBe("rpcapp-headless");
  expect(leaf("portico-rpcapp-tls").checkHost("webapp-headless")).toBeUndefined();
  // The services send spans to the collector's Service by name, which only its certificate carries.
  expect(leaf("portico-otel-collector-tls").checkHost("otel-collector")).toBe("otel-collector");
  expect(leaf("portico-otel-collector-tls").checkHost("otel-collector.portico.svc.cluster.local")).toBeDefined();
  expect(leaf("portico-otel-collector-tls").checkHost("localhost")).toBeUndefined();
  expect(leaf("portico-webapp-tls").checkHost("otel-collector")).toBeUndefined();
  // The edge: the address `minikube service` prints, the Service's names, loopback and EDGE_HOSTS.
  const edge = leaf("portico-edge-tls");
  expect(edge.checkIP("192.0.2.10")).toBe("192.0.2.10");
  expect(edge.checkIP("127.0.0.1")).toBe("127.0.0.1");
  for (const host of ["localhost", "gateway.portico.svc.cluster.local", "portico.example", "api.portico.example"])
    expect({ host, ok: edge.checkHost(host) }).toEqual({ host, ok: host });
  // Servers for server authentication only; the gateway's client certificate for client authentication only.
  for (const name of ["portico-edge-tls", "portico-webapp-tls", "portico-rpcapp-tls", "portico-otel-collector-tls"])
    expect({ name, eku: leaf(name).keyUsage }).toEqual({ name, eku: [SERVER_AUTH] });
  expect(leaf("portico-gateway-client-tls").keyUsage).toEqual([CLIENT_AUTH]);

  // No key on any command line, in the output or in a file given to kubectl.
  const seen = [calls.join("\n"), run.stdout, run.stderr, ...Object.values(f.appliedFiles())].join("\n");
  for (const s of secrets) for (const piece of fragments(s.data["tls.key"]!)) expect(seen).not.toContain(piece);
  expect(run.stdout).toContain(`portico-redis-store, ${TLS_CA_SECRET}, ${LEAVES.join(", ")}`);
});

test("TLS Secrets that exist are left alone: no CA is read or made, nothing is applied", async () => {
  fakes = makeFakes(HAPPY);
  const run = await runScript("up", fakes);
  expect(run.exitCode).toBe(0);
  const calls = fakes.calls();
  for (const name of LEAVES)
    expect(calls).toContain(`kubectl --context=minikube -n portico get secret ${name} -o json`);
  expect(calls.filter((c) => c.includes(TLS_CA_SECRET) || c.endsWith("apply -f -") || c === "minikube ip")).toEqual([]);
  expect(fakes.appliedStdin()).toEqual([]);
  expect(run.stdout).toContain(
    `kept as they are: portico-admin, portico-grafana, portico-redis-limiter, portico-redis-store, ${LEAVES.join(", ")}`,
  );
});

/** kubectl answers for a namespace that has `ca` in portico-tls-ca, the others with `keptCa` as ca.crt, and no webapp certificate. */
function oneMissing(ca: { cert: string; key: string } | undefined, keptCa: string): string {
  const b64 = (t: string) => Buffer.from(t).toString("base64");
  const caSecret = ca
    ? `printf '%s' '${JSON.stringify({ data: { "tls.crt": b64(ca.cert), "tls.key": b64(ca.key), "ca.crt": b64(ca.cert) } })}' ;;`
    : `${NOT_FOUND} ;;`;
  return [
    `  *"get secret portico-webapp-tls"*) ${NOT_FOUND} ;;`,
    `  *"get secret ${TLS_CA_SECRET} -o json"*) ${caSecret}`,
    `  *"get secret portico-"*"-o jsonpath="*) printf '%s' '${b64(keptCa)}' ;;`,
  ].join("\n");
}

test("one certificate missing is issued by the CA in portico-tls-ca, so the pods that trust it accept it", async () => {
  const ca = await createCa("a CA from an earlier make up");
  const f = withKubectl(oneMissing(ca, ca.cert));
  const run = await runScript("up", f);
  expect(run.stderr).toBe("");
  expect(run.exitCode).toBe(0);
  const calls = f.calls();
  // The kept ones are checked to name that CA; the edge certificate exists, so minikube is not asked.
  for (const name of LEAVES.filter((n) => n !== "portico-webapp-tls"))
    expect(calls).toContain(`kubectl --context=minikube -n portico get secret ${name} -o jsonpath={.data.ca\\.crt}`);
  expect(calls).not.toContain("minikube ip");
  const secrets = appliedSecrets(f);
  expect(secrets.map((s) => s.name)).toEqual(["portico-webapp-tls"]);
  const cert = new X509Certificate(secrets[0]!.data["tls.crt"]!);
  expect(cert.verify(new X509Certificate(ca.cert).publicKey)).toBe(true);
  expect(secrets[0]!.data["ca.crt"]).toBe(ca.cert);
  for (const piece of fragments(ca.key)) expect(calls.join("\n") + run.stdout).not.toContain(piece);
  expect(run.stdout).toContain("created: portico-webapp-tls");
});

test("renewal: the five certificates deleted, the CA kept, are issued again by that CA (the pods trust them as they arrive)", async () => {
  const ca = await createCa("the cluster CA");
  const b64 = (t: string) => Buffer.from(t).toString("base64");
  const json = JSON.stringify({ data: { "tls.crt": b64(ca.cert), "tls.key": b64(ca.key), "ca.crt": b64(ca.cert) } });
  const f = withKubectl(
    `  *"get secret ${TLS_CA_SECRET} -o json"*) printf '%s' '${json}' ;;\n  *"get secret portico-"*"-tls -o json"*) ${NOT_FOUND} ;;`,
  );
  const run = await runScript("up", f);
  expect(run.stderr).toBe("");
  expect(run.exitCode).toBe(0);
  const secrets = appliedSecrets(f);
  expect(secrets.map((s) => s.name)).toEqual(LEAVES);
  const caCert = new X509Certificate(ca.cert);
  for (const s of secrets)
    expect({ name: s.name, verified: new X509Certificate(s.data["tls.crt"]!).verify(caCert.publicKey) }).toEqual({
      name: s.name,
      verified: true,
    });
  expect(f.calls()).toContain("minikube ip");
  expect(run.stdout).toContain(`created: ${LEAVES.join(", ")}`);
});

test("one certificate missing without the CA that signed the others: up stops before applying anything", async () => {
  const f = withKubectl(oneMissing(undefined, ""));
  const run = await runScript("up", f);
  expect(run.exitCode).toBe(1);
  expect(run.stderr).toContain(`exist but ${TLS_CA_SECRET} does not: portico-webapp-tls cannot be issued`);
  expect(run.stderr).toContain("k8s/examples/cert-manager/issuer.yaml");
  // The namespace only: no Secret, and not k8s/.
  expect(f.calls().filter((c) => c.includes(" apply "))).toEqual([
    expect.stringMatching(/^kubectl --context=minikube apply -f \/.*\/k8s\/namespace\.yaml$/),
  ]);
});

test("one certificate missing while the others name another CA: up stops before applying anything", async () => {
  const [ours, theirs] = [await createCa("ours"), await createCa("cert-manager's")];
  const f = withKubectl(oneMissing(ours, theirs.cert));
  const run = await runScript("up", f);
  expect(run.exitCode).toBe(1);
  expect(run.stderr).toContain(`do not name the CA in ${TLS_CA_SECRET} as ca.crt`);
  // The namespace only: no Secret, and not k8s/.
  expect(f.calls().filter((c) => c.includes(" apply "))).toEqual([
    expect.stringMatching(/^kubectl --context=minikube apply -f \/.*\/k8s\/namespace\.yaml$/),
  ]);
});

test("a failing apply of the certificates stops up with kubectl's message, before k8s/ is applied", async () => {
  const f = withKubectl(
    `  *"get secret"*) ${NOT_FOUND} ;;\n  *"apply -f -"*) echo 'error: secrets is forbidden' >&2; exit 1 ;;`,
  );
  const run = await runScript("up", f);
  expect(run.exitCode).toBe(1);
  expect(run.stderr).toContain("`kubectl --context=minikube apply -f -` failed (exit 1)");
  expect(run.stderr).toContain("secrets is forbidden");
  expect(f.calls().some((c) => c.includes("apply -k"))).toBe(false);
});

const b64 = (t: string) => Buffer.from(t).toString("base64");

/** `kubectl get secret <name> -o json` for a TLS Secret holding `pem`, signed by `ca`, with `annotations`. */
function secretJson(pem: { cert: string; key: string }, ca: string, annotations: Record<string, string> = {}): string {
  return JSON.stringify({
    metadata: { annotations },
    data: { "tls.crt": b64(pem.cert), "tls.key": b64(pem.key), "ca.crt": b64(ca) },
  });
}

/** A leaf of `name`'s identity (plus `extra`), issued so that it ends `daysLeft` days from now. */
async function leafEnding(ca: Awaited<ReturnType<typeof createCa>>, name: string, daysLeft: number, extra = {}) {
  const identity = clusterIdentities()[name as keyof typeof TLS_SECRETS];
  return issue(ca, {
    ...identity,
    ...extra,
    validFrom: new Date(Date.now() - (90 - daysLeft) * DAY_MS),
    validDays: 90,
  });
}

test("make up renews the certificates it issued that end within 30 days, from their CA, keeping their names; cert-manager's and younger ones are left alone", async () => {
  const ca = await createCa("the cluster CA");
  const edge = await leafEnding(ca, "portico-edge-tls", 20, {
    dnsNames: [...clusterIdentities()["portico-edge-tls"].dnsNames!, "api.portico.example"],
    ipAddresses: ["127.0.0.1", "::1", "192.0.2.77"],
  });
  const client = await leafEnding(ca, "portico-gateway-client-tls", 2);
  const managed = await leafEnding(ca, "portico-webapp-tls", 10);
  const young = await leafEnding(ca, "portico-rpcapp-tls", 60);
  const ended = await leafEnding(ca, "portico-otel-collector-tls", -1);
  const answers: Record<string, string> = {
    "portico-edge-tls": secretJson(edge, ca.cert),
    "portico-gateway-client-tls": secretJson(client, ca.cert),
    "portico-webapp-tls": secretJson(managed, ca.cert, { "cert-manager.io/certificate-name": "portico-webapp-tls" }),
    "portico-rpcapp-tls": secretJson(young, ca.cert),
    "portico-otel-collector-tls": secretJson(ended, ca.cert),
    [TLS_CA_SECRET]: secretJson(ca, ca.cert),
  };
  const f = withKubectl(
    [
      // First: `-o json` is the start of `-o jsonpath=…` too.
      `  *"get secret portico-"*"-o jsonpath="*) printf '%s' '${b64(ca.cert)}' ;;`,
      ...Object.entries(answers).map(([name, json]) => `  *"get secret ${name} -o json"*) printf '%s' '${json}' ;;`),
    ].join("\n"),
  );
  const run = await runScript("up", f);
  expect(run.stderr).toBe("");
  expect(run.exitCode).toBe(0);

  const renewed = ["portico-edge-tls", "portico-gateway-client-tls", "portico-otel-collector-tls"];
  const secrets = appliedSecrets(f);
  expect(secrets.map((s) => s.name)).toEqual(renewed);
  const caCert = new X509Certificate(ca.cert);
  for (const s of secrets) {
    const cert = new X509Certificate(s.data["tls.crt"]!);
    const daysLeft = Math.round((Date.parse(cert.validTo) - Date.now()) / DAY_MS);
    expect({ name: s.name, verified: cert.verify(caCert.publicKey), ca: s.data["ca.crt"], daysLeft }).toEqual({
      name: s.name,
      verified: true,
      ca: ca.cert,
      daysLeft: 90,
    });
    expect(cert.checkPrivateKey(createPrivateKey(s.data["tls.key"]!))).toBe(true);
    const before = JSON.parse(answers[s.name]!) as { data: Record<string, string> };
    expect(cert.subject).toBe(new X509Certificate(Buffer.from(before.data["tls.crt"]!, "base64")).subject);
  }
  // The edge keeps the names it was issued with (EDGE_HOSTS and minikube's address of that run).
  const newEdge = new X509Certificate(secrets[0]!.data["tls.crt"]!);
  expect(newEdge.checkHost("api.portico.example")).toBe("api.portico.example");
  expect(newEdge.checkHost("gateway.portico.svc.cluster.local")).toBe("gateway.portico.svc.cluster.local");
  expect(newEdge.checkIP("192.0.2.77")).toBe("192.0.2.77");
  expect(newEdge.checkIP("::1")).toBe("::1");
  expect(new X509Certificate(secrets[1]!.data["tls.crt"]!).keyUsage).toEqual([CLIENT_AUTH]);
  // Nothing was missing: minikube is not asked for its address, and one apply carries the renewals.
  expect(f.calls()).not.toContain("minikube ip");
  expect(f.calls().filter((c) => c.endsWith("apply -f -"))).toHaveLength(1);
  expect(run.stdout).toContain(`renewed (ending within 30 days): ${renewed.join(", ")}`);
  expect(run.stdout).toContain("portico-webapp-tls, portico-rpcapp-tls");
  for (const piece of fragments(ca.key)) expect(f.calls().join("\n") + run.stdout).not.toContain(piece);
});

test("a certificate that already ends with its CA is not issued again on every run: the CA's warning says why", async () => {
  // A CA with 20 days left, and a leaf make up issued from it: it ends with the CA (pki.ts).
  const ca = await createCa("a CA near its end", 20);
  const edge = await issue(ca, { ...clusterIdentities()["portico-edge-tls"] });
  expect(new X509Certificate(edge.cert).validTo).toBe(new X509Certificate(ca.cert).validTo);
  const f = withKubectl(
    [
      `  *"get secret portico-"*"-o jsonpath="*) printf '%s' '${b64(ca.cert)}' ;;`,
      `  *"get secret portico-edge-tls -o json"*) printf '%s' '${secretJson(edge, ca.cert)}' ;;`,
      `  *"get secret ${TLS_CA_SECRET} -o json"*) printf '%s' '${secretJson(ca, ca.cert)}' ;;`,
    ].join("\n"),
  );
  const run = await runScript("up", f);
  expect(run.exitCode).toBe(0);
  expect(f.appliedStdin()).toEqual([]);
  expect(run.stderr).toContain(`warning: the CA in ${TLS_CA_SECRET} ends`);
});

test("a certificate due for renewal without a CA that can sign it: a warning naming it, nothing applied, up goes on", async () => {
  const ca = await createCa("a CA whose Secret is gone");
  const edge = await leafEnding(ca, "portico-edge-tls", 10);
  const f = withKubectl(
    [
      `  *"get secret portico-edge-tls -o json"*) printf '%s' '${secretJson(edge, ca.cert)}' ;;`,
      `  *"get secret ${TLS_CA_SECRET} -o json"*) ${NOT_FOUND} ;;`,
    ].join("\n"),
  );
  const run = await runScript("up", f);
  expect(run.exitCode).toBe(0);
  const ends = new Date(new X509Certificate(edge.cert).validTo).toISOString().slice(0, 10);
  expect(run.stderr).toContain(
    `warning: not renewed, as no usable CA in ${TLS_CA_SECRET} can sign it: portico-edge-tls (ends ${ends})`,
  );
  expect(f.appliedStdin()).toEqual([]);
  expect(f.calls().some((c) => c.includes("apply -k"))).toBe(true);
});
