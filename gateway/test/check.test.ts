/** `gateway --check <routes.yaml>` (make check-config): the real entry point, spawned, on a good and a bad file. */
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runGateway } from "./run-entry.ts";

const dir = mkdtempSync(join(tmpdir(), "portico-check-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const check = (...args: string[]) => runGateway(["--check", ...args]);
const gateway = (...args: string[]) => runGateway(args, {}, 10_000);

describe("gateway --check", () => {
  test("the shipped routes.yaml: exit 0, prints ok, starts nothing", async () => {
    const { code, stdout, stderr } = await check("gateway/routes.yaml");
    expect({ code, stdout: stdout.trim(), stderr }).toEqual({ code: 0, stdout: "ok", stderr: "" });
  });

  test("a bad file: exit 78 (EX_CONFIG) with every problem as file:line:column field: message", async () => {
    const file = join(dir, "routes.yaml");
    writeFileSync(
      file,
      [
        "upstreams:",
        "  web: { protocol: http, endpoints: '127.0.0.1:1' }",
        "routes:",
        "  - name: r",
        "    path: /r",
        "    methds: [GET]",
        "    upstream: web",
        "    timeoutMs: soon",
      ].join("\n"),
    );
    const { code, stdout, stderr } = await check(file);
    expect(code).toBe(78);
    expect(stdout).toBe("");
    expect(stderr).toContain(`${file}:6:5 routes[0].methds: unknown field (did you mean "methods"?)`);
    expect(stderr).toContain(`${file}:8:16 routes[0].timeoutMs: `);
  });

  test("--check=FILE is --check FILE", async () => {
    const { code, stdout } = await gateway("--check=gateway/routes.yaml");
    expect([code, stdout.trim()]).toEqual([0, "ok"]);
  });

  test("without a file, or with an argument the gateway does not take: the usage line and exit 64, nothing started", async () => {
    for (const args of [
      ["--check"],
      ["--check="],
      ["--chek", "gateway/routes.yaml"],
      ["gateway/routes.yaml"],
      ["--check", "a", "b"],
    ]) {
      const { code, stdout, stderr } = await gateway(...args);
      expect([args, code, stdout, stderr.trim()]).toEqual([
        args,
        64,
        "",
        "usage: gateway [--check <routes.yaml>]  (settings come from the environment: docs/configuration.md)",
      ]);
    }
  });
});
