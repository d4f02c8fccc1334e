/**
 * Which gateway `make smoke` and `make load` talk to, in this order: GATEWAY_URL when set; else
 * the running `make dev` stack's (asked on its control port, so a stack started with another
 * GATEWAY_PORT is found too), or whatever answers http://127.0.0.1:$GATEWAY_PORT/healthz (8080 by
 * default); else, with minikube installed, the URL of `make up`'s (`minikube service gateway -n
 * portico --url`, a tunnel on some drivers: `close` ends it).
 */
import { chalk, which } from "zx";
import { envInt } from "../../lib/env.ts";
import { EXIT_MISSING_TOOL, ScriptError } from "../cli.ts";
import { serviceUrl } from "../cluster/minikube.ts";
import { answersHealthz, findDevStack } from "../stack/dev-control.ts";

export interface FoundGateway {
  url: string;
  from: "GATEWAY_URL" | "make dev" | "minikube";
  /** Ends the minikube tunnel when one had to be opened; does nothing otherwise. */
  close: () => void;
}

export async function findGateway(env: Record<string, string | undefined> = process.env): Promise<FoundGateway> {
  const none = () => {};
  const explicit = env.GATEWAY_URL;
  if (explicit) return { url: explicit.replace(/\/+$/, ""), from: "GATEWAY_URL", close: none };

  const dev = await findDevStack();
  if (dev) return { url: dev.gatewayUrl, from: "make dev", close: none };
  const local = `http://127.0.0.1:${envInt("GATEWAY_PORT", 8080, { min: 1, max: 65535 }, env)}`;
  console.log(`${chalk.dim("→")} GET ${local}/healthz  # is \`make dev\` running?`);
  if (await answersHealthz(local)) return { url: local, from: "make dev", close: none };

  if (which.sync("minikube", { nothrow: true })) {
    console.log("no gateway there; asking minikube for `make up`'s");
    const service = await serviceUrl("gateway", 30_000);
    return { url: service.url, from: "minikube", close: service.close };
  }
  throw new ScriptError(
    `no gateway found: nothing answers ${local}/healthz and minikube is not installed.\n` +
      "Start one with `make dev` (local processes) or `make up` (minikube), or point GATEWAY_URL at one.",
    EXIT_MISSING_TOOL,
  );
}
