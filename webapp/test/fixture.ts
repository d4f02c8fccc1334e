/**
 * An in-process webapp for tests: `:memory:` store, captured log lines, requests through
 * `app.handle()` — no ports, no processes.
 */
import { expect } from "bun:test";
import type { ServiceIdentity } from "../../lib/env.ts";
import type { Fault } from "../../lib/fault.ts";
import { Lifecycle } from "../../lib/lifecycle.ts";
import { createLogger } from "../../lib/log.ts";
import { waitFor } from "../../scripts/stack/testing/processes.ts";
import { createApp } from "../src/app.ts";
import { openSqliteStore } from "../src/store/sqlite.ts";
import type { ProjectStore } from "../src/store/store.ts";

export const IDENTITY: ServiceIdentity = { service: "webapp", version: "1.2.3-test", instance: "webapp-test-1" };

export interface FixtureOptions {
  maxBodyBytes?: number;
  maxJsonDepth?: number;
  /** Leave the lifecycle not-ready, as during start-up. */
  starting?: boolean;
  store?: ProjectStore;
  /** Access-log /healthz and /readyz too (LOG_PROBES). */
  logProbes?: boolean;
  /** A release drill's injected errors and delay (lib/fault.ts). */
  fault?: Fault;
}

export type LogLine = Record<string, unknown>;

export function webappFixture(opts: FixtureOptions = {}) {
  const logs: LogLine[] = [];
  const log = createLogger(IDENTITY, { destination: { write: (line: string) => void logs.push(JSON.parse(line)) } });
  const lifecycle = new Lifecycle({ drainDelayMs: 0, shutdownTimeoutMs: 5000, log, exit: () => {} });
  if (!opts.starting) lifecycle.markReady();
  const store = opts.store ?? openSqliteStore(":memory:");
  const app = createApp({
    store,
    identity: IDENTITY,
    log,
    lifecycle,
    maxBodyBytes: opts.maxBodyBytes ?? 65_536,
    maxJsonDepth: opts.maxJsonDepth ?? 32,
    logProbes: opts.logProbes ?? false,
    ...(opts.fault ? { fault: opts.fault } : {}),
  });

  // Elysia finds the path by skipping past the host, so the URL needs a realistic authority.
  const request = (method: string, path: string, init: { body?: BodyInit; headers?: Record<string, string> } = {}) =>
    app.handle(new Request(`http://localhost${path}`, { method, ...init }));
  const postJson = (path: string, body: unknown, headers: Record<string, string> = {}) =>
    request("POST", path, {
      body: typeof body === "string" ? body : JSON.stringify(body),
      headers: { "content-type": "application/json", ...headers },
    });
  const createProject = async (title: string) => {
    const res = await postJson("/projects", { title });
    expect(res.status).toBe(201);
    return (await res.json()) as ProjectBody;
  };
  /** The access-log line for a request id; the log is written just after the response. */
  const accessLogFor = async (requestId: string): Promise<LogLine> => {
    const find = () => logs.find((l) => l.msg === "request" && l.request_id === requestId);
    await waitFor(`the access log line for ${requestId}`, () => find() !== undefined, {
      timeoutMs: 2000,
      intervalMs: 1,
    });
    return find()!;
  };

  return { app, store, lifecycle, logs, request, postJson, createProject, accessLogFor };
}

export interface ProjectBody {
  id: number;
  url: string;
  title: string;
  created_at: string;
}

export interface ProblemBody {
  type: string;
  title: string;
  status: number;
  detail?: string;
  errors?: { field: string; message: string }[];
}

/** Asserts an RFC 9457 answer with this status and returns its body. */
export async function expectProblem(res: Response, status: number): Promise<ProblemBody> {
  expect(res.headers.get("content-type")).toBe("application/problem+json");
  const body = (await res.json()) as ProblemBody;
  expect({ httpStatus: res.status, bodyStatus: body.status }).toEqual({ httpStatus: status, bodyStatus: status });
  expect(typeof body.title).toBe("string");
  return body;
}

/** A store whose every call fails, for the paths where the store, not the client, is at fault. */
export function brokenStore(message = "disk I/O error at /secret/path.db"): ProjectStore {
  const fail = async (): Promise<never> => {
    throw new Error(message);
  };
  return { create: fail, get: fail, list: fail, ping: fail, close: async () => {} };
}
