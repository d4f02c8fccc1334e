import { describe, expect, test } from "bun:test";
import { IdleGc } from "./idle-gc.ts";

/** A collector on a scripted clock: each `spell(ms, cpuMs)` advances time and CPU, then ticks. */
function scripted(options: { minGapMs?: number; shrinkAfterMs?: number; startupMs?: number } = {}) {
  let [nowMs, cpuUs] = [0, 0];
  const collectedAt: number[] = [];
  const shrunkAt: number[] = [];
  const step = (list: number[]) => () => {
    list.push(nowMs);
    nowMs += 10; // the step's own time
    cpuUs += 10_000;
  };
  const gc = new IdleGc({
    intervalMs: 250,
    busyShare: 0.1,
    idleShare: 0.02,
    minGapMs: options.minGapMs ?? 5_000,
    shrinkAfterMs: options.shrinkAfterMs ?? 30_000,
    startupMs: options.startupMs ?? 2_000,
    now: () => nowMs,
    cpuUsage: () => ({ user: cpuUs, system: 0 }),
    collect: step(collectedAt),
    shrink: step(shrunkAt),
  });
  const spell = (ms: number, cpuMs: number) => {
    nowMs += ms;
    cpuUs += cpuMs * 1000;
    return gc.tick();
  };
  return { gc, spell, collectedAt, shrunkAt, at: () => nowMs };
}

describe("IdleGc", () => {
  test("shrinks once after start-up, on the first idle spell, and then rests", () => {
    const { spell, collectedAt, shrunkAt } = scripted();
    expect(spell(250, 1)).toBe("shrink");
    expect(shrunkAt).toEqual([250]);
    for (let i = 0; i < 200; i++) expect(spell(250, 1)).toBeUndefined(); // 50 s of quiet
    expect(shrunkAt).toHaveLength(1);
    expect(collectedAt).toHaveLength(0);
  });

  test("after a burst: a collection at once, the shrink (compiled code) only after shrinkAfterMs of quiet", () => {
    const { spell, collectedAt, shrunkAt, at } = scripted({ minGapMs: 0, shrinkAfterMs: 30_000 });
    spell(250, 1); // start-up's shrink
    for (let i = 0; i < 8; i++) spell(250, 200); // 2 s of load
    const loadEnded = at();
    expect(spell(250, 1)).toBe("collect");
    expect(collectedAt).toEqual([loadEnded + 250]);
    let step: string | undefined;
    while (!(step = spell(250, 1)));
    expect(step).toBe("shrink");
    expect(shrunkAt[1]! - loadEnded).toBeGreaterThanOrEqual(30_000);
    expect(shrunkAt[1]! - loadEnded).toBeLessThan(30_000 + 500);
    for (let i = 0; i < 200; i++) expect(spell(250, 0)).toBeUndefined();
  });

  test("load from the start (a pod in service at once): its first quiet spell collects, it does not shrink", () => {
    const { spell, collectedAt, shrunkAt, at } = scripted({ startupMs: 2_000 });
    for (let i = 0; i < 16; i++) spell(250, 200); // 4 s of load, start-up included
    const loadEnded = at();
    expect(spell(250, 1)).toBe("collect");
    expect(shrunkAt).toHaveLength(0);
    let step: string | undefined;
    while (!(step = spell(250, 1)));
    expect(step).toBe("shrink");
    expect(shrunkAt[0]! - loadEnded).toBeGreaterThanOrEqual(30_000);
    expect(collectedAt).toHaveLength(1);
  });

  test("bursts closer together than shrinkAfterMs never lose their compiled code", () => {
    const { spell, collectedAt, shrunkAt } = scripted({ minGapMs: 5_000, shrinkAfterMs: 30_000 });
    spell(250, 1);
    // Ten minutes of 1 s bursts every 10 s: a collection after each, never a shrink.
    for (let burst = 0; burst < 60; burst++) {
      for (let i = 0; i < 4; i++) spell(250, 200);
      for (let i = 0; i < 36; i++) spell(250, 1);
    }
    expect(shrunkAt).toHaveLength(1); // start-up's
    expect(collectedAt.length).toBe(60);
  });

  test("never collects under steady load, once when it ends, and not again while idle", () => {
    const { spell, collectedAt, at } = scripted({ minGapMs: 0 });
    spell(250, 1); // start-up's shrink
    for (let i = 0; i < 40; i++) expect(spell(250, 200)).toBeUndefined(); // 80 % of a CPU
    const loadEnded = at();
    expect(spell(250, 2)).toBe("collect");
    expect(collectedAt).toEqual([loadEnded + 250]);
    for (let i = 0; i < 20; i++) expect(spell(250, 0)).toBeUndefined();
  });

  test("a spell between idle and busy neither collects nor arms it", () => {
    const { spell, collectedAt, shrunkAt } = scripted({ minGapMs: 0 });
    spell(250, 1);
    // 5 % of a CPU: light traffic, health checks. Not busy enough to arm, not idle enough to collect.
    for (let i = 0; i < 20; i++) expect(spell(250, 12.5)).toBeUndefined();
    for (let i = 0; i < 20; i++) expect(spell(250, 0)).toBeUndefined();
    expect([collectedAt.length, shrunkAt.length]).toEqual([0, 1]);
    // Armed by load, a 5 % spell still waits for a quieter one.
    spell(250, 100);
    expect(spell(250, 12.5)).toBeUndefined();
    expect(spell(250, 1)).toBe("collect");
  });

  test("bursts closer than minGapMs: the collection waits for the gap, then runs on the next idle spell", () => {
    const { spell, collectedAt, shrunkAt } = scripted({ minGapMs: 5_000 });
    spell(250, 1); // start-up's shrink, at 250
    spell(250, 200); // busy again at once
    expect(spell(250, 0)).toBeUndefined(); // idle, but 500 ms after the last step
    let ticks = 0;
    while (!spell(250, 0)) ticks++;
    expect(collectedAt).toHaveLength(1);
    expect(collectedAt[0]! - shrunkAt[0]!).toBeGreaterThanOrEqual(5_000);
    expect(ticks).toBeLessThan(5_000 / 250);
  });

  test("the collection's own CPU time does not count as the next spell's load", () => {
    const { spell } = scripted({ minGapMs: 0 });
    spell(250, 1);
    spell(250, 100);
    expect(spell(250, 0)).toBe("collect");
    // collect() spent 10 ms of CPU in 10 ms: had it been counted, this spell would arm it again.
    expect(spell(250, 0)).toBeUndefined();
    expect(spell(250, 0)).toBeUndefined();
  });

  test("on the real clock: a busy spell of allocation, then the collector runs within a few ticks of it ending", async () => {
    const collected: number[] = [];
    const gc = new IdleGc({
      intervalMs: 50,
      minGapMs: 0,
      // `bun test` runs every file in one process: what earlier files left running (timers, the
      // collector's threads over their heap) is this process's CPU too. Wide bands keep the test
      // about the spell's shape, not about how quiet the rest of the process is.
      busyShare: 0.4,
      idleShare: 0.2,
      // No start-up window: were this file's first 200 ms not quiet, the first quiet spell after
      // the busy one would fall inside it and shrink (a no-op here) instead of collecting.
      startupMs: 0,
      collect: () => {
        Bun.gc(true);
        collected.push(performance.now());
      },
      shrink: () => {},
    }).start();
    try {
      await Bun.sleep(200); // the first quiet spell collects (the collector starts armed): not this test's
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
      // The collector's own threads can keep a busy machine's process above idleShare a while.
      const deadline = idleFrom + 5_000;
      while (collected.length === 0 && performance.now() < deadline) await Bun.sleep(25);
      expect(collected).toHaveLength(1);
      // Within the wait above (a busy machine's collector threads may hold it off that long).
      expect(collected[0]! - idleFrom).toBeLessThan(5_000);
      expect(gc.collections).toBeGreaterThanOrEqual(1);
    } finally {
      gc.stop();
    }
  });
});
