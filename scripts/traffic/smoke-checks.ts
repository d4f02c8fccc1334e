/**
 * The smoke test's checks against a running gateway: the seed's two requests (trailing slashes
 * included), reading back the created project, and load spread — N requests per route must be
 * answered by every replica behind it, as each response's x-served-by header tells.
 */
import { isDeepStrictEqual } from "node:util";
import { chalk } from "zx";

export interface CheckResult {
  check: string;
  ok: boolean;
  detail: string;
}

export interface SmokeOptions {
  /** Replicas expected behind each route (SMOKE_REPLICAS). */
  replicas: number;
  /** Requests per route for the spread check (SMOKE_REQUESTS). */
  requests: number;
  timeoutMs: number;
}

interface Answer {
  status: number;
  body: unknown;
  servedBy: string | null;
  gateway: string | null;
}

async function send(
  base: string,
  method: string,
  path: string,
  body: unknown,
  timeoutMs: number,
  quiet = false,
): Promise<Answer> {
  const url = `${base}${path}`;
  if (!quiet) console.log(`${chalk.dim("→")} ${method} ${url}${body === undefined ? "" : ` ${JSON.stringify(body)}`}`);
  const res = await fetch(url, {
    method,
    headers: body === undefined ? {} : { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: keep the text for the message
  }
  return {
    status: res.status,
    body: parsed,
    servedBy: res.headers.get("x-served-by"),
    gateway: res.headers.get("x-gateway"),
  };
}

function describe(a: Answer): string {
  const body = typeof a.body === "string" ? a.body : JSON.stringify(a.body);
  return `${a.status} ${body.length > 200 ? `${body.slice(0, 200)}…` : body}`;
}

/** Runs `fn`; a thrown error (connection refused, timeout) becomes a failed check, not a crash. */
async function guarded(check: string, fn: () => Promise<Omit<CheckResult, "check">>): Promise<CheckResult> {
  try {
    return { check, ...(await fn()) };
  } catch (err) {
    return { check, ok: false, detail: (err as Error).message };
  }
}

const SEED_TITLE = "An awesome project";
const SEED_VERIFY = { id: 121, token: "a$$" };

export async function runSmoke(
  base: string,
  opts: SmokeOptions,
): Promise<{ results: CheckResult[]; gateways: Set<string> }> {
  const results: CheckResult[] = [];
  const gateways = new Set<string>();
  const note = (a: Answer) => a.gateway && gateways.add(a.gateway);

  let projectId: number | undefined;
  results.push(
    await guarded("POST /projects/ creates the seed project", async () => {
      const a = await send(base, "POST", "/projects/", { title: SEED_TITLE }, opts.timeoutMs);
      note(a);
      const body = a.body as { id?: unknown; url?: unknown };
      const ok =
        (a.status === 201 || a.status === 200) && Number.isInteger(body?.id) && body?.url === `Project-${SEED_TITLE}`;
      if (ok) projectId = body.id as number;
      return {
        ok,
        detail: ok ? describe(a) : `expected 201 {"id":<integer>,"url":"Project-${SEED_TITLE}"}, got ${describe(a)}`,
      };
    }),
  );

  results.push(
    await guarded("GET /projects/<id> reads it back", async () => {
      if (projectId === undefined) return { ok: false, detail: "skipped: no project was created" };
      const a = await send(base, "GET", `/projects/${projectId}`, undefined, opts.timeoutMs);
      note(a);
      const body = a.body as { id?: unknown; url?: unknown };
      const ok = a.status === 200 && body?.id === projectId && body?.url === `Project-${SEED_TITLE}`;
      return {
        ok,
        detail: ok
          ? `${describe(a)} (from ${a.servedBy ?? "?"})`
          : `expected 200 with id ${projectId}, got ${describe(a)} from ${a.servedBy ?? "?"}`,
      };
    }),
  );

  results.push(
    await guarded("POST /verify/ verifies user 121", async () => {
      const a = await send(base, "POST", "/verify/", SEED_VERIFY, opts.timeoutMs);
      note(a);
      const ok = a.status === 200 && isDeepStrictEqual(a.body, { message: "Verified: 121" });
      return { ok, detail: ok ? describe(a) : `expected 200 {"message":"Verified: 121"}, got ${describe(a)}` };
    }),
  );

  for (const [service, method, path, body] of [
    ["webapp", "GET", "/projects", undefined],
    ["rpcapp", "POST", "/verify/", SEED_VERIFY],
  ] as const) {
    results.push(
      await guarded(`${opts.requests} × ${method} ${path} reach every ${service} replica`, async () => {
        console.log(
          `${chalk.dim("→")} ${opts.requests} × ${method} ${base}${path}${body ? ` ${JSON.stringify(body)}` : ""}`,
        );
        const seen = new Map<string, number>();
        const failures: string[] = [];
        for (let i = 0; i < opts.requests; i++) {
          const a = await send(base, method, path, body, opts.timeoutMs, true);
          note(a);
          if (a.status < 200 || a.status > 299) failures.push(describe(a));
          else if (a.servedBy) seen.set(a.servedBy, (seen.get(a.servedBy) ?? 0) + 1);
          else failures.push(`${a.status} without an x-served-by header`);
        }
        const spread =
          [...seen]
            .sort()
            .map(([who, n]) => `${who} ×${n}`)
            .join(", ") || "none";
        if (failures.length > 0)
          return {
            ok: false,
            detail: `${failures.length} of ${opts.requests} failed (first: ${failures[0]}); served by ${spread}`,
          };
        const ok = seen.size >= opts.replicas;
        return { ok, detail: `${seen.size} of ${opts.replicas} replicas answered: ${spread}` };
      }),
    );
  }
  return { results, gateways };
}

/** The pass/fail table, one line per check. */
export function formatTable(results: CheckResult[]): string {
  const width = Math.max(...results.map((r) => r.check.length));
  const lines = results.map(
    (r) => `${r.ok ? chalk.green("PASS") : chalk.red("FAIL")}  ${r.check.padEnd(width)}  ${r.detail}`,
  );
  return [`${"".padEnd(4)}  ${"check".padEnd(width)}  detail`, ...lines].join("\n");
}
