/**
 * A stand-in for a running gateway, for the smoke tests: answers the seed's requests the way the
 * real stack does, with x-served-by rotating over `replicas` webapp and rpcapp instances.
 */
import type { Server } from "bun";
import { freePort } from "../stack/testing/ports.ts";

export interface FakeGatewayOptions {
  replicas: number;
  /** Answer /verify/ with this message instead of the right one. */
  verifyMessage?: string;
}

export async function startFakeGateway(opts: FakeGatewayOptions): Promise<{ url: string; server: Server<undefined> }> {
  const counters = { webapp: 0, rpcapp: 0 };
  const servedBy = (service: keyof typeof counters) => ({
    "x-served-by": `${service}-${(counters[service]++ % opts.replicas) + 1}`,
    "x-gateway": "gateway-1",
  });
  const projects = new Map<number, { id: number; url: string }>();
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: await freePort(),
    routes: {
      "/healthz": () => Response.json({ status: "ok" }),
      "/projects/": {
        POST: async (req) => {
          const { title } = (await req.json()) as { title: string };
          const project = { id: projects.size + 1, url: `Project-${title}` };
          projects.set(project.id, project);
          return Response.json(project, { status: 201, headers: servedBy("webapp") });
        },
      },
      "/projects": { GET: () => Response.json([...projects.values()], { headers: servedBy("webapp") }) },
      "/projects/:id": {
        GET: (req) => {
          const project = projects.get(Number(req.params.id));
          return project
            ? Response.json(project, { headers: servedBy("webapp") })
            : Response.json({ title: "Not Found" }, { status: 404, headers: servedBy("webapp") });
        },
      },
      "/verify/": {
        POST: async (req) => {
          const { id } = (await req.json()) as { id: number };
          return Response.json({ message: opts.verifyMessage ?? `Verified: ${id}` }, { headers: servedBy("rpcapp") });
        },
      },
    },
    fetch: () => new Response("no route", { status: 404 }),
  });
  return { url: `http://127.0.0.1:${server.port}`, server };
}
