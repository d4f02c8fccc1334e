/**
 * The client side of `make dev`'s control port (scripts/stack/control.ts): is a local stack
 * running, what does it run, and "replace the replicas of this service" with its progress.
 */
import { envPort } from "../../lib/env.ts";
import { lines } from "../../lib/lines.ts";
import { type ControlEvent, DEFAULT_CONTROL_PORT, type StackView } from "./control.ts";
import { ScriptError } from "../cli.ts";

export type { ControlEvent, StackView };

/** `http://127.0.0.1:9900`, or DEV_CONTROL_PORT's. */
export function controlUrl(env: Record<string, string | undefined> = process.env): string {
  return `http://127.0.0.1:${envPort("DEV_CONTROL_PORT", DEFAULT_CONTROL_PORT, env)}`;
}

/** The running `make dev` stack, or undefined when nothing answers on the control port. */
export async function findDevStack(url = controlUrl()): Promise<StackView | undefined> {
  try {
    const res = await fetch(`${url}/stack`, { signal: AbortSignal.timeout(1_000) });
    return res.ok ? ((await res.json()) as StackView) : undefined;
  } catch {
    return undefined;
  }
}

/** Whether a gateway answers `<base>/healthz` with 2xx within a second (`make dev`'s, when no control port answers). */
export async function answersHealthz(base: string): Promise<boolean> {
  try {
    return (await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(1_000) })).ok;
  } catch {
    return false;
  }
}

/**
 * POSTs `body` to `path` and yields the events the stack streams back; ends after `done`, throws
 * a ScriptError on `error` or when the stack refuses (a rollout already running, bad input).
 */
export async function* controlStream(
  url: string,
  path: "/rollout" | "/rollback" | "/canary/start" | "/canary/promote" | "/canary/remove",
  body: object,
): AsyncGenerator<ControlEvent> {
  const res = await fetch(`${url}${path}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!res.ok || !res.body) {
    const text = await res.text();
    let detail = text;
    try {
      detail = (JSON.parse(text) as { detail?: string }).detail ?? text;
    } catch {}
    throw new ScriptError(`make dev refused ${path.slice(1)}: ${detail}`);
  }
  for await (const raw of lines(res.body)) {
    const line = raw.trim();
    if (!line) continue;
    const event = JSON.parse(line) as ControlEvent;
    if (event.type === "error") throw new ScriptError(`make dev: ${event.message}`);
    yield event;
    if (event.type === "done") return;
  }
  throw new ScriptError(`make dev closed the ${path.slice(1)} stream before it finished (was it stopped?)`);
}

/** One line per event, as the rollout scripts print them. */
export function describeEvent(e: ControlEvent): string {
  switch (e.type) {
    case "starting":
      return e.replacing
        ? `start ${e.instance} (version ${e.version}) to replace ${e.replacing}`
        : `start ${e.instance} (version ${e.version}) beside the stable replicas`;
    case "ready":
      return `${e.instance} ready after ${e.readyMs} ms`;
    case "draining":
      return `SIGTERM ${e.instance}: not ready, draining`;
    case "routed":
      return `every gateway routes to ${e.instance} (after ${e.waitedMs} ms)`;
    case "settled":
      return `${e.instance} exited (code ${e.code})`;
    case "done":
      return `${e.service}: ${e.from} → ${e.to} in ${(e.tookMs / 1000).toFixed(1)} s`;
    case "error":
      return `error: ${e.message}`;
  }
}
