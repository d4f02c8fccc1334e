/**
 * What every ProjectStore must do, as one set of tests each store's test file runs against its
 * own backing (sqlite-store.test.ts, redis-store.test.ts): the routes rely on nothing else.
 */
import { describe, expect, test } from "bun:test";
import { type ProjectStore, StoreFullError } from "../src/store/store.ts";

export interface StoreUnderTest {
  /** A store on new, empty data. */
  open(): Promise<ProjectStore>;
  /** Two stores on the same new data, as two replicas open it (with MAX_PROJECTS when given). */
  openPair(opts?: { maxProjects?: number }): Promise<[ProjectStore, ProjectStore]>;
}

export function describeProjectStoreContract(name: string, under: StoreUnderTest, opts: { skip?: boolean } = {}): void {
  describe.skipIf(opts.skip === true)(`${name} project store: the ProjectStore contract`, () => {
    test("creates, gets and lists projects in id order; an unknown id is null", async () => {
      const store = await under.open();
      const a = await store.create("alpha");
      const b = await store.create("beta");
      expect(b.id).toBeGreaterThan(a.id);
      expect(await store.get(a.id)).toEqual(a);
      expect(await store.get(b.id + 1000)).toBeNull();
      expect(await store.list({ limit: 10, after: 0 })).toEqual([a, b]);
      expect(await store.list({ limit: 1, after: a.id })).toEqual([b]);
      await store.ping();
      await store.close();
    });

    test("ids are positive integers in creation order; createdAt is the creation time in ISO 8601 UTC", async () => {
      const store = await under.open();
      const before = Date.now();
      const created = [];
      for (const title of ["one", "two", "three"]) created.push(await store.create(title));
      const after = Date.now();
      const ids = created.map((p) => p.id);
      for (const id of ids) expect(Number.isSafeInteger(id) && id > 0).toBe(true);
      expect(ids).toEqual([...ids].sort((x, y) => x - y));
      for (const p of created) {
        expect(new Date(p.createdAt).toISOString()).toBe(p.createdAt);
        expect(Date.parse(p.createdAt)).toBeGreaterThanOrEqual(before - 1);
        expect(Date.parse(p.createdAt)).toBeLessThanOrEqual(after);
      }
      await store.close();
    });

    test("a title comes back exactly as it was given: unicode, quotes, backslashes, JSON-looking text", async () => {
      const store = await under.open();
      const titles = [
        "Ünïcödé ✓ 🚀 漢字",
        'quotes " and \\ backslash',
        '{"id": 999, "title": "nested"}',
        "</script>\n\ttabbed",
        "x".repeat(200),
      ];
      const created = await Promise.all(titles.map((t) => store.create(t)));
      expect(created.map((p) => p.title)).toEqual(titles);
      for (const p of created) expect(await store.get(p.id)).toEqual(p);
      expect((await store.list({ limit: 10, after: 0 })).map((p) => p.title).sort()).toEqual([...titles].sort());
      await store.close();
    });

    test("lists ascending ids greater than `after`, at most `limit`; past the end, an empty page", async () => {
      const store = await under.open();
      const created = [];
      for (let i = 1; i <= 7; i++) created.push(await store.create(`p${i}`));
      const ids = created.map((p) => p.id);
      expect((await store.list({ limit: 3, after: 0 })).map((p) => p.id)).toEqual(ids.slice(0, 3));
      expect((await store.list({ limit: 3, after: ids[2]! })).map((p) => p.id)).toEqual(ids.slice(3, 6));
      expect((await store.list({ limit: 100, after: ids[5]! })).map((p) => p.id)).toEqual(ids.slice(6));
      expect(await store.list({ limit: 100, after: ids[6]! })).toEqual([]);
      await store.close();
    });

    test("two stores on one backing (two replicas) see each other's projects and never share an id", async () => {
      const [one, two] = await under.openPair();
      const created = await Promise.all(Array.from({ length: 50 }, (_, i) => (i % 2 ? one : two).create(`p${i}`)));
      expect(new Set(created.map((p) => p.id)).size).toBe(50);
      const fromOne = created.find((p) => p.title === "p1")!;
      expect(await two.get(fromOne.id)).toEqual(fromOne);
      const listed = await one.list({ limit: 100, after: 0 });
      expect(listed.map((p) => p.id)).toEqual(created.map((p) => p.id).sort((x, y) => x - y));
      await one.close();
      await two.close();
    });

    test("a closed store refuses work instead of hanging", async () => {
      const store = await under.open();
      await store.close();
      await expect(store.ping()).rejects.toThrow();
      await expect(store.create("late")).rejects.toThrow();
    });
    test("MAX_PROJECTS: two replicas creating at once stop at exactly the maximum; the rest fail with StoreFullError", async () => {
      const [a, b] = await under.openPair({ maxProjects: 25 });
      const results = await Promise.allSettled(
        Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).create(`quota ${i}`)),
      );
      const created = results.filter((r) => r.status === "fulfilled");
      const refused = results.flatMap((r) => (r.status === "rejected" ? [r.reason] : []));
      expect(created).toHaveLength(25);
      expect(refused).toHaveLength(15);
      for (const err of refused) {
        expect(err).toBeInstanceOf(StoreFullError);
        expect((err as StoreFullError).maxProjects).toBe(25);
      }
      // Full is not broken: reads go on.
      expect(await a.list({ limit: 100, after: 0 })).toHaveLength(25);
      await a.close();
      await b.close();
    });
  });
}
