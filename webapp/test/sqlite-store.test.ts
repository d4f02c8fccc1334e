import { afterAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import { existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openStore } from "../src/store/index.ts";
import { BUSY_TIMEOUT_MS, openSqliteStore, WAL_SIZE_LIMIT_BYTES } from "../src/store/sqlite.ts";
import { StoreUnavailableError } from "../src/store/store.ts";
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

  test("the WAL stays at the auto-checkpoint's size however many projects are created", async () => {
    const path = join(dir, "wal-steady.sqlite");
    const store = openSqliteStore(path);
    let peak = 0;
    for (let i = 0; i < 6000; i++) {
      const project = await store.create("t".repeat(900));
      expect(await store.get(project.id)).not.toBeNull();
      if (i % 500 === 0) peak = Math.max(peak, statSync(`${path}-wal`).size);
    }
    // 6,000 projects of ~1 KB: ~60 MB of WAL if nothing could ever restart it.
    expect(peak).toBeLessThanOrEqual(WAL_SIZE_LIMIT_BYTES + 64 * 1024);
    await store.close();
  });

  test("a WAL that grew while a replica held a read open is cut back once checkpoints catch up", async () => {
    const path = join(dir, "wal-growth.sqlite");
    const store = openSqliteStore(path);
    await store.create("first");
    // Another replica in the middle of a read: no checkpoint can pass its snapshot.
    const reader = new Database(path);
    reader.exec("BEGIN");
    reader.query("SELECT count(*) FROM projects").get();
    const title = "t".repeat(900);
    for (let i = 0; i < 8000; i++) await store.create(title);
    const grown = statSync(`${path}-wal`).size;
    expect(grown).toBeGreaterThan(2 * WAL_SIZE_LIMIT_BYTES);
    reader.exec("COMMIT");
    reader.close();
    for (let i = 0; i < 2000; i++) await store.create(title);
    expect(statSync(`${path}-wal`).size).toBeLessThanOrEqual(WAL_SIZE_LIMIT_BYTES);
    await store.close();
  });

  test("opening waits for a replica that holds the new file's lock longer than a request would wait", async () => {
    const path = join(dir, "opening.sqlite");
    // Another process creates the file and holds its write lock for 3× BUSY_TIMEOUT_MS, as a
    // replica starting beside this one does on a busy machine (it failed "database is locked").
    const holder = Bun.spawn(
      [
        process.execPath,
        "-e",
        `const { Database } = require("bun:sqlite");
         const db = new Database(${JSON.stringify(path)}, { create: true });
         db.exec("PRAGMA journal_mode = WAL");
         db.exec("BEGIN EXCLUSIVE");
         db.exec("CREATE TABLE IF NOT EXISTS projects (id INTEGER PRIMARY KEY AUTOINCREMENT, title TEXT NOT NULL, created_at TEXT NOT NULL)");
         console.log("locked until", Date.now() + ${BUSY_TIMEOUT_MS * 3});
         setTimeout(() => { db.exec("COMMIT"); db.close(); }, ${BUSY_TIMEOUT_MS * 3});`,
      ],
      { stdout: "pipe", stderr: "inherit" },
    );
    const reader = holder.stdout.getReader();
    const said = new TextDecoder().decode((await reader.read()).value);
    const lockedUntil = Number(/locked until (\d+)/.exec(said)?.[1]);
    expect(lockedUntil).toBeGreaterThan(0);
    const store = openSqliteStore(path);
    // Opened once the holder let go (epoch ms on both sides, cut to the ms: 2 ms of rounding), not
    // at its first BUSY_TIMEOUT_MS — however late this process read the holder's line.
    expect(Date.now()).toBeGreaterThanOrEqual(lockedUntil - 2);
    expect((await store.create("first")).title).toBe("first");
    await store.close();
    expect(await holder.exited).toBe(0);
  });

  test("a write lock held by another program: StoreUnavailableError (503) after BUSY_TIMEOUT_MS, not a 500 after seconds", async () => {
    const path = join(dir, "locked.sqlite");
    const store = openSqliteStore(path);
    await store.create("before");
    const other = new Database(path);
    other.exec("BEGIN IMMEDIATE");
    other.exec("INSERT INTO projects (title, created_at) VALUES ('held', 'now')");
    const started = performance.now();
    const err = await store.create("blocked").catch((e: unknown) => e);
    const waited = performance.now() - started;
    expect(err).toBeInstanceOf(StoreUnavailableError);
    expect(String((err as Error).message)).toContain("SQLITE_BUSY");
    expect(waited).toBeGreaterThanOrEqual(BUSY_TIMEOUT_MS * 0.8);
    // Readers are not blocked by a writer in WAL mode.
    expect((await store.get(1))?.title).toBe("before");
    other.exec("ROLLBACK");
    other.close();
    expect((await store.create("after")).title).toBe("after");
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
