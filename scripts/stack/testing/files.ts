/** Files as the tests change them under a running service. */
import { renameSync, writeFileSync } from "node:fs";

/**
 * Replaces a file in one step, as a Kubernetes Secret volume or cert-manager does: a service that
 * polls it never reads it half written. Written with mode 0600 (it may be a private key).
 */
export function replaceFile(path: string, text: string): void {
  writeFileSync(`${path}.tmp`, text, { mode: 0o600 });
  renameSync(`${path}.tmp`, path);
}
