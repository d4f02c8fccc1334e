/**
 * Header handling for proxied requests and responses, in one place.
 *
 * Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection and must not be forwarded, nor
 * may any header the `Connection` header names. `X-Forwarded-*` from a client that is not a
 * trusted proxy are replaced, never extended, so a client cannot forge its address.
 */
import { HTTP_TOKEN } from "../../../lib/http-token.ts";

const HOP_BY_HOP = [
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
];

const HOP_BY_HOP_NAMES = new Set(HOP_BY_HOP);

/** Whether `name` (lowercase, as Headers gives it) is a hop-by-hop header. */
export function isHopByHop(name: string): boolean {
  return HOP_BY_HOP_NAMES.has(name);
}

/**
 * Removes the hop-by-hop headers and those `Connection` names. A delete of an absent name is
 * cheap: one get and nine deletes measured 0.3 µs, a pass over the headers to find which are
 * there 0.8 µs. (A response's names are seen anyway in proxy/http.ts's single pass over its head,
 * which calls this only when one is there.)
 */
export function stripHopByHop(headers: Headers): void {
  const connection = headers.get("connection");
  if (connection) {
    for (const name of connection.split(",")) {
      const trimmed = name.trim();
      // A token that is no header name names nothing (and Headers.delete would throw on it).
      if (trimmed && HTTP_TOKEN.test(trimmed) && !END_TO_END.has(trimmed.toLowerCase())) headers.delete(trimmed);
    }
  }
  for (const name of HOP_BY_HOP) headers.delete(name);
}

/**
 * Headers `Connection` cannot name away: what the body is (the JSON depth check reads
 * Content-Type) and where it goes. They describe the message, not the connection.
 */
const END_TO_END = new Set(["content-type", "content-length", "host"]);

/** Whether `Connection` may not name `name` (lower case) away: it describes the message (END_TO_END). */
export function isEndToEnd(name: string): boolean {
  return END_TO_END.has(name);
}

/** Headers the gateway writes for the upstream; a client's `_` spellings of them are removed. */
const GATEWAY_SET = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "x-request-id"];

/**
 * Removes what a client could forge for an upstream to believe: the claim headers of every
 * route's `auth.forwardClaims` (on every route: an open route may share the upstream that trusts
 * them), and the `_` spellings of those and of the headers the gateway sets. CGI, WSGI, PHP and
 * Rack read `x_forwarded_for` as `x-forwarded-for` (`HTTP_X_FORWARDED_FOR`), and of two the last
 * wins. One pass over the request's names: a Set lookup each, a replace for names with `_`.
 */
export class ForgedHeaders {
  /** Claim header names, lower case with `_` as `-`. */
  readonly #claims: ReadonlySet<string>;
  /** The same and the gateway's own, for names with `_`. */
  readonly #aliased: ReadonlySet<string>;

  constructor(claimHeaders: Iterable<string>) {
    this.#claims = new Set([...claimHeaders].map((name) => name.toLowerCase().replaceAll("_", "-")));
    this.#aliased = new Set([...this.#claims, ...GATEWAY_SET]);
  }

  strip(headers: Headers): void {
    let forged: string[] | undefined;
    for (const name of headers.keys())
      if (name.includes("_") ? this.#aliased.has(name.replaceAll("_", "-")) : this.#claims.has(name))
        (forged ??= []).push(name);
    if (forged) for (const name of forged) headers.delete(name);
  }
}

export interface ForwardedInfo {
  clientIp: string;
  /**
   * The direct peer's address: what a trusted proxy's X-Forwarded-For is extended with (each
   * proxy appends the address it received the request from). The client address when absent.
   */
  peer?: string;
  /** Whether the direct peer is a trusted proxy whose X-Forwarded-* we extend. */
  peerIsTrusted: boolean;
  proto: "http" | "https";
}

/**
 * X-Forwarded-For/-Proto/-Host and X-Real-IP (the client address as resolved, which upstreams and
 * their frameworks read as the client) for the outgoing request, as pairs the upstream client
 * writes after `headers` (proxy/h1-client.ts); the client's own copies of those names are removed
 * from `headers` (deletes of absent names are cheap, native sets are not: bench/README.md,
 * 2026-12-08 third stop). RFC 7239 `Forwarded` is not written; one from an untrusted client is
 * removed, as its X-Forwarded-* are replaced, since an upstream might believe it.
 */
export function forwardedHeaders(headers: Headers, info: ForwardedInfo): [string, string][] {
  const host = headers.get("host");
  headers.delete("x-real-ip");
  const pairs: [string, string][] = [["x-real-ip", info.clientIp]];
  if (info.peerIsTrusted) {
    const prior = headers.get("x-forwarded-for");
    const hop = info.peer ?? info.clientIp;
    if (prior !== null) headers.delete("x-forwarded-for");
    pairs.push(["x-forwarded-for", prior ? `${prior}, ${hop}` : hop]);
    if (!headers.has("x-forwarded-proto")) pairs.push(["x-forwarded-proto", info.proto]);
    if (!headers.has("x-forwarded-host") && host) pairs.push(["x-forwarded-host", host]);
  } else {
    headers.delete("forwarded");
    headers.delete("x-forwarded-for");
    headers.delete("x-forwarded-proto");
    headers.delete("x-forwarded-host");
    pairs.push(["x-forwarded-for", info.clientIp], ["x-forwarded-proto", info.proto]);
    if (host) pairs.push(["x-forwarded-host", host]);
  }
  return pairs;
}
