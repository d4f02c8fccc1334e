import { describe, expect, test } from "bun:test";
import { type ExportResult, ExportResultCode } from "@opentelemetry/core";
import { type ExportSender, RenewingSender } from "./renewing-sender.ts";

/** A sender whose exports finish when the test says; it records what happened to it, by name. */
function slowSender(name: string, events: string[]) {
  const pending: (() => void)[] = [];
  const sender: ExportSender<string> = {
    export(batch, done: (result: ExportResult) => void) {
      events.push(`${name} export ${batch}`);
      pending.push(() => done({ code: ExportResultCode.SUCCESS }));
    },
    async forceFlush() {
      events.push(`${name} flush`);
    },
    async shutdown() {
      // As the library's delegate does: in-flight exports first, then the transport.
      while (pending.length > 0) await Bun.sleep(5);
      events.push(`${name} shut down`);
    },
  };
  const finishAll = () => {
    for (const finish of pending.splice(0)) finish();
  };
  return { sender, finishAll };
}

/** A RenewingSender whose every sender is a slowSender named after its version, starting at v1. */
function renewingSlowSenders() {
  const events: string[] = [];
  const made: ReturnType<typeof slowSender>[] = [];
  const renewing = new RenewingSender<string, string>((version) => {
    const s = slowSender(version, events);
    made.push(s);
    return s.sender;
  }, "v1");
  return { events, made, renewing };
}

describe("RenewingSender", () => {
  test("a renewal sends new batches through a new sender; the old one finishes its export, then shuts down", async () => {
    const { events, made, renewing } = renewingSlowSenders();
    const results: string[] = [];
    renewing.export("a", (r) => results.push(`a ${r.code}`));
    renewing.renew("v2");
    renewing.export("b", (r) => results.push(`b ${r.code}`));
    await Bun.sleep(20);
    // v1 still has "a" in flight: it has not shut down.
    expect(events).toEqual(["v1 export a", "v2 export b"]);
    made[0]!.finishAll();
    await Bun.sleep(20);
    expect(events).toContain("v1 shut down");
    made[1]!.finishAll();
    await renewing.shutdown();
    expect(results.sort()).toEqual([`a ${ExportResultCode.SUCCESS}`, `b ${ExportResultCode.SUCCESS}`]);
    expect(events.at(-1)).toBe("v2 shut down");
    // After shutdown a renewal makes nothing new.
    renewing.renew("v3");
    expect(made).toHaveLength(2);
  });

  test("shutdown waits for a replaced sender still finishing its exports", async () => {
    const { events, made, renewing } = renewingSlowSenders();
    renewing.export("a", () => {});
    renewing.renew("v2");
    let done = false;
    const stopping = renewing.shutdown().then(() => {
      done = true;
    });
    await Bun.sleep(30);
    expect(done).toBe(false);
    made[0]!.finishAll();
    await stopping;
    expect(events).toEqual(["v1 export a", "v2 shut down", "v1 shut down"]);
  });
});
