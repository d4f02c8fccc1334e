import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore } from "../src/store/index.ts";
import { openSqliteStore } from "../src/store/sqlite.ts";
import { describeProjectStoreContract } from "./store-contract.ts";

const dir = mkdtempSync(join(tmpdir(), "webapp-store-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

let files = 0;
describeProjectStoreContract("SQLite", {
  open: async () => openSqliteStore(":memory:"),
  openPair: async (opts) => {
    const path = join(dir, `shared-${++files}.sqlite`);
    return [openSqliteStore(path, opts), openSqliteStore(path, opts)];
  },
});

describe("SQLite project store", () => {
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
});

describe("store factory", () => {
  test("opens SQLite for STORE=sqlite", async () => {
    const store = openStore({ kind: "sqlite", sqlitePath: ":memory:" });
    expect((await store.create("via factory")).title).toBe("via factory");
    await store.close();
  });

  test("fails clearly for a store it does not know, naming STORE and the choices", () => {
    expect(() => openStore({ kind: "postgres", sqlitePath: ":memory:" })).toThrow(
      'STORE="postgres" is not a store webapp knows; use one of: sqlite, redis',
    );
  });
});
