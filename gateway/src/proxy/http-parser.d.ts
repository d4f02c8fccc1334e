/**
 * Types for the HTTP/1.1 parser Bun ships as `node:_http_common`'s HTTPParser: llhttp, the parser of
 * Node's http module, built into the runtime (Bun 1.4.5). The surface here is what
 * proxy/h1-client.ts uses; the callbacks are Node's, keyed by the numeric constants.
 */
declare module "node:_http_common" {
  export class HTTPParser {
    static readonly REQUEST: 1;
    static readonly RESPONSE: 2;
    static readonly kOnMessageBegin: number;
    static readonly kOnHeaders: number;
    static readonly kOnHeadersComplete: number;
    static readonly kOnBody: number;
    static readonly kOnMessageComplete: number;
    /** `maxHeaderSize`: bytes of status line and headers before HPE_HEADER_OVERFLOW; `lenient`: 0 = strict. */
    initialize(type: 1 | 2, resource: object, maxHeaderSize?: number, lenient?: number): void;
    /** Bytes parsed, or the parse error (`code`: "HPE_…"). */
    execute(data: Uint8Array): number | (Error & { code?: string; reason?: string });
    /** The end of the stream: completes a body delimited by the connection's close, or returns the error. */
    finish(): number | undefined | (Error & { code?: string });
    close(): void;
    [callback: number]: ((...args: never[]) => unknown) | undefined;
  }
}
