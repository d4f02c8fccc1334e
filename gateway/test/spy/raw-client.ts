/**
 * A client that sends exact bytes and keeps every byte of the answer, for what fetch hides: the
 * response head as the gateway wrote it (hop-by-hop headers, framing), whether a chunked body
 * was terminated, whether the connection was closed.
 */
import { connect } from "node:net";

export interface RawExchange {
  bytes: Buffer;
  /** The server closed the connection (or reset it) before `timeoutMs`. */
  closed: boolean;
  ms: number;
}

/**
 * Sends `data` on a fresh connection and collects the answer until the server closes, `done`
 * says the answer is complete, or `timeoutMs` passes (then the client closes).
 */
export function rawExchange(
  port: number,
  data: string | Uint8Array,
  opts: { timeoutMs?: number; done?: (received: Buffer) => boolean; halfClose?: boolean } = {},
): Promise<RawExchange> {
  const started = performance.now();
  return new Promise((resolve) => {
    const socket = connect({ host: "127.0.0.1", port });
    const chunks: Buffer[] = [];
    let settled = false;
    const finish = (closed: boolean) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ bytes: Buffer.concat(chunks), closed, ms: performance.now() - started });
    };
    const timer = setTimeout(() => finish(false), opts.timeoutMs ?? 5_000);
    socket.on("connect", () => {
      socket.write(data);
      if (opts.halfClose) socket.end();
    });
    socket.on("data", (chunk: Buffer) => {
      chunks.push(chunk);
      if (opts.done?.(Buffer.concat(chunks))) finish(false);
    });
    socket.on("error", () => {});
    socket.on("close", () => finish(true));
  });
}

export interface ParsedResponse {
  status: number;
  /** Names lower-cased, in order. */
  headers: [string, string][];
  /** Body bytes as framed by the head (Content-Length or chunked, de-chunked). */
  body: Buffer;
  /** Whether the body was complete per its framing (terminating chunk seen, or all of Content-Length). */
  complete: boolean;
}

/** Parses the first final (non-1xx) response in `bytes`; undefined when no complete head arrived. */
export function parseResponse(bytes: Buffer): ParsedResponse | undefined {
  const text = bytes.toString("latin1");
  let offset = 0;
  for (;;) {
    const headEnd = text.indexOf("\r\n\r\n", offset);
    if (headEnd < 0) return undefined;
    const [statusLine = "", ...lines] = text.slice(offset, headEnd).split("\r\n");
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
    if (!m) return undefined;
    const status = Number(m[1]);
    if (status >= 100 && status < 200) {
      offset = headEnd + 4;
      continue;
    }
    const headers = lines.map((l): [string, string] => {
      const colon = l.indexOf(":");
      return [l.slice(0, colon).trim().toLowerCase(), l.slice(colon + 1).trim()];
    });
    const get = (n: string) => headers.find(([k]) => k === n)?.[1];
    const bodyStart = headEnd + 4;
    if (get("transfer-encoding")?.toLowerCase() === "chunked") {
      const parts: Buffer[] = [];
      let at = bodyStart;
      for (;;) {
        const sizeEnd = text.indexOf("\r\n", at);
        if (sizeEnd < 0) return { status, headers, body: Buffer.concat(parts), complete: false };
        const size = Number.parseInt(text.slice(at, sizeEnd), 16);
        if (!Number.isFinite(size)) return { status, headers, body: Buffer.concat(parts), complete: false };
        if (size === 0)
          return { status, headers, body: Buffer.concat(parts), complete: text.startsWith("\r\n", sizeEnd + 2) };
        const dataEnd = sizeEnd + 2 + size;
        parts.push(bytes.subarray(sizeEnd + 2, Math.min(dataEnd, bytes.length)));
        if (dataEnd + 2 > bytes.length) return { status, headers, body: Buffer.concat(parts), complete: false };
        at = dataEnd + 2;
      }
    }
    const length = get("content-length");
    const body = bytes.subarray(bodyStart, length === undefined ? bytes.length : bodyStart + Number(length));
    return { status, headers, body, complete: length === undefined || body.length === Number(length) };
  }
}

/** A header's value from a parsed response (lower-case name); undefined when absent. */
export function responseHeader(res: ParsedResponse, name: string): string | undefined {
  return res.headers.find(([k]) => k === name)?.[1];
}
