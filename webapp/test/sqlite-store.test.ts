import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore } from "../src/store/index.ts";
import { openSqliteStore } from "../src/store/sqlite.ts";

const dir = mkdtempSync(join(tmpdir(), "webapp-store-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("SQLite project store", () => {
  test("creates, gets and lists projects in id order (:memory:)", async () => {
    const store = openSqliteStore(":memory:");
    const a = await store.create("alpha");
    const b = await store.create("beta");
    expect(b.id).toBeGreaterThan(a.id);
    expect(await store.get(a.id)).toEqual(a);
    expect(await store.get(9999)).toBeNull();
    expect(await store.list({ limit: 10, after: 0 })).toEqual([a, b]);
    expect(await store.list({ limit: 1, after: a.id })).toEqual([b]);
    await store.ping();
    await store.close();
  });

  test("creates the database's folder and uses WAL", async () => {
    const path = join(dir, "nested", "deeper", "webapp.sqlite");
    const store = openSqliteStore(path);
    await store.create("x");
    expect(existsSync(path)).toBe(true);
    const db = new Database(path, { readonly: true });
    expect(db.query("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" });
    db.close();
    await store.close();
  });

  test("two stores on one file (two replicas) see each other's projects and never share an id", async () => {
    const path = join(dir, "shared.sqlite");
    const one = openSqliteStore(path);
    const two = openSqliteStore(path);
    const created = await Promise.all(Array.from({ length: 50 }, (_, i) => (i % 2 ? one : two).create(`p${i}`)));
    expect(new Set(created.map((p) => p.id)).size).toBe(50);
    const fromOne = created.find((p) => p.title === "p1")!;
    expect(await two.get(fromOne.id)).toEqual(fromOne);
    expect(await one.list({ limit: 100, after: 0 })).toHaveLength(50);
    await one.close();
    await two.close();
  });

  test("a closed store refuses work instead of hanging", async () => {
    const store = openSqliteStore(":memory:");
    await store.close();
    await expect(store.ping()).rejects.toThrow();
    await expect(store.create("late")).rejects.toThrow();
  });
});

describe("store factory", () => {
  test("opens SQLite for STORE=sqlite", async () => {
    const store = openStore({ kind: "sqlite", sqlitePath: ":memory:" });
    expect((await store.create("via factory")).title).toBe("via factory");
    await store.close();
  });

  test("fails clearly for a store it does not know, naming STORE and the choices", () => {
    expect(() => openStore({ kind: "redis", sqlitePath: ":memory:" })).toThrow('STORE="redis" is not a store webapp knows; use one of: sqlite');
    expect(() => openStore({ kind: "postgres", sqlitePath: ":memory:" })).toThrow(/STORE="postgres"/);
  });
});
