/**
 * gRPC deadline propagation: the upstream must learn how long the gateway will wait, so it can
 * stop work nobody waits for. A spy gRPC server (grpc-js, in this process, behind a real gateway
 * process) records the deadline each call arrives with (call.getDeadline(), set from the
 * `grpc-timeout` header) and its metadata. Checked:
 *   - one try: the deadline is what is left of the route's timeoutMs;
 *   - a per-try timeout: the deadline is the per-try timeout;
 *   - a retry: the second try's deadline is what the first try left of the route timeout.
 *
 * The client and the spy server run in this process, so their clocks agree: the deadline is read
 * as an instant (epoch ms). The route's budget starts when the gateway dispatches, after the
 * client sent and before the upstream receives, so the deadline must lie between
 * sent + timeout − (the gateway's work before dispatch: body read, JSON checks; MARGIN_MS, generous
 * for 2 shared cores) and received + timeout (+ grpc-timeout's millisecond rounding). The time left
 * at the upstream is printed too: it also pays connection set-up and the trip over loopback.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as grpc from "@grpc/grpc-js";
import { startUserVerifyServer } from "./grpc-upstream.ts";
import { stopAll } from "../../scripts/stack/testing/processes.ts";
import { type Gateway, removeTempFiles, startGateway, writeRoutes } from "./resilience-harness.ts";

const ROUTE_TIMEOUT_MS = 3_000;
const PER_TRY_TIMEOUT_MS = 800;
const FIRST_TRY_MS = 1_000;
const MARGIN_MS = 200;
/** grpc-timeout is an integer count of a unit; the deadline may round up by at most 1 ms. */
const ROUNDING_MS = 2;

interface SeenCall {
  token: string;
  /** The call's deadline, epoch ms (Infinity: none). */
  deadlineAt: number;
  /** Deadline minus the time the handler started, in ms. */
  remainingMs: number;
  metadata: Record<string, string>;
}

const seen: SeenCall[] = [];
let server: grpc.Server;
let gw: Gateway;
const ports: number[] = [];

function verifyUser(
  call: grpc.ServerUnaryCall<{ id: number; token: string }, { message: string }>,
  callback: grpc.sendUnaryData<{ message: string }>,
): void {
  const deadline = call.getDeadline();
  const deadlineAt = deadline instanceof Date ? deadline.getTime() : Number(deadline);
  const remainingMs = deadlineAt - Date.now();
  const metadata = Object.fromEntries(
    Object.entries(call.metadata.getMap()).map(([k, v]) => [k, typeof v === "string" ? v : "(binary)"]),
  );
  const token = call.request.token;
  const earlier = seen.filter((c) => c.token === token).length;
  seen.push({ token, deadlineAt, remainingMs, metadata });
  // `retry`: the first try is slow and fails with UNAVAILABLE, so the gateway retries elsewhere.
  if (token === "retry" && earlier === 0) {
    setTimeout(() => callback({ code: grpc.status.UNAVAILABLE, details: "spy: try again" }), FIRST_TRY_MS);
    return;
  }
  callback(null, { message: `ok ${token}` });
}

beforeAll(async () => {
  // Two ports: a retry goes to another endpoint (dispatch.ts), so the spy listens as two.
  const started = await startUserVerifyServer(verifyUser, 2);
  server = started.server;
  ports.push(...started.ports);
  const method = "userverify.UserVerify/VerifyUser";
  const routes = writeRoutes(
    "grpc-deadline",
    `upstreams:
  spy:
    protocol: grpc
    proto: proto/userverify.proto
    endpoints: "${ports.map((p) => `127.0.0.1:${p}`).join(",")}"
    healthCheck: { enabled: false }
    outlierDetection: { consecutiveFailures: 1000 }
    circuitBreaker: { consecutiveFailures: 1000 }
routes:
  - { name: one-try, path: /deadline/one-try, match: exact, methods: [POST], upstream: spy, timeoutMs: ${ROUTE_TIMEOUT_MS}, grpc: { method: ${method} }, retry: { attempts: 1 } }
  - { name: per-try, path: /deadline/per-try, match: exact, methods: [POST], upstream: spy, timeoutMs: ${ROUTE_TIMEOUT_MS}, grpc: { method: ${method}, idempotent: true }, retry: { attempts: 2, perTryTimeoutMs: ${PER_TRY_TIMEOUT_MS} } }
  - { name: retry, path: /deadline/retry, match: exact, methods: [POST], upstream: spy, timeoutMs: ${ROUTE_TIMEOUT_MS}, grpc: { method: ${method}, idempotent: true }, retry: { attempts: 2, budgetPercent: 100, minRetriesPerSecond: 100 } }
`,
  );
  gw = await startGateway("gateway-grpc-deadline", routes);
}, 30_000);

afterAll(async () => {
  await stopAll();
  server?.forceShutdown();
  removeTempFiles();
});

async function call(route: string, token: string): Promise<{ status: number; body: unknown; sentAt: number }> {
  const sentAt = Date.now();
  const res = await fetch(`${gw.url}/deadline/${route}`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-request-id": `deadline-${token}` },
    body: JSON.stringify({ id: 7, token }),
    signal: AbortSignal.timeout(ROUTE_TIMEOUT_MS + 2_000),
  });
  return { status: res.status, body: await res.json(), sentAt };
}

const callsWith = (token: string) => seen.filter((c) => c.token === token);

describe("gRPC deadline propagation", () => {
  test("one try: the upstream's deadline is the route timeout from when the gateway took the request", async () => {
    const budgets: number[] = [];
    // A few calls: the first also pays the connection set-up, which comes out of the budget.
    for (let i = 0; i < 5; i++) {
      const answer = await call("one-try", "one-try");
      expect(answer.status).toBe(200);
      budgets.push(callsWith("one-try").at(-1)!.deadlineAt - answer.sentAt);
    }
    const remaining = callsWith("one-try").map((c) => Math.round(c.remainingMs));
    console.log(
      `route timeout ${ROUTE_TIMEOUT_MS} ms → deadline − client send (ms): ${budgets.join(", ")}; left when the upstream got the call (ms): ${remaining.join(", ")}`,
    );
    // The deadline lies between "client send + timeout − the gateway's pre-dispatch work" and
    // "upstream receipt + timeout": never more than the route's timeout, never much less.
    for (const budget of budgets) expect(budget).toBeGreaterThan(ROUTE_TIMEOUT_MS - MARGIN_MS);
    for (const left of remaining) expect(left).toBeLessThanOrEqual(ROUTE_TIMEOUT_MS + ROUNDING_MS);
    // The request id and client address travel as metadata (server.ts #transcodeGrpc).
    const md = callsWith("one-try")[0]!.metadata;
    console.log("metadata at the upstream:", md);
    expect(md["x-request-id"]).toBe("deadline-one-try");
    expect(md["x-forwarded-for"]).toBe("127.0.0.1");
  });

  test("a per-try timeout: the upstream's deadline is the per-try timeout, not the route's", async () => {
    const answer = await call("per-try", "per-try");
    expect(answer.status).toBe(200);
    const [first] = callsWith("per-try");
    console.log(
      `perTryTimeoutMs ${PER_TRY_TIMEOUT_MS} → deadline left at the upstream: ${Math.round(first!.remainingMs)} ms, deadline − client send ${first!.deadlineAt - answer.sentAt} ms`,
    );
    expect(first!.remainingMs).toBeLessThanOrEqual(PER_TRY_TIMEOUT_MS + ROUNDING_MS);
    // From the client's send, as in the one-try case: how long the call took to reach the upstream
    // (a busy machine) does not count against it.
    expect(first!.deadlineAt - answer.sentAt).toBeGreaterThan(PER_TRY_TIMEOUT_MS - MARGIN_MS);
  });

  test("a retry: the second try keeps the route's deadline (what the first try left of it)", async () => {
    const answer = await call("retry", "retry");
    expect(answer.status).toBe(200);
    const tries = callsWith("retry");
    console.log(
      `retry after a ${FIRST_TRY_MS} ms UNAVAILABLE: deadline − client send ${tries.map((t) => t.deadlineAt - answer.sentAt).join(" → ")} ms; ` +
        `left when the upstream got each try ${tries.map((t) => Math.round(t.remainingMs)).join(" → ")} ms`,
    );
    expect(tries).toHaveLength(2);
    const [first, second] = tries as [SeenCall, SeenCall];
    expect(first.deadlineAt - answer.sentAt).toBeGreaterThan(ROUTE_TIMEOUT_MS - MARGIN_MS);
    // One deadline for the whole request: the retry is not given a fresh route timeout (that would
    // put it FIRST_TRY_MS later). grpc-timeout is relative, so each try's deadline at the server
    // moves by that try's own trip (connection set-up included, measured up to ~40 ms): half of
    // FIRST_TRY_MS still tells the two apart.
    expect(Math.abs(second.deadlineAt - first.deadlineAt)).toBeLessThan(FIRST_TRY_MS / 2);
    expect(second.remainingMs).toBeLessThanOrEqual(ROUTE_TIMEOUT_MS - FIRST_TRY_MS + ROUNDING_MS);
  });
});
