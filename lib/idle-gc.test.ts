import { describe, expect, test } from "bun:test";
import { IdleGc } from "./idle-gc.ts";

/** A collector on a scripted clock: each `spell(ms, cpuMs)` advances time and CPU, then ticks. */
function scripted(options: { minGapMs?: number } = {}) {
  let [nowMs, cpuUs] = [0, 0];
  const collectedAt: number[] = [];
  const gc = new IdleGc({
    intervalMs: 250,
    busyShare: 0.1,
    idleShare: 0.02,
    minGapMs: options.minGapMs ?? 5_000,
    now: () => nowMs,
    cpuUsage: () => ({ user: cpuUs, system: 0 }),
    collect: () => {
      collectedAt.push(nowMs);
      nowMs += 10; // the collection's own time
      cpuUs += 10_000;
    },
  });
  const spell = (ms: number, cpuMs: number) => {
    nowMs += ms;
    cpuUs += cpuMs * 1000;
    return gc.tick();
  };
  return { gc, spell, collectedAt, at: () => nowMs };
}

describe("IdleGc", () => {
  test("collects once after start-up, on the first idle spell", () => {
    const { spell, collectedAt } = scripted();
    expect(spell(250, 1)).toBe(true);
    expect(collectedAt).toEqual([250]);
    for (let i = 0; i < 40; i++) expect(spell(250, 1)).toBe(false);
    expect(collectedAt).toHaveLength(1);
  });

  test("never collects under steady load, once when it ends, and not again while idle", () => {
    const { spell, collectedAt, at } = scripted({ minGapMs: 0 });
    spell(250, 1); // start-up's collection
    collectedAt.length = 0;
    for (let i = 0; i < 40; i++) expect(spell(250, 200)).toBe(false); // 80 % of a CPU
    const loadEnded = at();
    expect(spell(250, 2)).toBe(true);
    expect(collectedAt).toEqual([loadEnded + 250]);
    for (let i = 0; i < 20; i++) expect(spell(250, 0)).toBe(false);
  });

  test("a spell between idle and busy neither collects nor arms it", () => {
    const { spell, collectedAt } = scripted({ minGapMs: 0 });
    spell(250, 1);
    // 5 % of a CPU: light traffic, health checks. Not busy enough to arm, not idle enough to collect.
    for (let i = 0; i < 20; i++) expect(spell(250, 12.5)).toBe(false);
    for (let i = 0; i < 20; i++) expect(spell(250, 0)).toBe(false);
    expect(collectedAt).toHaveLength(1);
    // Armed by load, a 5 % spell still waits for a quieter one.
    spell(250, 100);
    expect(spell(250, 12.5)).toBe(false);
    expect(spell(250, 1)).toBe(true);
  });

  test("bursts closer than minGapMs: the collection waits for the gap, then runs on the next idle spell", () => {
    const { spell, collectedAt } = scripted({ minGapMs: 5_000 });
    spell(250, 1); // at 250
    spell(250, 200); // busy again at once
    expect(spell(250, 0)).toBe(false); // idle, but 500 ms after the last collection
    let ticks = 0;
    while (!spell(250, 0)) ticks++;
    expect(collectedAt).toHaveLength(2);
    expect(collectedAt[1]! - collectedAt[0]!).toBeGreaterThanOrEqual(5_000);
    expect(ticks).toBeLessThan(5_000 / 250);
  });

  test("the collection's own CPU time does not count as the next spell's load", () => {
    const { spell } = scripted({ minGapMs: 0 });
    spell(250, 1);
    spell(250, 100);
    expect(spell(250, 0)).toBe(true);
    // collect() spent 10 ms of CPU in 10 ms: had it been counted, this spell would arm it again.
    expect(spell(250, 0)).toBe(false);
    expect(spell(250, 0)).toBe(false);
  });

  test("on the real clock: a busy spell of allocation, then the collector runs within a few ticks of it ending", async () => {
    const collected: number[] = [];
    const gc = new IdleGc({
      intervalMs: 50,
      minGapMs: 0,
      collect: () => {
        Bun.gc(true);
        collected.push(performance.now());
      },
    }).start();
    try {
      await Bun.sleep(200); // start-up's collection, if this process was busy enough to arm it
      collected.length = 0;
      // ~400 ms of allocation, yielding so the timer can see the spell.
      const busyUntil = performance.now() + 400;
      let keep: unknown[] = [];
      while (performance.now() < busyUntil) {
        const spinUntil = performance.now() + 20;
        while (performance.now() < spinUntil) keep.push({ n: keep.length, s: `x${keep.length}` });
        keep = keep.slice(-1000);
        await new Promise((resolve) => setImmediate(resolve));
        expect(collected).toEqual([]); // never while busy
      }
      const idleFrom = performance.now();
      const deadline = idleFrom + 2_000;
      while (collected.length === 0 && performance.now() < deadline) await Bun.sleep(25);
      expect(collected).toHaveLength(1);
      expect(collected[0]! - idleFrom).toBeLessThan(1_000);
      expect(gc.collections).toBeGreaterThanOrEqual(1);
    } finally {
      gc.stop();
    }
  });
});
