/**
 * scripts/stack/listener-handover.ts on a stand-in for /proc/sys/net/ipv4/tcp_migrate_req (a temp
 * file): `make dev` sets it when it may and says so, leaves it alone when told, and names the
 * fix when the kernel has no such setting. The real setting is exercised by
 * gateway-handover.e2e.test.ts.
 */
import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  describeHandover,
  ensureTcpMigrateReq,
  gatewayHandoverWarning,
  handoverModeFromEnv,
  TCP_MIGRATE_REQ_FIX,
} from "../stack/listener-handover.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function setting(value: string | undefined): string {
  const dir = mkdtempSync(join(tmpdir(), "portico-sysctl-"));
  dirs.push(dir);
  const file = join(dir, "tcp_migrate_req");
  if (value !== undefined) writeFileSync(file, value);
  return file;
}

test("0 and permitted: set to 1, reported as set by make dev", () => {
  const file = setting("0\n");
  const h = ensureTcpMigrateReq("auto", file);
  expect(h).toEqual({ migrates: true, how: "set by make dev" });
  expect(readFileSync(file, "utf8").trim()).toBe("1");
  expect(describeHandover(h)).toContain("queued connections move to the others");
  expect(gatewayHandoverWarning(file)).toBeUndefined();
});

test("already 1: left as it is", () => {
  expect(ensureTcpMigrateReq("auto", setting("1\n"))).toEqual({ migrates: true, how: "already set" });
});

test("DEV_TCP_MIGRATE_REQ=off: the kernel is left alone, and the fix is named", () => {
  const file = setting("0\n");
  const h = ensureTcpMigrateReq("off", file);
  expect(h).toEqual({
    migrates: false,
    why: expect.stringContaining("DEV_TCP_MIGRATE_REQ=off"),
    fix: TCP_MIGRATE_REQ_FIX,
  });
  expect(readFileSync(file, "utf8").trim()).toBe("0");
  expect(describeHandover(h)).toContain(`to fix: ${TCP_MIGRATE_REQ_FIX}`);
  expect(gatewayHandoverWarning(file)).toContain("ECONNRESET on new connections");
});

test("a kernel without the setting: said so, with no fix to run", () => {
  const h = ensureTcpMigrateReq("auto", setting(undefined));
  expect(h.migrates).toBe(false);
  expect(describeHandover(h)).toContain("5.14");
});

test("DEV_TCP_MIGRATE_REQ takes auto (the default) or off", () => {
  expect(handoverModeFromEnv({})).toBe("auto");
  expect(handoverModeFromEnv({ DEV_TCP_MIGRATE_REQ: "off" })).toBe("off");
  expect(() => handoverModeFromEnv({ DEV_TCP_MIGRATE_REQ: "yes" })).toThrow(/must be auto .* or off/);
});
