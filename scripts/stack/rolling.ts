/**
 * The local stack with run-time discovery, so that its replicas can be replaced one by one under
 * load — the local equivalent of a Deployment's rolling update (`maxSurge: 1, maxUnavailable: 0`).
 * `make dev` runs it; `make rollout` / `make rollback` drive it through its control port
 * (control.ts); scripts/test/rolling-upgrade.e2e.test.ts proves it loses no request.
 *
 * How the gateways learn about a replacement: as in the cluster, through DNS. Each replica slot
 * has two ports — its base port and a spare one, `N` above it — and each port a DNS name
 * (`webapp-3004.portico.test`) that resolves, through the stack's own DNS server (dns.ts), only
 * while a replica listens there. The gateways get every name in WEBAPP_ENDPOINTS/RPCAPP_ENDPOINTS
 * and DNS_SERVER, and their discovery re-resolves the names (every 5 s, and soon after a failed
 * health check) exactly as it re-resolves a headless Service. rpcapp cannot share a port with its
 * successor (grpc-js has no SO_REUSEPORT), so ports change; the gateways, which already share the
 * public port through SO_REUSEPORT, keep it and move their admin port to the spare.
 *
 * One replacement, for each replica in turn:
 *   1. start the new replica on the slot's other port, with the new SERVICE_VERSION;
 *   2. wait until it is ready (and, for a gateway, until it has found its upstreams);
 *   3. swap the DNS records and SIGTERM the old replica — what the endpoints controller and the
 *      kubelet do. The old one drains (lib/lifecycle.ts): not ready, still serving with
 *      `Connection: close` for DRAIN_DELAY_MS, then it stops accepting and finishes in flight;
 *   4. wait until every gateway routes to the new replica before touching the next one, so at
 *      most one replica per service is in transition (`maxUnavailable: 0`).
 *
 * A gateway's replacement shares the public port with the others (SO_REUSEPORT); when the old one
 * closes its listener, the connections queued to it move to the others only with
 * net.ipv4.tcp_migrate_req=1, which start() sets when permitted (listener-handover.ts).
 *
 * DRAIN_DELAY_MS is 5 s here as in k8s/: a gateway stops sending to a draining replica after at
 * most two failed health checks (2 × 2 s) or one re-resolution after the first failed check
 * (≤ 2 s + 1 s); the drain must outlast both.
 */
import { isIPv4 } from "node:net";
import { DiscoveryDns } from "./dns.ts";
import { ensureTcpMigrateReq, type Handover, type HandoverMode } from "./listener-handover.ts";
import { Stack, type StackOptions, type StackProcess, takenPorts } from "./stack.ts";

export type Kind = StackProcess["kind"];
export const KINDS: readonly Kind[] = ["webapp", "rpcapp", "gateway"];

/** DNS zone of the replicas' names (RFC 2606 reserves .test). */
const ZONE = "portico.test";
/** See the file comment; k8s/ uses the same figures. */
export const LOCAL_DRAIN_DELAY_MS = 5_000;
export const LOCAL_SHUTDOWN_TIMEOUT_MS = 15_000;

export interface RollingOptions {
  drainDelayMs?: number;
  shutdownTimeoutMs?: number;
  /** UDP port of the stack's DNS server; 0 picks a free one. */
  dnsPort?: number;
  /** Whether start() may set net.ipv4.tcp_migrate_req=1 (listener-handover.ts); default auto. */
  handover?: HandoverMode;
}

/** One replica position: which process holds it now, on which of its two port sets. */
interface Slot {
  kind: Kind;
  replica: number;
  side: 0 | 1;
  generation: number;
  process: StackProcess;
}

export type RolloutEvent =
  | { type: "starting"; instance: string; version: string; replacing: string }
  | { type: "ready"; instance: string; readyMs: number }
  | { type: "draining"; instance: string }
  | { type: "routed"; instance: string; waitedMs: number }
  | { type: "settled"; instance: string; code: number };

export interface ProcessView {
  name: string;
  kind: Kind;
  version: string;
  pid: number;
  state: "serving" | "draining";
  ports: Record<string, number>;
}

export class RolloutError extends Error {
  override name = "RolloutError";
}

export class RollingStack extends Stack {
  dns: DiscoveryDns | undefined;
  /** Whether a replaced gateway's queued connections move to the others (set by start()). */
  handover: Handover | undefined;
  readonly #handoverMode: HandoverMode;
  readonly #slots = new Map<string, Slot>();
  /** SIGTERMed replicas that have not exited yet. */
  readonly #retired = new Set<StackProcess>();
  /** The replicas the last rollout replaced, exited or not. */
  #lastReplaced: StackProcess[] = [];
  /** Every replaced replica that has exited, with its exit code (0: a clean drain). */
  readonly replacedExits: { name: string; code: number }[] = [];
  /** Versions each kind has run, oldest first; the last is the current one. */
  readonly #history = new Map<Kind, string[]>();
  readonly #userOnExit: StackOptions["onExit"];
  /** The last lines of each process, for the message when a replacement fails to start. */
  readonly #tails = new Map<string, string[]>();
  #rolling = false;
  readonly #dnsPort: number;
  /** Canary replicas by kind (scripts/stack/canary.ts): one per slot, on its spare ports. */
  readonly #canaries = new Map<Kind, StackProcess[]>();

  constructor(opts: StackOptions, rolling: RollingOptions = {}) {
    const self: { stack?: RollingStack } = {};
    const drainDelayMs = rolling.drainDelayMs ?? LOCAL_DRAIN_DELAY_MS;
    const shutdownTimeoutMs = rolling.shutdownTimeoutMs ?? LOCAL_SHUTDOWN_TIMEOUT_MS;
    super({
      ...opts,
      env: { DRAIN_DELAY_MS: String(drainDelayMs), SHUTDOWN_TIMEOUT_MS: String(shutdownTimeoutMs), ...opts.env },
      onLine: (name, line) => {
        if (self.stack) self.stack.#keepTail(name, line);
        opts.onLine(name, line);
      },
      onExit: (name, code) => {
        if (self.stack) self.stack.#onExit(name, code);
      },
    });
    self.stack = this;
    this.#userOnExit = opts.onExit;
    this.#dnsPort = rolling.dnsPort ?? 0;
    this.#handoverMode = rolling.handover ?? "auto";
    for (const kind of KINDS) this.#history.set(kind, [opts.version]);
  }

  /** The address replicas are reached at (and what the DNS records hold). */
  get #ip(): string {
    return isIPv4(this.opts.host) && this.opts.host !== "0.0.0.0" ? this.opts.host : "127.0.0.1";
  }

  replicasOf(kind: Kind): number {
    return kind === "webapp"
      ? this.opts.webappReplicas
      : kind === "rpcapp"
        ? this.opts.rpcappReplicas
        : this.opts.gatewayReplicas;
  }

  /** The ports a replica listens on, on side 0 (base) or 1 (spare, N above). */
  portsOf(kind: Kind, replica: number, side: 0 | 1): Record<string, number> {
    const offset = replica - 1 + side * this.replicasOf(kind);
    switch (kind) {
      case "webapp":
        // With TLS, PORT is HTTPS only: probes and scrapes go to METRICS_PORT.
        return this.opts.tls
          ? { PORT: this.opts.webappBasePort + offset, METRICS_PORT: this.opts.webappMetricsBasePort + offset }
          : { PORT: this.opts.webappBasePort + offset };
      case "rpcapp":
        return { PORT: this.opts.rpcappBasePort + offset, METRICS_PORT: this.opts.rpcappHttpBasePort + offset };
      case "gateway":
        return { ADMIN_PORT: this.opts.adminBasePort + offset };
    }
  }

  #readyUrl(kind: Kind, ports: Record<string, number>): string {
    const port = kind === "gateway" ? ports.ADMIN_PORT : (ports.METRICS_PORT ?? ports.PORT);
    return `http://${this.opts.host}:${port}/readyz`;
  }

  #dnsName(kind: "webapp" | "rpcapp", port: number): string {
    return `${kind}-${port}.${ZONE}`;
  }

  /** Every name a gateway may find `kind` under: both ports of every slot. */
  #discoveryEntries(kind: "webapp" | "rpcapp"): string {
    const entries: string[] = [];
    for (const side of [0, 1] as const) {
      for (let r = 1; r <= this.replicasOf(kind); r++) {
        const port = this.portsOf(kind, r, side).PORT!;
        entries.push(`${this.#dnsName(kind, port)}:${port}`);
      }
    }
    return entries.join(",");
  }

  override envFor(kind: Kind, replica: number): { env: Record<string, string>; readyUrl: string } {
    const base = super.envFor(kind, replica);
    if (kind !== "gateway") return base;
    // One entry per gateway slot, `|` between its two admin ports: the peers count a replica live
    // at either, and the dashboard shows the idle one as a spare, not as a gateway that is down.
    const adminUrls = Array.from({ length: this.opts.gatewayReplicas }, (_, i) =>
      ([0, 1] as const)
        .map((side) => `http://${this.opts.host}:${this.portsOf("gateway", i + 1, side).ADMIN_PORT}`)
        .join("|"),
    );
    return {
      ...base,
      env: {
        ...base.env,
        WEBAPP_ENDPOINTS: this.#discoveryEntries("webapp"),
        RPCAPP_ENDPOINTS: this.#discoveryEntries("rpcapp"),
        DNS_SERVER: this.dns?.address ?? "",
        // Replacements answer on the spare admin ports: the peers are looked for there too.
        GATEWAY_PEERS: adminUrls.join(","),
      },
    };
  }

  override async start(timeoutMs = 30_000): Promise<void> {
    this.handover = ensureTcpMigrateReq(this.#handoverMode);
    this.dns = await DiscoveryDns.start(this.#ip, this.#dnsPort);
    for (const kind of ["webapp", "rpcapp"] as const) {
      for (let r = 1; r <= this.replicasOf(kind); r++)
        this.dns.set(this.#dnsName(kind, this.portsOf(kind, r, 0).PORT!), [this.#ip]);
    }
    await super.start(timeoutMs);
    for (const kind of KINDS) {
      for (let replica = 1; replica <= this.replicasOf(kind); replica++) {
        const process = this.processes.find((p) => p.kind === kind && p.name === `${kind}-${replica}`);
        if (process) this.#slots.set(`${kind}-${replica}`, { kind, replica, side: 0, generation: 1, process });
      }
    }
    // Ready gateways have not necessarily resolved their upstreams yet: wait until they route.
    const backends = [...this.#slots.values()].filter((s) => s.kind !== "gateway");
    for (const slot of backends)
      await this.#waitRouted(slot.kind as "webapp" | "rpcapp", slot.process.env.PORT!, timeoutMs);
  }

  /**
   * SIGINT first: the lifecycle then skips the drain delay (nothing balances across a stopping
   * stack). SIGKILL only past SHUTDOWN_TIMEOUT_MS (Stack.stop()'s default: the constructor puts it
   * in the env), by which the processes have stopped by themselves.
   */
  override async stop(graceMs?: number): Promise<void> {
    for (const p of this.processes) {
      try {
        p.proc.kill("SIGINT");
      } catch {}
    }
    await super.stop(graceMs);
    // stop() may run twice (a second signal, a failed start stopped again): close the DNS once.
    try {
      this.dns?.close();
    } catch {}
  }

  currentVersion(kind: Kind): string {
    return this.#history.get(kind)!.at(-1)!;
  }

  /** The version `rollback` returns to, if any. */
  previousVersion(kind: Kind): string | undefined {
    return this.#history.get(kind)!.at(-2);
  }

  get isRolling(): boolean {
    return this.#rolling;
  }

  /** Replaces every replica of `kind`, one by one, with one running `version`. */
  async rollingReplace(kind: Kind, version: string, onEvent: (e: RolloutEvent) => void = () => {}): Promise<void> {
    await this.#replaceAll(kind, version, onEvent);
    this.#history.get(kind)!.push(version);
  }

  /** Replaces every replica of `kind` with the previous version (`kubectl rollout undo`). */
  async rollback(kind: Kind, onEvent: (e: RolloutEvent) => void = () => {}): Promise<string> {
    const previous = this.previousVersion(kind);
    if (previous === undefined)
      throw new RolloutError(
        `${kind} has not been rolled out in this stack: there is no previous version to go back to`,
      );
    await this.#replaceAll(kind, previous, onEvent);
    this.#history.get(kind)!.pop();
    return previous;
  }

  /**
   * Resolves once every replaced replica has finished draining and exited; reports the exit of
   * each one the last rollout replaced, and of any other still draining.
   */
  async settled(onEvent: (e: RolloutEvent) => void = () => {}): Promise<void> {
    await Promise.all(
      [...new Set([...this.#lastReplaced, ...this.#retired])].map(async (p) => {
        const code = await p.proc.exited;
        onEvent({ type: "settled", instance: p.name, code });
      }),
    );
  }

  /** The canary replicas of `kind`, if a canary runs. */
  canariesOf(kind: Kind): readonly StackProcess[] {
    return this.#canaries.get(kind) ?? [];
  }

  /**
   * Starts a replica of `kind` running `version` beside each stable one, on the slot's spare
   * ports, and registers it in DNS: the gateways find it as they would a canary Deployment's pods
   * behind the same headless Service. `env` adds to theirs (FAULT_* for a drill). Returns once every
   * gateway routes to all of them; a canary that fails to start takes the others down with it.
   */
  async startCanaries(
    kind: "webapp" | "rpcapp",
    version: string,
    env: Record<string, string> = {},
    onEvent: (e: RolloutEvent) => void = () => {},
  ): Promise<void> {
    if (this.#rolling) throw new RolloutError("another rollout is running in this stack; wait for it to finish");
    if (this.#canaries.has(kind)) throw new RolloutError(`a canary of ${kind} is already running in this stack`);
    this.#rolling = true;
    const started: StackProcess[] = [];
    try {
      for (let replica = 1; replica <= this.replicasOf(kind); replica++) {
        const slot = this.#slots.get(`${kind}-${replica}`)!;
        const ports = this.portsOf(kind, replica, slot.side === 0 ? 1 : 0);
        const previousHolder = [...this.#retired].find(
          (p) => p.kind === kind && Object.entries(ports).every(([k, v]) => p.env[k] === String(v)),
        );
        if (previousHolder) await previousHolder.proc.exited;
        const instance = `${kind}-${replica}.canary`;
        await this.#assertSpareFree(instance, ports);
        onEvent({ type: "starting", instance, version, replacing: "" });
        const startedAt = performance.now();
        const canary = this.spawn(kind, replica, {
          ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])),
          INSTANCE_ID: instance,
          SERVICE_VERSION: version,
          ...env,
        });
        canary.readyUrl = this.#readyUrl(kind, ports);
        started.push(canary);
        await this.waitReady(canary, 30_000);
        onEvent({ type: "ready", instance, readyMs: Math.round(performance.now() - startedAt) });
        this.dns!.set(this.#dnsName(kind, ports.PORT!), [this.#ip]);
        await this.#waitRouted(kind, String(ports.PORT), 20_000);
        onEvent({ type: "routed", instance, waitedMs: Math.round(performance.now() - startedAt) });
      }
      this.#canaries.set(kind, started);
    } catch (err) {
      for (const p of started) {
        this.dns?.delete(this.#dnsName(kind, Number(p.env.PORT)));
        p.proc.kill("SIGKILL");
      }
      throw err;
    } finally {
      this.#rolling = false;
    }
  }

  /**
   * The canary passed: each canary replica takes its slot, and the stable replica it stood beside
   * drains and exits, as in a rollout — no new process, the canaries already serve.
   */
  async promoteCanaries(kind: "webapp" | "rpcapp", onEvent: (e: RolloutEvent) => void = () => {}): Promise<string> {
    const conflict = this.canaryConflict(kind);
    if (conflict) throw new RolloutError(conflict);
    const canaries = this.#canaries.get(kind)!;
    this.#lastReplaced = [];
    const version = canaries[0]!.env.SERVICE_VERSION!;
    for (const [i, canary] of canaries.entries()) {
      const replica = i + 1;
      const slot = this.#slots.get(`${kind}-${replica}`)!;
      this.#retire(slot.process, onEvent);
      this.#slots.set(`${kind}-${replica}`, {
        kind,
        replica,
        side: slot.side === 0 ? 1 : 0,
        generation: slot.generation + 1,
        process: canary,
      });
    }
    this.#canaries.delete(kind);
    this.#history.get(kind)!.push(version);
    return version;
  }

  /** The canary failed or was called off: its replicas leave DNS, drain and exit; the stable ones stay. */
  async removeCanaries(kind: "webapp" | "rpcapp", onEvent: (e: RolloutEvent) => void = () => {}): Promise<void> {
    const conflict = this.canaryConflict(kind);
    if (conflict) throw new RolloutError(conflict);
    const canaries = this.#canaries.get(kind)!;
    this.#lastReplaced = [];
    for (const canary of canaries) this.#retire(canary, onEvent);
    this.#canaries.delete(kind);
  }

  /**
   * Why the canary of `kind` cannot be promoted or removed now, if it cannot: there is none, or a
   * rollout runs — a promotion or a removal resets the list of replaced replicas that a running
   * rollout reports on (settled()), and a promotion moves slots a rollout may be replacing.
   */
  canaryConflict(kind: Kind): string | undefined {
    if (!this.#canaries.has(kind)) return `no canary of ${kind} runs in this stack`;
    if (this.#rolling)
      return `a rollout is running in this stack: wait for it to finish before promoting or removing the canary of ${kind}`;
    return undefined;
  }

  /** A webapp or rpcapp replica leaves: out of DNS first (the gateways stop picking it), then SIGTERM to drain. */
  #retire(replica: StackProcess, onEvent: (e: RolloutEvent) => void): void {
    // Gateways are not in the DNS: they share the public port.
    if (replica.kind !== "gateway") this.dns!.delete(this.#dnsName(replica.kind, Number(replica.env.PORT)));
    // Exited already (crashed; its exit was reported then, and it would stay in #retired for good,
    // reported again by every later rollout): nothing to drain or to wait for.
    if (hasExited(replica)) return;
    this.#retired.add(replica);
    this.#lastReplaced.push(replica);
    try {
      replica.proc.kill("SIGTERM");
    } catch {}
    onEvent({ type: "draining", instance: replica.name });
  }

  /** Every process, with its version and whether it is draining. */
  describe(): ProcessView[] {
    return this.processes.map((p) => ({
      name: p.name,
      kind: p.kind,
      version: p.env.SERVICE_VERSION ?? this.opts.version,
      pid: p.proc.pid,
      state: this.#retired.has(p) ? "draining" : "serving",
      ports: Object.fromEntries(
        ["PORT", "METRICS_PORT", "ADMIN_PORT"].filter((k) => p.env[k]).map((k) => [k, Number(p.env[k])]),
      ),
    }));
  }

  /**
   * Why `kind` cannot be rolled out or back now, if it cannot: its canary holds the slots' spare
   * ports, where the replacements would start (they would fail with "port in use", and the
   * canary would answer their readiness checks).
   */
  rolloutConflict(kind: Kind): string | undefined {
    if (this.#rolling) return "another rollout is running in this stack; wait for it to finish";
    if (this.#canaries.has(kind))
      return `a canary of ${kind} runs in this stack on the replicas' spare ports: promote it or remove it first (POST /canary/promote or /canary/remove on the control port)`;
    return undefined;
  }

  async #replaceAll(kind: Kind, version: string, onEvent: (e: RolloutEvent) => void): Promise<void> {
    const conflict = this.rolloutConflict(kind);
    if (conflict) throw new RolloutError(conflict);
    this.#rolling = true;
    this.#lastReplaced = [];
    try {
      for (let replica = 1; replica <= this.replicasOf(kind); replica++) {
        if (this.stopping) throw new RolloutError(`the stack is stopping: the rollout of ${kind} stops here`);
        await this.#replaceOne(kind, replica, version, onEvent);
      }
    } finally {
      this.#rolling = false;
    }
  }

  async #replaceOne(kind: Kind, replica: number, version: string, onEvent: (e: RolloutEvent) => void): Promise<void> {
    const slot = this.#slots.get(`${kind}-${replica}`);
    if (!slot) throw new RolloutError(`${kind}-${replica} is not part of this stack`);
    const side = slot.side === 0 ? 1 : 0;
    const ports = this.portsOf(kind, replica, side);
    // The replica that had these ports two rollouts ago may still be draining.
    const previousHolder = [...this.#retired].find(
      (p) => p.kind === kind && Object.entries(ports).every(([k, v]) => p.env[k] === String(v)),
    );
    if (previousHolder) await previousHolder.proc.exited;

    const instance = `${kind}-${replica}.${slot.generation + 1}`;
    const old = slot.process;
    await this.#assertSpareFree(instance, ports).catch((err: Error) => {
      throw new RolloutError(`${old.name} keeps serving and the rollout stops here: ${err.message}`);
    });
    onEvent({ type: "starting", instance, version, replacing: old.name });
    const startedAt = performance.now();
    const next = this.spawn(kind, replica, {
      ...Object.fromEntries(Object.entries(ports).map(([k, v]) => [k, String(v)])),
      INSTANCE_ID: instance,
      SERVICE_VERSION: version,
    });
    next.readyUrl = this.#readyUrl(kind, ports);
    try {
      await this.waitReady(next, 30_000);
      if (kind === "gateway") await this.#waitGatewayRoutes(next, 15_000);
    } catch (err) {
      next.proc.kill("SIGKILL");
      const tail = (this.#tails.get(instance) ?? []).join("\n");
      throw new RolloutError(
        `${instance} (version ${version}) did not become ready, so ${old.name} keeps serving and the rollout stops here: ${(err as Error).message}${tail ? `\n${instance}'s last lines:\n${tail}` : ""}`,
      );
    }
    onEvent({ type: "ready", instance, readyMs: Math.round(performance.now() - startedAt) });

    if (kind !== "gateway") this.dns!.set(this.#dnsName(kind, ports.PORT!), [this.#ip]);
    this.#retire(old, onEvent);
    this.#slots.set(`${kind}-${replica}`, { kind, replica, side, generation: slot.generation + 1, process: next });

    if (kind !== "gateway") {
      const waitedFrom = performance.now();
      await this.#waitRouted(kind, String(ports.PORT), 20_000);
      onEvent({ type: "routed", instance, waitedMs: Math.round(performance.now() - waitedFrom) });
    }
  }

  /**
   * Fails when another process already listens on a port `instance` is about to get (whatever
   * holds a spare port would otherwise answer its readiness checks while it fails to start).
   */
  async #assertSpareFree(instance: string, ports: Record<string, number>): Promise<void> {
    const taken = await takenPorts(
      Object.entries(ports).map(([name, port]) => ({ name, port })),
      this.#ip,
    );
    if (taken.length > 0)
      throw new Error(
        `another process listens on ${taken.map((p) => `${p.name}=${p.port}`).join(", ")}, where ${instance} was to start (not a replica of this stack: stop it, or restart make dev on other ports)`,
      );
  }

  /** The gateways that are not draining, as admin base URLs. */
  #servingGateways(): string[] {
    return this.processes
      .filter((p) => p.kind === "gateway" && !this.#retired.has(p))
      .map((p) => `http://${this.opts.host}:${p.env.ADMIN_PORT}`);
  }

  /** Waits until every serving gateway lists `ip:port` of `kind` as available. */
  async #waitRouted(kind: "webapp" | "rpcapp", port: string, timeoutMs: number): Promise<void> {
    const address = `${this.#ip}:${port}`;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      // No gateway left (the stack is stopping, or they all exited): nothing routes, and going on
      // to the next replica would replace a serving one with one that no one reaches.
      const gateways = this.#servingGateways();
      if (gateways.length === 0 || this.stopping)
        throw new RolloutError(
          this.stopping
            ? `the stack is stopping: the gateways will not route to ${kind} at ${address}`
            : `no gateway serves in this stack, so none routes to ${kind} at ${address}; restart make dev`,
        );
      const views = await Promise.all(gateways.map((admin) => upstreamsOf(admin, this.adminToken)));
      if (
        views.every((upstreams) =>
          upstreams?.some((u) => u.endpoints.some((e) => e.address === address && e.available)),
        )
      )
        return;
      if (Date.now() > deadline)
        throw new RolloutError(
          `the gateways did not start routing to ${kind} at ${address} within ${timeoutMs} ms (is the routes file's ${kind.toUpperCase()}_ENDPOINTS used?)`,
        );
      await Bun.sleep(50);
    }
  }

  /** A new gateway is useful once every upstream it has lists every replica that serves now. */
  async #waitGatewayRoutes(gateway: StackProcess, timeoutMs: number): Promise<void> {
    const admin = `http://${this.opts.host}:${gateway.env.ADMIN_PORT}`;
    const wanted = [...this.#slots.values()]
      .filter((s) => s.kind !== "gateway")
      .map((s) => `${this.#ip}:${s.process.env.PORT}`);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const upstreams = await upstreamsOf(admin, this.adminToken);
      const available = new Set(
        upstreams?.flatMap((u) => u.endpoints.filter((e) => e.available).map((e) => e.address)),
      );
      if (upstreams && wanted.every((a) => available.has(a))) return;
      if (gateway.proc.exitCode !== null) throw new Error(`${gateway.name} exited with code ${gateway.proc.exitCode}`);
      if (Date.now() > deadline)
        throw new Error(
          `${gateway.name} did not find its upstreams' replicas (${wanted.join(", ")}) within ${timeoutMs} ms`,
        );
      await Bun.sleep(50);
    }
  }

  #keepTail(name: string, line: string): void {
    let lines = this.#tails.get(name);
    if (!lines) this.#tails.set(name, (lines = []));
    lines.push(line);
    if (lines.length > 20) lines.shift();
  }

  #onExit(name: string, code: number): void {
    const retired = [...this.#retired].find((p) => p.name === name);
    if (retired) {
      this.#retired.delete(retired);
      this.replacedExits.push({ name, code });
      return;
    }
    if (!this.stopping) this.#userOnExit?.(name, code);
  }
}

interface UpstreamView {
  name: string;
  endpoints: { address: string; available: boolean }[];
}

/** A gateway's live upstream view (admin /upstreams), or undefined when it does not answer. */
async function upstreamsOf(adminUrl: string, token: string | undefined): Promise<UpstreamView[] | undefined> {
  try {
    const res = await fetch(`${adminUrl}/upstreams`, {
      signal: AbortSignal.timeout(1_000),
      ...(token ? { headers: { authorization: `Bearer ${token}` } } : {}),
    });
    return res.ok ? ((await res.json()) as UpstreamView[]) : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `p` has exited (by itself or by a signal). */
function hasExited(p: StackProcess): boolean {
  return p.proc.exitCode !== null || p.proc.signalCode !== null;
}
