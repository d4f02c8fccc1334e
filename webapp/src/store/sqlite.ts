/**
 * ProjectStore on bun:sqlite. Under `make dev` three webapp processes open the same file, so:
 * - WAL lets readers and the single writer proceed together;
 * - `busy_timeout` makes a writer wait for the lock instead of failing with SQLITE_BUSY
 *   (https://www.sqlite.org/pragma.html#pragma_busy_timeout) — briefly: bun:sqlite is synchronous,
 *   so the wait blocks the whole process (probes included). A lock held longer (another program's
 *   open transaction on the file) is StoreUnavailableError: a 503 with Retry-After, not a 500;
 * - `AUTOINCREMENT` makes SQLite take ids from one counter in the file (sqlite_sequence) under the
 *   write lock, so ids are unique across processes and never reused
 *   (https://www.sqlite.org/autoinc.html).
 * At most `maxProjects` rows: the insert reads the id counter in the same statement, under the
 * same write lock, so replicas inserting together cannot pass the limit. Projects are never
 * deleted, so the counter is the row count, read in O(1) where `count(*)` scans the table.
 * - `journal_size_limit`: a checkpoint cannot pass another replica's open read, so while one is held
 *   the WAL grows past its usual ~4 MB, and SQLite never shrinks the file by itself. With the
 *   limit, the first write after a checkpoint that has caught up truncates it.
 */
import { Database } from "bun:sqlite";
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { type ListOptions, type Project, type ProjectStore, StoreFullError, StoreUnavailableError } from "./store.ts";

/**
 * How long a write waits for another process's write lock before it fails. The replicas' own
 * writes hold it for microseconds; the wait blocks the event loop, so it is kept short.
 */
export const BUSY_TIMEOUT_MS = 250;
/**
 * How long opening the store may wait on the file's lock: replicas starting together switch the
 * file to WAL and create the table at once (one takes the lock, the others wait), and on a busy
 * machine that takes longer than a request may wait. Nothing is served yet, so blocking is fine.
 */
export const OPEN_BUSY_TIMEOUT_MS = 10_000;
/** The size the WAL file is cut back to once a checkpoint has caught up (the auto-checkpoint's ~4 MB). */
export const WAL_SIZE_LIMIT_BYTES = 4 * 1024 * 1024;

interface ProjectRow {
  id: number;
  title: string;
  created_at: string;
}

const toProject = (row: ProjectRow): Project => ({ id: row.id, title: row.title, createdAt: row.created_at });

/** Opens (creating if needed) the database at `path`, or an in-memory one for `:memory:`. */
export function openSqliteStore(path: string, opts: { maxProjects?: number } = {}): ProjectStore {
  const maxProjects = opts.maxProjects ?? Number.MAX_SAFE_INTEGER;
  if (path !== ":memory:") mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path, { create: true, strict: true });
  // busy_timeout first: the statements below may already wait on a replica starting beside us.
  db.exec(`PRAGMA busy_timeout = ${OPEN_BUSY_TIMEOUT_MS}`);
  whileBusy(OPEN_BUSY_TIMEOUT_MS, () => {
    db.exec("PRAGMA journal_mode = WAL");
    // NORMAL is safe from corruption in WAL mode; a power cut may lose only the last commits.
    db.exec("PRAGMA synchronous = NORMAL");
    db.exec(`PRAGMA journal_size_limit = ${WAL_SIZE_LIMIT_BYTES}`);
    db.exec(`CREATE TABLE IF NOT EXISTS projects (
      id INTEGER PRIMARY KEY AUTOINCREMENT,
      title TEXT NOT NULL,
      created_at TEXT NOT NULL
    )`);
  });
  db.exec(`PRAGMA busy_timeout = ${BUSY_TIMEOUT_MS}`);

  // No row back: `max` projects have been created.
  const insert = db.prepare<ProjectRow, { title: string; created_at: string; max: number }>(
    `INSERT INTO projects (title, created_at) SELECT $title, $created_at
     WHERE coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'projects'), 0) < $max
     RETURNING id, title, created_at`,
  );
  const selectOne = db.prepare<ProjectRow, { id: number }>("SELECT id, title, created_at FROM projects WHERE id = $id");
  const selectPage = db.prepare<ProjectRow, { after: number; limit: number }>(
    "SELECT id, title, created_at FROM projects WHERE id > $after ORDER BY id LIMIT $limit",
  );
  const selectOneValue = db.prepare("SELECT 1");

  return {
    async create(title: string): Promise<Project> {
      // all(), not get(): get() leaves an INSERT … RETURNING un-reset, and the statement then holds
      // a read snapshot until the next insert, so no checkpoint could ever restart the WAL (it grew
      // by ~10 MB per 1,000 projects, without bound).
      const [row] = unlessLocked(() => insert.all({ title, created_at: new Date().toISOString(), max: maxProjects }));
      if (!row) throw new StoreFullError(maxProjects);
      return toProject(row);
    },
    async get(id: number): Promise<Project | null> {
      const row = unlessLocked(() => selectOne.get({ id }));
      return row ? toProject(row) : null;
    },
    async list({ limit, after }: ListOptions): Promise<Project[]> {
      return unlessLocked(() => selectPage.all({ after, limit })).map(toProject);
    },
    async ping(): Promise<void> {
      unlessLocked(() => selectOneValue.get());
    },
    async close(): Promise<void> {
      // Unfinalized statements keep a "closed" connection alive and working (sqlite3_close_v2).
      for (const statement of [insert, selectOne, selectPage, selectOneValue]) statement.finalize();
      db.close();
    },
  };
}

/**
 * Runs `setUp` again while it fails with SQLITE_BUSY, for up to `budgetMs`: SQLite answers BUSY at
 * once, without waiting out busy_timeout, where waiting could deadlock (two connections each
 * holding a read lock and asking for the write lock, as replicas switching a new file to WAL do).
 */
function whileBusy(budgetMs: number, setUp: () => void): void {
  const deadline = performance.now() + budgetMs;
  for (;;) {
    try {
      setUp();
      return;
    } catch (err) {
      if (!sqliteCode(err)?.startsWith("SQLITE_BUSY") || performance.now() > deadline) throw err;
      Bun.sleepSync(5 + Math.random() * 20);
    }
  }
}

/** The SQLite result code of an error bun:sqlite threw ("SQLITE_BUSY_SNAPSHOT", …), if it has one. */
function sqliteCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/** Runs a statement; the database locked past BUSY_TIMEOUT_MS (SQLITE_BUSY, SQLITE_LOCKED) is StoreUnavailableError. */
function unlessLocked<T>(run: () => T): T {
  try {
    return run();
  } catch (err) {
    const code = sqliteCode(err);
    if (code?.startsWith("SQLITE_BUSY") || code?.startsWith("SQLITE_LOCKED"))
      throw new StoreUnavailableError(`the SQLite database is locked by another connection (${code})`, { cause: err });
    throw err;
  }
}
