import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ensureLocalPki, type LocalPki } from "../../scripts/tls/pki.ts";
import { parseDocument } from "yaml";
import { interpolateDocument, unquotedReferenceInFlow } from "../src/config/interpolate.ts";
import { ConfigError, loadConfig, parseConfig } from "../src/config/load.ts";

const ROOT = resolve(import.meta.dir, "../..");
const shipped = readFileSync(resolve(ROOT, "gateway/routes.yaml"), "utf8");

function problemsOf(text: string, env: Record<string, string> = {}) {
  return problemsIn(text, ROOT, env);
}

function problemsIn(text: string, dir: string, env: Record<string, string> = {}) {
  try {
    parseConfig(text, "routes.yaml", env, dir);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error("expected the config to be rejected");
}

describe("routes.yaml loading", () => {
  test("the shipped routes.yaml loads with the local defaults", () => {
    const config = loadConfig(resolve(ROOT, "gateway/routes.yaml"), {});
    expect(config.upstreams.get("webapp")?.endpoints).toEqual(["127.0.0.1:3001", "127.0.0.1:3002", "127.0.0.1:3003"]);
    expect(config.upstreams.get("rpcapp")?.protocol).toBe("grpc");
    const verify = config.routes.find((r) => r.name === "verify");
    expect(verify?.grpcMethod?.path).toBe("/userverify.UserVerify/VerifyUser");
    expect(verify?.methods).toEqual(["POST"]);
  });

  test("${VAR:-default} takes the environment value when set", () => {
    const config = parseConfig(shipped, "routes.yaml", { WEBAPP_ENDPOINTS: "webapp-headless:8080" }, ROOT);
    expect(config.upstreams.get("webapp")?.endpoints).toEqual(["webapp-headless:8080"]);
  });

  test("a reference whose default is true or false reads its variable as a boolean: 1/0, yes/no, on/off too", () => {
    const yaml =
      "upstreams:\n  stub:\n    protocol: http\n    endpoints: 127.0.0.1:9\n" +
      "    healthCheck:\n      enabled: ${CHECKS:-true}\nroutes:\n  - { name: r, path: /r, upstream: stub }\n";
    const checksOf = (CHECKS: string) =>
      parseConfig(yaml, "routes.yaml", { CHECKS }).upstreams.get("stub")?.healthCheck.enabled;
    for (const on of ["1", "true", "Yes", " ON ", "", "  "]) expect(checksOf(on)).toBe(true);
    for (const off of ["0", "false", "no", "off"]) expect(checksOf(off)).toBe(false);
    // The shipped file's TLS switch, misspelt: each use of it named, none silently off.
    const problems = problemsOf(shipped, { TLS: "ture" });
    expect(problems.map((p) => p.field)).toEqual([
      "upstreams.webapp.tls.enabled",
      "upstreams.rpcapp.tls.enabled",
      "tls.enabled",
    ]);
    expect(problems[0]!.message).toContain('TLS="ture" is not a boolean (true/false, 1/0, yes/no, on/off)');
  });

  test("a whole-value reference keeps its YAML type (a number stays a number)", () => {
    const text = shipped.replace("match: exact", "match: exact\n    timeoutMs: ${VERIFY_TIMEOUT_MS:-250}");
    expect(parseConfig(text, "routes.yaml", {}, ROOT).routes.find((r) => r.name === "verify")?.timeoutMs).toBe(250);
    expect(
      parseConfig(text, "routes.yaml", { VERIFY_TIMEOUT_MS: "1500" }, ROOT).routes.find((r) => r.name === "verify")
        ?.timeoutMs,
    ).toBe(1500);
  });

  test("a route without timeoutMs takes its upstream's; an upstream without one, 10 s", () => {
    const config = parseConfig(
      `upstreams:
  slow: { protocol: http, endpoints: "127.0.0.1:1", timeoutMs: 30000 }
  plain: { protocol: http, endpoints: "127.0.0.1:2" }
routes:
  - { name: inherits, path: /a, upstream: slow }
  - { name: own, path: /b, upstream: slow, timeoutMs: 500 }
  - { name: default, path: /c, upstream: plain }
`,
      "routes.yaml",
      {},
      ROOT,
    );
    expect(Object.fromEntries(config.routes.map((r) => [r.name, r.timeoutMs]))).toEqual({
      inherits: 30_000,
      own: 500,
      default: 10_000,
    });
  });

  test("a misspelt key is rejected with its line, its field and a suggestion", () => {
    const text = shipped.replace("    methods: [GET, POST]", "    methds: [GET, POST]");
    const line = text.split("\n").findIndex((l) => l.includes("methds")) + 1;
    const [problem] = problemsOf(text);
    expect(problem).toMatchObject({ line, field: "routes[0].methds" });
    expect(problem!.message).toContain('did you mean "methods"');
  });

  test("a wrong type is rejected with its line and field", () => {
    const text = shipped.replace("match: exact", "match: exact\n    timeoutMs: soon");
    const line = text.split("\n").findIndex((l) => l.includes("timeoutMs: soon")) + 1;
    expect(problemsOf(text)).toEqual([
      expect.objectContaining({
        line,
        field: "routes[1].timeoutMs",
        message: expect.stringContaining("expected integer"),
      }),
    ]);
  });

  test("an enum typo lists the allowed values", () => {
    const [problem] = problemsOf(shipped.replace("protocol: grpc", "protocol: grcp"));
    expect(problem!.field).toBe("upstreams.rpcapp.protocol");
    expect(problem!.message).toContain('must be one of "http", "grpc"');
  });

  test("every cross-reference problem is reported at once, each at its line", () => {
    const text = shipped
      .replace("upstream: webapp", "upstream: webap")
      .replace("VerifyUser", "VerifyUsr")
      .replace("127.0.0.1:3003}", "127.0.0.1:99999}");
    const problems = problemsOf(text);
    expect(problems.map((p) => p.field).sort()).toEqual([
      "routes[0].upstream",
      "routes[1].grpc.method",
      "upstreams.webapp.endpoints",
    ]);
    for (const p of problems) expect(p.line).toBeGreaterThan(0);
    expect(problems.find((p) => p.field === "routes[0].upstream")!.message).toContain('no upstream named "webap"');
  });

  test("http options on a gRPC route are refused at their line, not ignored", () => {
    const verifyRoute = shipped.split("\n").findIndex((l) => l.includes("grpc:"));
    expect(verifyRoute).toBeGreaterThan(0);
    const lines = shipped.split("\n");
    const indent = lines[verifyRoute]!.match(/^\s*/)![0];
    lines.splice(verifyRoute, 0, `${indent}http: { rewritePrefix: /x }`);
    const problems = problemsOf(lines.join("\n"));
    expect(problems.map((p) => [p.field, p.line])).toEqual([["routes[1].http", verifyRoute + 1]]);
    expect(problems[0]!.message).toContain("do not apply to a gRPC route");
  });

  test("a reference to an unset variable without default names the variable", () => {
    const problems = problemsOf(
      shipped.replace("${RPCAPP_ENDPOINTS:-127.0.0.1:5001,127.0.0.1:5002,127.0.0.1:5003}", "${RPCAPP_ENDPOINTS}"),
    );
    expect(problems[0]).toMatchObject({
      field: "upstreams.rpcapp.endpoints",
      message: expect.stringContaining("RPCAPP_ENDPOINTS is not set"),
    });
  });

  test("an unset variable's field has every list index, as every other problem's does", () => {
    const text = [
      "upstreams:",
      "  web: { protocol: http, endpoints: 127.0.0.1:1 }",
      "routes:",
      "  - name: a",
      "    path: /a",
      "    upstream: web",
      "    timeoutMs: ${T}",
    ].join("\n");
    expect(() => parseConfig(text, "t.yaml", {}, ROOT)).toThrow(
      /^invalid gateway config t\.yaml:\n {2}t\.yaml:7:16 routes\[0\]\.timeoutMs: environment variable T is not set/,
    );
    const fields = (yaml: string) => interpolateDocument(parseDocument(yaml), {}).map((p) => p.field);
    // A scalar in a mapping in a list, one directly in a list, in nested lists, and a top-level key.
    expect(fields("routes:\n  - name: a\n  - name: b\n    timeoutMs: ${T}\n")).toEqual(["routes[1].timeoutMs"]);
    expect(fields('trustedProxies: [10.0.0.0/8, "${P}"]\n')).toEqual(["trustedProxies[1]"]);
    expect(fields('m: [[x], [y, { k: [z, "${A}"] }]]\n')).toEqual(["m[1][1].k[1]"]);
    expect(fields('[[x, "${A}"]]\n')).toEqual(["[0][1]"]);
    expect(fields("file: ${F}\n")).toEqual(["file"]);
  });

  test("an unquoted ${VAR} inside { } or [ ] is named, with the first parse error, instead of a cascade of token errors", () => {
    const text = [
      "upstreams:",
      "  web: { protocol: http, endpoints: ${WEB:-127.0.0.1:8081} }",
      "routes:",
      "  - { name: a, path: /a, methods: [GET], upstream: web }",
    ].join("\n");
    const problems = problemsOf(text);
    expect(problems).toHaveLength(2);
    expect(problems[0]).toEqual({
      line: 2,
      column: 37,
      field: "",
      message:
        '${WEB:-127.0.0.1:8081} is inside a flow collection ({ … } or [ … ]), where YAML reads its braces as structure: write that entry in block style (key: ${WEB:-127.0.0.1:8081} on a line of its own), or quote it ("${WEB:-127.0.0.1:8081}") if the value is text — quoted, it stays a string, never a number or a boolean',
    });
    expect(problems[1]!.line).toBe(2);
    // Quoted, the same mapping loads, and the reference is replaced.
    const quoted = text.replace("${WEB:-127.0.0.1:8081}", '"${WEB:-127.0.0.1:8081}"');
    expect(parseConfig(quoted, "t.yaml", { WEB: "10.0.0.1:80" }, ROOT).upstreams.get("web")!.endpoints).toEqual([
      "10.0.0.1:80",
    ]);
    // A parse error with no such reference before it keeps the parser's own messages; so does one
    // that starts elsewhere than at the reference (`see { ${X}` is a plain scalar, valid YAML).
    expect(problemsOf("upstreams:\n  web: { protocol: http, endpoints: [a, b }\n")[0]!.message).not.toContain(
      "flow collection",
    );
    expect(
      problemsOf("upstreams:\n  web: see { ${X}\nroutes: [a, b }\n")
        .map((p) => p.message)
        .join("\n"),
    ).not.toContain("flow collection");
  });

  test("the scan for references in flow collections follows quotes, comments and brackets", () => {
    const find = (text: string) => unquotedReferenceInFlow(text, text.length)?.reference;
    expect(find("a: [x, ${A}]\n")).toBe("${A}");
    expect(find("a: { b: [c, { d: ${B:-1} }] }\n")).toBe("${B:-1}");
    expect(find("a: ${A}\nb: { c: 1 }\n")).toBeUndefined(); // block style: plain text
    expect(find("a: { b: \"${A}\", c: '${B}' }\n")).toBeUndefined(); // quoted
    expect(find("a: { b: 'it''s ${A}' }\n")).toBeUndefined(); // '' inside single quotes
    expect(find("a: { b: 1 } # { ${A}\n")).toBeUndefined(); // a comment
    expect(find("a: [don't, ${A}]\n")).toBe("${A}"); // an apostrophe in plain text opens no quote
    // Only what starts before the given offset counts.
    const late = "a: [x]\nb: [${B}]\n";
    expect(unquotedReferenceInFlow(late, late.indexOf("b:"))).toBeUndefined();
  });

  test("an unquoted IPv6 endpoint is named, with the quoting that fixes it", () => {
    const text =
      "upstreams:\n  w:\n    protocol: http\n    endpoints: [::1]:3001\nroutes:\n  - { name: r, path: /r, upstream: w }\n";
    const problems = problemsOf(text);
    expect(problems[0]).toMatchObject({ line: 4 });
    expect(problems[0]!.message).toContain("[::1]:3001 is an IPv6 endpoint");
    expect(problems[0]!.message).toContain('quote it ("[::1]:3001")');
    const quoted = text.replace("[::1]:3001", '"[::1]:3001"');
    expect(parseConfig(quoted, "routes.yaml", {}).upstreams.get("w")?.endpoints).toEqual(["[::1]:3001"]);
  });

  test("YAML syntax errors carry the line", () => {
    const problems = problemsOf("upstreams:\n  webapp: [\n");
    expect(problems[0]!.line).toBeGreaterThan(0);
  });

  test("the error message names file:line:column and field", () => {
    try {
      parseConfig(shipped.replace("upstream: rpcapp", "upstream: nowhere"), "gateway/routes.yaml", {}, ROOT);
      throw new Error("not rejected");
    } catch (err) {
      expect((err as Error).message).toMatch(
        /gateway\/routes\.yaml:\d+:\d+ routes\[1\]\.upstream: no upstream named "nowhere"/,
      );
    }
  });

  test("a missing file is a ConfigError, not a crash", () => {
    expect(() => loadConfig("/nonexistent/routes.yaml")).toThrow(ConfigError);
  });

  test("invalid trusted proxy CIDRs are rejected", () => {
    expect(problemsOf(`${shipped}\ntrustedProxies: ["10.0.0.0/8", "not-an-ip"]\n`)[0]).toMatchObject({
      field: "trustedProxies[1]",
    });
  });
});

describe("what a file or its environment cannot do to the loader", () => {
  const minimal = (extra = "", route = "{ name: r, path: /r, upstream: a }") =>
    `upstreams:\n  a: { protocol: http, endpoints: "127.0.0.1:1"${extra} }\nroutes:\n  - ${route}\n`;

  test('an environment value is text, never YAML: no crash on `[`, no `#…` cut off; numbers and booleans keep their type; `:-` with nothing is ""', () => {
    for (const value of ["[127.0.0.1:3001", "a: b: c", '"5000', "{", "*x"]) {
      // As the endpoints' text: checked like any other, never a YAML parse error thrown out.
      let outcome = "loaded";
      try {
        parseConfig(shipped, "routes.yaml", { WEBAPP_ENDPOINTS: value }, ROOT);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        outcome = (err as ConfigError).problems[0]!.field;
      }
      expect([value, outcome]).toEqual([value, "upstreams.webapp.endpoints"]);
    }
    const text =
      'upstreams:\n  a:\n    protocol: http\n    endpoints: "127.0.0.1:1"\n    healthCheck:\n      path: ${HC}\nroutes:\n  - { name: r, path: /r, upstream: a }\n';
    const config = parseConfig(text, "routes.yaml", { HC: "/ready #v2" }, ROOT);
    expect(config.upstreams.get("a")!.healthCheck.path).toBe("/ready #v2");
    const typed = parseConfig(
      text.replace("    healthCheck:", "    timeoutMs: ${T}\n    healthCheck:"),
      "routes.yaml",
      { T: "1500", HC: "/h" },
      ROOT,
    );
    expect(typed.upstreams.get("a")!.timeoutMs).toBe(1500);
    const doc = parseDocument("empty: ${A:-}\nflag: ${B:-false}\nword: ${C:-null}\n");
    expect(interpolateDocument(doc, {})).toEqual([]);
    expect(doc.toJS()).toEqual({ empty: "", flag: false, word: "null" });
  });

  test('YAML aliases: one to no anchor, a "billion laughs", a cycle — each a ConfigError at its line, none a crash', () => {
    expect(problemsOf(minimal(", healthCheck: *nope"))[0]).toMatchObject({
      line: 2,
      field: "upstreams.a.healthCheck",
      message: expect.stringContaining("Unresolved alias"),
    });
    let laughs = "x0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
    for (let i = 1; i < 6; i++)
      laughs += `x${i}: &a${i} [${Array(10)
        .fill(`*a${i - 1}`)
        .join(", ")}]\n`;
    expect(problemsOf(`${laughs}${minimal()}`)[0]!.message).toContain("at most 1000 aliases");
    expect(problemsOf(`trustedProxies: &t [*t]\n${minimal()}`)[0]!.message).toContain(
      "a value that contains itself (a cyclic YAML alias)",
    );
  });

  test("a bad upstream name says what names look like; a pattern keeps its case; a huge value is cut in the message", () => {
    const named = problemsOf(
      minimal().replace("  a: {", "  9bad name: {").replace("upstream: a", 'upstream: "9bad name"'),
    );
    expect(named[0]!.message).toBe('"9bad name" is not a valid name here: names match ^[A-Za-z0-9_.-]+$');
    const huge = problemsOf(`${minimal()}limits: ${JSON.stringify(Array(5000).fill(7))}\n`);
    expect(huge[0]!.message.length).toBeLessThan(400);
    expect(huge[0]!.message).toMatch(/… \(\d+ characters\)/);
  });

  test("a route path no request can match is refused, with what to write instead", () => {
    for (const [path, why] of [
      ["/a//b", 'write "/a/b"'],
      ["/d/../e", 'write "/e"'],
      ["/%61dmin", 'write "/admin"'],
      ['"/q?x=1"', "no query"],
      ['"/a b"', "whitespace"],
      ['"//"', "never matches"],
    ] as const) {
      const [problem] = problemsOf(minimal("", `{ name: r, path: ${path}, upstream: a }`));
      expect([path, problem!.field, problem!.message]).toEqual([path, "routes[0].path", expect.stringContaining(why)]);
    }
    expect(() =>
      parseConfig(minimal("", "{ name: r, path: /ok/, upstream: a }"), "routes.yaml", {}, ROOT),
    ).not.toThrow();
  });

  test("a relative proto path is looked up in the working directory first, then beside the routes file", () => {
    const dir = mkdtempSync(join(tmpdir(), "config-paths-"));
    try {
      mkdirSync(join(dir, "protos"));
      writeFileSync(join(dir, "protos", "b.proto"), readFileSync(resolve(ROOT, "proto/userverify.proto")));
      const text = `upstreams:\n  g: { protocol: grpc, endpoints: "127.0.0.1:1", proto: protos/b.proto }\nroutes:\n  - { name: v, path: /v, methods: [POST], upstream: g, grpc: { method: userverify.UserVerify/VerifyUser } }\n`;
      // Beside the file (the working directory, the repository, has no protos/b.proto).
      expect(parseConfig(text, "routes.yaml", {}, dir).upstreams.get("g")!.protoRoot).toBeDefined();
      // The working directory's (the repository's proto/userverify.proto) wins over one beside
      // the file: this one defines an Extra method the repository's does not.
      mkdirSync(join(dir, "proto"));
      const extra = readFileSync(resolve(ROOT, "proto/userverify.proto"), "utf8").replace(
        /service UserVerify \{/,
        "service UserVerify {\n  rpc Extra (VerifyRequest) returns (VerifyReply);",
      );
      expect(extra).toContain("rpc Extra");
      writeFileSync(join(dir, "proto", "userverify.proto"), extra);
      const extraRoute = text
        .replace("protos/b.proto", "proto/userverify.proto")
        .replace("UserVerify/VerifyUser", "UserVerify/Extra");
      expect(problemsIn(extraRoute, dir)[0]!.message).toContain("userverify.UserVerify/Extra is not defined");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("routes.yaml tls blocks", () => {
  const dir = mkdtempSync(join(tmpdir(), "config-tls-"));
  let pki: LocalPki;
  beforeAll(async () => {
    pki = await ensureLocalPki(dir);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  test("the shipped file turns every tls block on with TLS=true and reads the files from TLS_DIR", () => {
    const config = parseConfig(shipped, "routes.yaml", { TLS: "true", TLS_DIR: dir }, ROOT);
    expect(config.upstreams.get("webapp")?.tls).toMatchObject({
      paths: { ca: pki.caFile, cert: pki.certFile("gateway-client"), key: pki.keyFile("gateway-client") },
      serverName: "localhost",
    });
    expect(config.upstreams.get("rpcapp")?.tls?.material.cert).toBe(
      readFileSync(pki.certFile("gateway-client"), "utf8"),
    );
    expect(config.tls?.certificates.map((c) => c.paths.cert)).toEqual([pki.certFile("edge")]);
    // Off by default: nothing is read, so make dev needs no certificates.
    const plain = parseConfig(shipped, "routes.yaml", { TLS_DIR: "/nonexistent" }, ROOT);
    expect(plain.tls).toBeUndefined();
    expect(plain.upstreams.get("webapp")?.tls).toBeUndefined();
  });

  test("a missing file, or a key that is not the certificate's, is reported at its line and field", () => {
    const text = shipped.replace("${TLS_DIR:-.data/tls}/edge.key", `${dir}/webapp.key`);
    const problems = problemsOf(text, { TLS: "true", TLS_DIR: "/nonexistent" });
    const lineOf = (needle: string) => text.split("\n").findIndex((l) => l.includes(needle)) + 1;
    expect(problems).toContainEqual(
      expect.objectContaining({
        field: "upstreams.webapp.tls.ca",
        line: lineOf("ca: ${TLS_DIR:-.data/tls}/ca.crt"),
        message: "CA bundle /nonexistent/ca.crt: ENOENT",
      }),
    );
    const mismatch = problemsOf(text.replace("${TLS_DIR:-.data/tls}/edge.crt", `${dir}/edge.crt`), {
      TLS: "true",
      TLS_DIR: dir,
    });
    expect(mismatch).toEqual([
      expect.objectContaining({
        field: "tls.certificates[0].key",
        line: lineOf(`${dir}/webapp.key`),
        message: `private key ${dir}/webapp.key is not the key of certificate ${dir}/edge.crt`,
      }),
    ]);
  });

  test("hsts.preload without includeSubDomains or a year's max-age is refused, as hstspreload.org would", () => {
    const withHsts = (hsts: string) =>
      shipped.replace("tls:\n  enabled: ${TLS:-false}\n", `tls:\n  enabled: \${TLS:-false}\n  hsts: ${hsts}\n`);
    expect(withHsts("{}")).not.toBe(shipped);
    const env = { TLS: "true", TLS_DIR: dir };
    const messages = (hsts: string) => {
      try {
        parseConfig(withHsts(hsts), "routes.yaml", env, ROOT);
        return [];
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        return err.problems.map((p) => `${p.field}: ${p.message}`);
      }
    };
    expect(messages("{ maxAgeSec: 300, preload: true }")).toEqual([
      "tls.hsts.preload: preload needs includeSubDomains: true (hstspreload.org refuses a site without it)",
      "tls.hsts.preload: preload needs maxAgeSec of at least 31536000 (a year), not 300: hstspreload.org refuses less",
    ]);
    expect(messages("{ maxAgeSec: 31536000, includeSubDomains: true, preload: true }")).toEqual([]);
    expect(messages("{ maxAgeSec: 300 }")).toEqual([]);
  });

  test("several endpoint host names need a serverName; an SNI name given twice is refused", () => {
    const severalHosts = shipped.replace(
      "endpoints: ${WEBAPP_ENDPOINTS:-127.0.0.1:3001,127.0.0.1:3002,127.0.0.1:3003}",
      "endpoints: a.example:1,b.example:1",
    );
    const withoutName = severalHosts.replace("      serverName: localhost\n", "");
    expect(problemsOf(withoutName, { TLS: "true", TLS_DIR: dir })).toEqual([
      expect.objectContaining({ field: "upstreams.webapp.tls", message: expect.stringContaining("serverName") }),
    ]);
    const twice = shipped.replace(
      "      key: ${TLS_DIR:-.data/tls}/edge.key\n",
      "      key: ${TLS_DIR:-.data/tls}/edge.key\n      serverNames: [api.example]\n    - cert: ${TLS_DIR}/webapp.crt\n      key: ${TLS_DIR}/webapp.key\n      serverNames: [API.example]\n",
    );
    expect(problemsOf(twice, { TLS: "true", TLS_DIR: dir })).toEqual([
      expect.objectContaining({
        field: "tls.certificates[1].serverNames",
        message: '"API.example" is already another certificate\'s',
      }),
    ]);
  });
});
