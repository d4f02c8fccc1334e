/**
 * Who the client is. The direct peer's address, unless that peer is a trusted proxy (a load
 * balancer in front of the gateway), in which case the right-most untrusted address of
 * X-Forwarded-For is the client — the only entry a client cannot forge.
 */
import ipaddr from "ipaddr.js";

export class TrustedProxies {
  readonly #ranges: [ipaddr.IPv4 | ipaddr.IPv6, number][];

  constructor(cidrs: readonly string[]) {
    this.#ranges = cidrs.map((cidr) =>
      cidr.includes("/")
        ? ipaddr.parseCIDR(cidr)
        : [ipaddr.parse(cidr), ipaddr.parse(cidr).kind() === "ipv4" ? 32 : 128],
    );
  }

  get isEmpty(): boolean {
    return this.#ranges.length === 0;
  }

  isTrusted(address: string): boolean {
    if (this.#ranges.length === 0 || !ipaddr.isValid(address)) return false;
    const ip = normalize(address);
    return this.#ranges.some(([range, bits]) => ip.kind() === range.kind() && ip.match(range, bits));
  }

  /** The client address for a request whose direct peer is `peer`. */
  clientIp(peer: string, forwardedFor: string | null): { clientIp: string; peerIsTrusted: boolean } {
    const { clientIp, peerIsTrusted } = this.resolve(peer, forwardedFor);
    return { clientIp, peerIsTrusted };
  }

  /**
   * The client address and the direct peer's, normalised. Without trusted proxies (the common
   * case) this is string work only: no address is parsed per request.
   */
  resolve(peer: string, forwardedFor: string | null): ResolvedClient {
    if (this.#ranges.length === 0) {
      const peerIp = unmapIPv4(peer);
      return { clientIp: peerIp, peer: peerIp, peerIsTrusted: false };
    }
    const peerIp = normalizeString(peer);
    const resolved = this.#behindProxies(peerIp, forwardedFor);
    return { clientIp: resolved.clientIp, peer: peerIp, peerIsTrusted: resolved.peerIsTrusted };
  }

  #behindProxies(peerIp: string, forwardedFor: string | null): { clientIp: string; peerIsTrusted: boolean } {
    if (!this.isTrusted(peerIp)) return { clientIp: peerIp, peerIsTrusted: false };
    if (!forwardedFor) return { clientIp: peerIp, peerIsTrusted: true };
    const hops = forwardedFor
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    // Walking from the right, every hop so far was written by a trusted proxy. A hop that is no
    // address ends the walk at the last trusted one: what lies left of it is the client's to write.
    let nearest = peerIp;
    for (let i = hops.length - 1; i >= 0; i--) {
      const hop = hopAddress(hops[i]!);
      if (hop === undefined) break;
      if (!this.isTrusted(hop)) return { clientIp: hop, peerIsTrusted: true };
      nearest = hop;
    }
    return { clientIp: nearest, peerIsTrusted: true };
  }
}

export interface ResolvedClient {
  clientIp: string;
  /** The direct peer. */
  peer: string;
  peerIsTrusted: boolean;
}

/**
 * "::ffff:127.0.0.1" → "127.0.0.1" without parsing: Bun reports an IPv4 peer of a dual-stack
 * socket in that dotted form, and every other address already normalised (as ipaddr.js prints it).
 */
function unmapIPv4(address: string): string {
  return address.length > 7 && address.charCodeAt(0) === 58 && address.startsWith("::ffff:") && address.includes(".")
    ? address.slice(7)
    : address;
}

/**
 * One X-Forwarded-For entry as an address, normalised: `203.0.113.9`, `203.0.113.9:5678`,
 * `2001:db8::1`, `[2001:db8::1]` or `[2001:db8::1]:443` (some proxies write the port). Undefined
 * when it is none of these (`unknown`, a name, garbage).
 */
function hopAddress(hop: string): string | undefined {
  let address = hop;
  const colon = hop.indexOf(":");
  if (hop.charCodeAt(0) === 91 /* [ */) {
    const close = hop.indexOf("]");
    if (close < 0 || (close !== hop.length - 1 && !/^:\d{1,5}$/.test(hop.slice(close + 1)))) return undefined;
    address = hop.slice(1, close);
  } else if (colon > 0 && colon === hop.lastIndexOf(":")) {
    // One colon: IPv4 with a port (an IPv6 address has at least two).
    if (!/^\d{1,5}$/.test(hop.slice(colon + 1))) return undefined;
    address = hop.slice(0, colon);
  }
  return ipaddr.isValid(address) ? normalize(address).toString() : undefined;
}

/** "::ffff:127.0.0.1" → "127.0.0.1": Bun reports IPv4 peers of a dual-stack socket mapped. */
export function normalizeString(address: string): string {
  return ipaddr.isValid(address) ? normalize(address).toString() : address;
}

function normalize(address: string): ipaddr.IPv4 | ipaddr.IPv6 {
  const ip = ipaddr.parse(address);
  return ip.kind() === "ipv6" && (ip as ipaddr.IPv6).isIPv4MappedAddress() ? (ip as ipaddr.IPv6).toIPv4Address() : ip;
}

/** Checks a CIDR list from the config; returns a message per bad entry. */
export function checkCidrs(cidrs: readonly string[]): { index: number; message: string }[] {
  const problems: { index: number; message: string }[] = [];
  cidrs.forEach((cidr, index) => {
    try {
      if (cidr.includes("/")) ipaddr.parseCIDR(cidr);
      else ipaddr.parse(cidr);
    } catch {
      problems.push({ index, message: `"${cidr}" is not an IP address or CIDR range` });
    }
  });
  return problems;
}
