/**
 * The fallback ledger's arithmetic on a clock the test moves (no Redis): what it writes back for a
 * bucket the `local` fallback decided. The same cases against a real Redis, through the limiter,
 * are in ratelimit-fallback.test.ts.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { FallbackLedger } from "../src/ratelimit/fallback-ledger.ts";
import { type GcraCheck, MemoryGcra } from "../src/ratelimit/gcra.ts";

let nowUs = 1_000_000_000;
const memory = new MemoryGcra(() => nowUs, 60_000);
afterAll(() => memory.close());

let keys = 0;
/** A ledger, and one bucket (1 ms interval, burst 12) decided by the fallback at a given share. */
function setup(seedMs = 0) {
  const ledger = new FallbackLedger(memory);
  const shared: GcraCheck[] = [{ key: `k${++keys}`, intervalUs: 1000, burst: 12 }];
  memory.remember(shared[0]!.key, seedMs);
  const admit = (share: number) => {
    ledger.record(shared, share);
    const local = shared.map((c) => ({ ...c, intervalUs: c.intervalUs * share, burst: Math.floor(c.burst / share) }));
    const { allowed } = memory.take(local);
    if (allowed) ledger.charge(shared);
    return allowed;
  };
  const owed = () => ledger.take(100).writebacks[0];
  return { ledger, shared, admit, owed };
}

describe("the fallback ledger", () => {
  test("with one share throughout it owes (local TAT − seed TAT) ÷ share: the local debt in shared time", () => {
    const { admit, owed, shared } = setup(3);
    const seedTat = memory.peek(shared[0]!.key)!;
    expect([admit(2), admit(2), admit(2)]).toEqual([true, true, true]);
    nowUs += 5000; // the seed (3 ms) is spent, then 2 ms earned back at ½
    const localTat = memory.peek(shared[0]!.key)!;
    expect(owed()).toMatchObject({ seedUs: 0, advanceUs: Math.max(0, localTat - nowUs) / 2 });
    expect(Math.max(0, localTat - nowUs) / 2).toBe(2000);
    expect(localTat - seedTat).toBe(6000); // 3 requests × 2 ms locally
  });

  test("a change of share mid-outage: each request costs one interval, whatever the share it was admitted at", () => {
    const { admit, owed } = setup();
    expect(admit(3)).toBe(true); // 3 ms locally
    const asOnly = Array.from({ length: 20 }, () => admit(1)).filter(Boolean).length;
    expect(asOnly).toBe(12 - 3); // the local bucket is 3 ms ahead of a 12 ms burst
    expect(owed()).toMatchObject({ seedUs: 0, advanceUs: (1 + 9) * 1000 });
  });

  test("a request whose call went unanswered is charged only if Redis did not apply it", () => {
    const { ledger, shared, owed } = setup();
    ledger.record(shared, 1);
    ledger.unanswered(7, () => ledger.charge(shared));
    ledger.record(shared, 1);
    ledger.unanswered(8, () => ledger.charge(shared));
    ledger.settle(new Set([7])); // Redis applied 7: counted there
    expect(owed()).toMatchObject({ advanceUs: 1000 });
  });

  test("written back, a bucket takes Redis's figure locally; one decided again meanwhile keeps its own", () => {
    const { ledger, shared, admit } = setup();
    const key = shared[0]!.key;
    admit(2);
    const { writebacks } = ledger.take(100);
    admit(2); // decided again before the batch was answered: written again later, without a seed
    ledger.writtenBack(writebacks, [9]);
    expect(memory.peek(key)).toBe(nowUs + 4000);
    const again = ledger.take(100).writebacks;
    expect(again).toEqual([{ key, seedUs: 0, advanceUs: 1000, intervalUs: 1000, burst: 12 }]);
    ledger.writtenBack(again, [9]);
    expect(memory.peek(key)).toBe(nowUs + 9000);
  });
});
