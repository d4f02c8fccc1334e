/**
 * Loaded into the gateway by bench/census.ts (`bun --preload`), never by the gateway itself: on
 * the first SIGUSR2 a full collection and a count of the heap's objects by type; on the next, the
 * count again, and the difference written as JSON to CENSUS_OUT. With no collection in between,
 * the difference is every object the requests of that window allocated, garbage included.
 */
import { heapStats } from "bun:jsc";
import { renameSync, writeFileSync } from "node:fs";

const out = process.env.CENSUS_OUT;
if (!out) throw new Error("census-hook: CENSUS_OUT is not set");
let before: ReturnType<typeof heapStats> | undefined;

function write(value: unknown): void {
  writeFileSync(`${out}.tmp`, JSON.stringify(value));
  renameSync(`${out}.tmp`, out!);
}

process.on("SIGUSR2", () => {
  if (!before) {
    Bun.gc(true);
    before = heapStats();
    write({ started: true });
    return;
  }
  const after = heapStats();
  const counts: Record<string, number> = {};
  const types = new Set([...Object.keys(after.objectTypeCounts), ...Object.keys(before.objectTypeCounts)]);
  for (const type of types) {
    const delta = (after.objectTypeCounts[type] ?? 0) - (before.objectTypeCounts[type] ?? 0);
    if (delta !== 0) counts[type] = delta;
  }
  write({ objects: after.objectCount - before.objectCount, heapBytes: after.heapSize - before.heapSize, counts });
  before = undefined;
});
