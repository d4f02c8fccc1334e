/**
 * Two real webapp processes sharing one SQLite file, as `make dev` runs three.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { spawnService, stopAll, stopProcess, waitFor } from "../../scripts/stack/testing/processes.ts";
import { postProject, type Replica, startReplicas } from "./replicas.ts";

const dir = mkdtempSync(join(tmpdir(), "webapp-e2e-"));
const MAX_BODY_BYTES = 4096;
/** Long enough to observe the draining state, short enough to keep the test quick. */
const DRAIN_DELAY_MS = 400;
let replicas: Replica[] = [];

beforeAll(async () => {
  // Started together on purpose: both open and initialise the same new file at once.
  replicas = await startReplicas("webapp-e2e", {
    DB_PATH: join(dir, "shared.sqlite"),
    MAX_BODY_BYTES: String(MAX_BODY_BYTES),
    DRAIN_DELAY_MS: String(DRAIN_DELAY_MS),
  });
});

afterAll(async () => {
  await stopAll();
  rmSync(dir, { recursive: true, force: true });
});

describe("two webapp replicas on one SQLite file", () => {
  test("a project created through one replica is read through the other", async () => {
    const [a, b] = replicas as [Replica, Replica];
    const created = await postProject(a.url, "An awesome project");
    expect(created.status).toBe(201);
    expect(created.headers.get("x-served-by")).toBe(a.instance);
    const project = await created.json();
    expect(project).toMatchObject({ url: "Project-An awesome project" });
    expect(Number.isInteger(project.id)).toBe(true);

    const read = await fetch(`${b.url}/projects/${project.id}`);
    expect(read.status).toBe(200);
    expect(read.headers.get("x-served-by")).toBe(b.instance);
    expect(await read.json()).toEqual(project);
  });

  test("100 concurrent creates split across both replicas get 100 distinct ids, all listed", async () => {
    const responses = await Promise.all(
      Array.from({ length: 100 }, (_, i) => postProject(replicas[i % 2]!.url, `concurrent ${i}`)),
    );
    expect(responses.map((r) => r.status)).toEqual(Array(100).fill(201));
    const ids = await Promise.all(responses.map(async (r) => ((await r.json()) as { id: number }).id));
    expect(new Set(ids).size).toBe(100);

    const listed = await (await fetch(`${replicas[1]!.url}/projects?limit=100&after=${Math.min(...ids) - 1}`)).json();
    expect(listed.items.map((p: { id: number }) => p.id)).toEqual([...ids].sort((x, y) => x - y));
  });

  test("the real server answers 405 with allow, and 413 to a chunked body over MAX_BODY_BYTES", async () => {
    const { url } = replicas[0]!;
    const wrongMethod = await fetch(`${url}/projects/`, { method: "DELETE" });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get("allow")).toBe("GET, HEAD, POST");
    expect(wrongMethod.headers.get("content-type")).toBe("application/problem+json");

    let chunks = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (chunks++ === 64) return controller.close();
        controller.enqueue(new Uint8Array(1024).fill(0x20));
      },
    });
    const tooLarge = await fetch(`${url}/projects`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
      duplex: "half",
    } as RequestInit);
    expect(tooLarge.status).toBe(413);
    expect(tooLarge.headers.get("content-type")).toBe("application/problem+json");
    expect((await tooLarge.json()).detail).toContain(`${MAX_BODY_BYTES} bytes`);
  });

  test("SIGTERM: readiness turns 503 while liveness stays 200 during the drain, then the process exits 0", async () => {
    // One replica at a time: each is looked at within its own drain (DRAIN_DELAY_MS), not in what
    // is left of it after the other's.
    const stopping: Promise<number>[] = [];
    for (const r of replicas) {
      stopping.push(stopProcess(r.proc, "SIGTERM"));
      await waitFor(`${r.instance} to report not ready`, async () => (await fetch(`${r.url}/readyz`)).status === 503, {
        proc: r.proc,
        timeoutMs: DRAIN_DELAY_MS * 5,
      });
      expect((await fetch(`${r.url}/healthz`)).status).toBe(200);
    }
    expect(await Promise.all(stopping)).toEqual([0, 0]);
    for (const r of replicas)
      await waitFor(
        `${r.instance}'s "stopped" log line`,
        () => r.proc.lines.some((l) => l.includes('"msg":"stopped"')),
        { timeoutMs: 2000 },
      );
  });
});

describe("shutdown", () => {
  test("a request in flight at SIGTERM is answered, and access-logged before the process exits", async () => {
    // The drain (300 ms) keeps the listener open a while after the signal, so a request sent 200 ms
    // before it is taken in even if a busy machine was slow to accept it; the answer (800 ms)
    // still comes well after the drain, so the exit has to wait for it.
    const [replica] = await startReplicas(
      "webapp-inflight",
      { DB_PATH: ":memory:", FAULT_DELAY_MS: "800", DRAIN_DELAY_MS: "300" },
      1,
    );
    const { proc, url } = replica!;
    const answer = fetch(`${url}/projects`, { headers: { "x-request-id": "inflight-1" } });
    await Bun.sleep(200);
    const exited = stopProcess(proc, "SIGTERM");
    expect((await answer).status).toBe(200);
    expect(await exited).toBe(0);
    const line = proc.lines.find((l) => l.includes('"msg":"request"') && l.includes('"request_id":"inflight-1"'));
    expect(line && JSON.parse(line)).toMatchObject({ status: 200, path: "/projects" });
  });
});

describe("start-up", () => {
  test("an unknown STORE stops the process with exit 1 and a message naming STORE", async () => {
    const proc = spawnService("webapp", { PORT: "0", STORE: "postgres", DB_PATH: ":memory:" }, "webapp-bad-store");
    expect(await proc.exited).toBe(1);
    await waitFor(
      "the start-up error line",
      () => proc.lines.some((l) => l.includes('STORE=\\"postgres\\" is not a store webapp knows')),
      { timeoutMs: 2000 },
    );
  });
});
