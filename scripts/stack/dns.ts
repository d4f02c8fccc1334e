/**
 * Service discovery for the local stack: a tiny DNS server on 127.0.0.1 (UDP) that answers A
 * queries for the replicas that are up, as CoreDNS answers for a headless Service in Kubernetes.
 * The gateways resolve their upstreams through it (DNS_SERVER) with the same code that
 * re-resolves headless Services in the cluster (gateway/src/upstream/discovery.ts), so a replica
 * added or removed during a local rolling replace reaches them the way a pod does.
 *
 * It answers A records from `records` with TTL 0 (nothing caches them), NXDOMAIN for names it
 * does not know, an empty answer for other types; a malformed packet gets no answer.
 * RFC 1035 §4.1 is all it speaks.
 */
import dgram from "node:dgram";
import { isIPv4 } from "node:net";

const HEADER_BYTES = 12;
const TYPE_A = 1;
const CLASS_IN = 1;
/** Low ports only (see testing/ports.ts): the kernel hands out client source ports above 32767. */
const LOW = 20000;
const HIGH = 32000;

export class DiscoveryDns {
  /** Lower-case name → IPv4 addresses. */
  readonly #records = new Map<string, string[]>();
  queries = 0;

  private constructor(
    private readonly socket: dgram.Socket,
    readonly host: string,
    readonly port: number,
  ) {
    socket.on("message", (msg, from) => this.#answer(msg, from));
  }

  /** Binds `port`, or a free port below 32768 when it is 0. */
  static async start(host = "127.0.0.1", port = 0): Promise<DiscoveryDns> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const candidate = port || LOW + Math.floor(Math.random() * (HIGH - LOW));
      const socket = dgram.createSocket("udp4");
      try {
        await new Promise<void>((resolve, reject) => {
          socket.once("error", reject);
          socket.bind(candidate, host, () => {
            socket.off("error", reject);
            resolve();
          });
        });
        return new DiscoveryDns(socket, host, candidate);
      } catch (err) {
        socket.close();
        if (port)
          throw new Error(`the stack's DNS server cannot listen on ${host}:${port} (UDP): ${(err as Error).message}`);
      }
    }
    throw new Error(`the stack's DNS server found no free UDP port in ${LOW}-${HIGH}`);
  }

  /** `127.0.0.1:20053`, as DNS_SERVER takes it. */
  get address(): string {
    return `${this.host}:${this.port}`;
  }

  set(name: string, addresses: string[]): void {
    for (const a of addresses) if (!isIPv4(a)) throw new Error(`${a} is not an IPv4 address (record ${name})`);
    this.#records.set(name.toLowerCase(), [...addresses]);
  }

  delete(name: string): void {
    this.#records.delete(name.toLowerCase());
  }

  lookup(name: string): string[] | undefined {
    return this.#records.get(name.toLowerCase());
  }

  close(): void {
    this.socket.close();
  }

  #answer(query: Buffer, from: dgram.RemoteInfo): void {
    const question = parseQuestion(query);
    if (!question) return;
    this.queries++;
    const known = this.#records.get(question.name);
    const addresses = question.type === TYPE_A && question.class === CLASS_IN ? (known ?? []) : [];
    const header = Buffer.alloc(HEADER_BYTES);
    header.writeUInt16BE(query.readUInt16BE(0), 0); // the query's id
    // QR=1, AA=1, RD copied from the query, RCODE NXDOMAIN (3) for unknown names.
    header.writeUInt16BE(0x8400 | (query.readUInt16BE(2) & 0x0100) | (known ? 0 : 3), 2);
    header.writeUInt16BE(1, 4); // QDCOUNT
    header.writeUInt16BE(addresses.length, 6); // ANCOUNT
    const answers = addresses.map((ip) => {
      const rr = Buffer.alloc(16);
      rr.writeUInt16BE(0xc000 | HEADER_BYTES, 0); // the name: a pointer to the question's
      rr.writeUInt16BE(TYPE_A, 2);
      rr.writeUInt16BE(CLASS_IN, 4);
      rr.writeUInt32BE(0, 6); // TTL 0: the set changes during a rollout
      rr.writeUInt16BE(4, 10);
      ip.split(".").forEach((part, i) => {
        rr[12 + i] = Number(part);
      });
      return rr;
    });
    this.socket.send(
      Buffer.concat([header, query.subarray(HEADER_BYTES, question.end), ...answers]),
      from.port,
      from.address,
    );
  }
}

interface Question {
  name: string;
  type: number;
  class: number;
  /** Offset just past the question section. */
  end: number;
}

/** The first question of a standard query, or undefined when the packet is not one. */
function parseQuestion(packet: Buffer): Question | undefined {
  if (packet.length < HEADER_BYTES + 5) return undefined;
  const flags = packet.readUInt16BE(2);
  if (flags & 0x8000 || packet.readUInt16BE(4) < 1) return undefined; // a response, or no question
  const labels: string[] = [];
  let offset = HEADER_BYTES;
  for (;;) {
    if (offset >= packet.length) return undefined;
    const length = packet[offset]!;
    if (length === 0) break;
    if (length > 63 || offset + 1 + length > packet.length) return undefined; // compression is not used in questions
    labels.push(packet.subarray(offset + 1, offset + 1 + length).toString("latin1"));
    offset += length + 1;
  }
  offset += 1;
  if (offset + 4 > packet.length) return undefined;
  return {
    name: labels.join(".").toLowerCase(),
    type: packet.readUInt16BE(offset),
    class: packet.readUInt16BE(offset + 2),
    end: offset + 4,
  };
}
