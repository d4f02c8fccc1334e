/**
 * What lets a local gateway be replaced without resetting a new connection (docs/operations.md,
 * "Replacing a gateway locally").
 *
 * The local gateways share the public port through SO_REUSEPORT: each has its own listening
 * socket, and the kernel hashes every new connection to one of them. When a draining gateway
 * closes its socket, the connections the kernel already queued to it — handshake done, not yet
 * accepted — and those still in the handshake are reset, unless net.ipv4.tcp_migrate_req is 1
 * (Linux ≥ 5.14): then the kernel moves them to another socket of the group, where the new
 * gateway accepts them. Nothing in user space can do that instead: the socket cannot leave the
 * group without being closed, and Bun.serve cannot take over another process's listening socket.
 * Measured on Bun 1.4.5, Linux 6.18, `make rollout SERVICE=gateway` (3 gateways replaced) under 50
 * keep-alive requests/s + 400 new connections/s: 1, 0 and 2 resets in 3 rollouts with it off; 0
 * in 5 rollouts in a row with it on (docs/operations.md, "Replacing a gateway locally").
 *
 * The setting is per network namespace and needs root (CAP_NET_ADMIN), so `make dev` sets it
 * when it may (DEV_TCP_MIGRATE_REQ=auto, the default; `off` leaves the kernel alone) and
 * otherwise says how to. It changes nothing else: only what happens to connections queued on a
 * SO_REUSEPORT listener that closes.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";

export const TCP_MIGRATE_REQ = "/proc/sys/net/ipv4/tcp_migrate_req";
export const TCP_MIGRATE_REQ_FIX = "sudo sysctl -w net.ipv4.tcp_migrate_req=1";

export type HandoverMode = "auto" | "off";

export type Handover =
  /** Queued connections move to another gateway when one closes its listener. */
  | { migrates: true; how: "already set" | "set by make dev" }
  /** They are reset: `why` says what stopped it, `fix` what to run. */
  | { migrates: false; why: string; fix: string };

/** DEV_TCP_MIGRATE_REQ: `auto` (default) or `off`. */
export function handoverModeFromEnv(env: Record<string, string | undefined> = process.env): HandoverMode {
  const raw = (env.DEV_TCP_MIGRATE_REQ ?? "").trim() || "auto";
  if (raw !== "auto" && raw !== "off")
    throw new Error(`DEV_TCP_MIGRATE_REQ=${raw} must be auto (set net.ipv4.tcp_migrate_req=1 when permitted) or off`);
  return raw;
}

/** Whether queued connections migrate now; undefined when this kernel has no such setting. */
export function readTcpMigrateReq(file = TCP_MIGRATE_REQ): boolean | undefined {
  if (!existsSync(file)) return undefined;
  return readFileSync(file, "utf8").trim() !== "0";
}

/** Sets tcp_migrate_req to 1 when `mode` allows and the kernel and permissions do; says what happened. */
export function ensureTcpMigrateReq(mode: HandoverMode, file = TCP_MIGRATE_REQ): Handover {
  const now = readTcpMigrateReq(file);
  if (now === true) return { migrates: true, how: "already set" };
  if (now === undefined)
    return {
      migrates: false,
      why:
        process.platform === "linux"
          ? "this kernel has no net.ipv4.tcp_migrate_req (it needs Linux 5.14 or later)"
          : `${process.platform} has no net.ipv4.tcp_migrate_req (Linux 5.14 or later only)`,
      fix: "none on this machine: rely on the cluster, where each gateway pod has its own listener",
    };
  if (mode === "off")
    return {
      migrates: false,
      why: "DEV_TCP_MIGRATE_REQ=off leaves the kernel setting alone",
      fix: TCP_MIGRATE_REQ_FIX,
    };
  try {
    writeFileSync(file, "1");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return {
      migrates: false,
      why: `net.ipv4.tcp_migrate_req is 0 and could not be set (${code === "EACCES" || code === "EPERM" || code === "EROFS" ? "it needs root, and a container needs --sysctl net.ipv4.tcp_migrate_req=1" : (err as Error).message})`,
      fix: TCP_MIGRATE_REQ_FIX,
    };
  }
  return readTcpMigrateReq(file) === true
    ? { migrates: true, how: "set by make dev" }
    : { migrates: false, why: "net.ipv4.tcp_migrate_req did not keep the value 1", fix: TCP_MIGRATE_REQ_FIX };
}

/** One line for `make dev`'s banner and `make rollout`'s warning. */
export function describeHandover(h: Handover): string {
  return h.migrates
    ? `a replaced gateway's queued connections move to the others (net.ipv4.tcp_migrate_req=1, ${h.how})`
    : `a replaced gateway resets the few new connections queued to it as it closes: ${h.why}; to fix: ${h.fix}`;
}

/**
 * For `make rollout/rollback SERVICE=gateway` on the local stack: what to expect when queued
 * connections do not migrate on this machine (undefined when they do).
 */
export function gatewayHandoverWarning(file = TCP_MIGRATE_REQ): string | undefined {
  if (readTcpMigrateReq(file) === true) return undefined;
  return `net.ipv4.tcp_migrate_req is not 1 on this machine: each gateway that closes its listener resets the few new connections queued to it, and the check below counts them (ECONNRESET on new connections). Fix: ${TCP_MIGRATE_REQ_FIX}, or restart make dev as root (docs/operations.md, "Replacing a gateway locally").`;
}
