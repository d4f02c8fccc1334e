/**
 * API keys, stored in routes.yaml only as SHA-256 digests: a leaked config file leaks no key.
 * The presented key is hashed and compared with every stored digest in constant time, with no
 * early exit, so neither the timing nor the position of a match says anything about the keys.
 * (Keys are meant to be long random strings — `openssl rand -hex 32` — so an unsalted fast hash
 * is enough; passwords would need a slow one.)
 */
import { createHash, timingSafeEqual } from "node:crypto";

export interface StoredApiKey {
  name: string;
  digest: Buffer;
}

export class ApiKeyVerifier {
  constructor(
    readonly header: string,
    private readonly keys: readonly StoredApiKey[],
  ) {}

  /** The name of the key `presented` is, or undefined. */
  identify(presented: string): string | undefined {
    const digest = createHash("sha256").update(presented, "utf8").digest();
    let match: string | undefined;
    for (const key of this.keys) {
      if (timingSafeEqual(digest, key.digest) && match === undefined) match = key.name;
    }
    return match;
  }
}

/** The hex digest routes.yaml stores for a key (also what the docs tell operators to run). */
export function apiKeyDigest(key: string): string {
  return createHash("sha256").update(key, "utf8").digest("hex");
}
