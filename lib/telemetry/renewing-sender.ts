/**
 * The span exporter of an https collector, made anew when its TLS files are renewed, so that a new
 * CA, or a new client certificate from another CA, is taken into use without a restart (tracing.ts
 * polls OTEL_EXPORTER_OTLP_CERTIFICATE, _CLIENT_CERTIFICATE and _CLIENT_KEY). The exporter
 * library reads its TLS options once, into the agent its transport opens connections with; a
 * renewal therefore makes a new exporter from the same settings and the new files. Exports go to
 * the newest; the one it replaces finishes the exports it has in flight, then closes.
 */
import type { ExportResult } from "@opentelemetry/core";

/** What the span processors hand their batches to: an exporter, or the library's export delegate. */
export interface ExportSender<T> {
  export(batch: T, done: (result: ExportResult) => void): void;
  forceFlush?(): Promise<void>;
  shutdown(): Promise<void>;
}

export class RenewingSender<T, M> implements ExportSender<T> {
  #current: ExportSender<T>;
  /** Replaced senders finishing their exports. */
  readonly #retiring = new Set<Promise<void>>();
  #stopped = false;

  /** `make` builds a sender for one version of the files (`material`). */
  constructor(
    private readonly make: (material: M) => ExportSender<T>,
    material: M,
  ) {
    this.#current = make(material);
  }

  /** New exports go to a sender for `material`; the current one finishes what it has in flight. */
  renew(material: M): void {
    if (this.#stopped) return;
    const next = this.make(material);
    const old = this.#current;
    this.#current = next;
    const retired = old.shutdown().catch(() => {});
    this.#retiring.add(retired);
    void retired.finally(() => this.#retiring.delete(retired));
  }

  export(batch: T, done: (result: ExportResult) => void): void {
    this.#current.export(batch, done);
  }

  async forceFlush(): Promise<void> {
    await Promise.all([this.#current.forceFlush?.(), ...this.#retiring]);
  }

  async shutdown(): Promise<void> {
    this.#stopped = true;
    await Promise.all([this.#current.shutdown(), ...this.#retiring]);
  }
}
