/**
 * Real webapp processes for the end-to-end tests: replicas on free ports, each answering as its
 * own instance, and a helper to create a project through one of them.
 */
import { freePorts } from "../../scripts/stack/testing/ports.ts";
import { spawnService, waitForHttp, type Spawned } from "../../scripts/stack/testing/processes.ts";

export interface Replica {
  proc: Spawned;
  url: string;
  instance: string;
}

/** Starts `count` webapps (`<prefix>-1`, `<prefix>-2`, …) with `env`, all at once, and waits until each is ready. */
export async function startReplicas(prefix: string, env: Record<string, string>, count = 2): Promise<Replica[]> {
  const ports = await freePorts(count);
  const replicas = ports.map((port, i) => {
    const instance = `${prefix}-${i + 1}`;
    const proc = spawnService(
      "webapp",
      { HOST: "127.0.0.1", PORT: String(port), INSTANCE_ID: instance, ...env },
      instance,
    );
    return { proc, url: `http://127.0.0.1:${port}`, instance };
  });
  await Promise.all(replicas.map((r) => waitForHttp(`${r.url}/readyz`, r.proc)));
  return replicas;
}

/** POST /projects/ with `{title}` to the webapp at `url`. */
export const postProject = (url: string, title: string) =>
  fetch(`${url}/projects/`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ title }),
  });
