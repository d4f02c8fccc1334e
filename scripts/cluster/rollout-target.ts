/**
 * Where `make rollout` / `make rollback` act: the `make dev` stack when its control port answers,
 * else the minikube cluster of `make up` — the same order `make smoke` looks for a gateway in.
 * ROLLOUT_TARGET=local|minikube chooses explicitly.
 */
import { which } from "zx";
import { envEnum } from "../../lib/env.ts";
import { EXIT_MISSING_TOOL, ScriptError } from "../cli.ts";
import { controlUrl, findDevStack, type StackView } from "../stack/dev-control.ts";
import { SERVICES, type Service } from "./images.ts";

export type RolloutTarget = { kind: "local"; controlUrl: string; stack: StackView } | { kind: "minikube" };

export async function findRolloutTarget(env: Record<string, string | undefined> = process.env): Promise<RolloutTarget> {
  const wanted = envEnum("ROLLOUT_TARGET", ["auto", "local", "minikube"] as const, "auto", env);
  const url = controlUrl(env);
  if (wanted !== "minikube") {
    const stack = await findDevStack(url);
    if (stack) return { kind: "local", controlUrl: url, stack };
    if (wanted === "local")
      throw new ScriptError(
        `ROLLOUT_TARGET=local, but no \`make dev\` stack answers on ${url}/stack. Start one with \`make dev\` (DEV_CONTROL_PORT chooses its control port).`,
        EXIT_MISSING_TOOL,
      );
  }
  if (wanted === "auto" && !which.sync("minikube", { nothrow: true })) {
    throw new ScriptError(
      `nothing to roll out: no \`make dev\` stack answers on ${url}/stack, and minikube is not installed.\n` +
        "Start the stack locally with `make dev` (then this replaces its replicas one by one), or deploy it with `make up`.",
      EXIT_MISSING_TOOL,
    );
  }
  return { kind: "minikube" };
}

/** The SERVICE argument, checked: exit 2 with the usage when it is missing or unknown. */
export function serviceArgument(command: "rollout" | "rollback", arg: string | undefined): Service {
  if (arg && (SERVICES as readonly string[]).includes(arg)) return arg as Service;
  const why = arg ? `"${arg}" is not a service` : "which service?";
  throw new ScriptError(`${why}: make ${command} SERVICE=<${SERVICES.join("|")}>`, EXIT_MISSING_TOOL);
}
