/**
 * Reads a JSON request body with a hard size limit and a nesting limit, for Elysia's `parse` hook.
 *
 * The size limit is enforced on the bytes actually read, not only on `content-length`: a chunked
 * body has no length, and `app.handle()` (tests, embedding) never passes through Bun.serve's own
 * `maxRequestBodySize`. Reading stops at the first byte over the limit. Nesting is measured on the
 * bytes before JSON.parse: deep nesting overflowed Elysia's validation error mapper (a 500).
 */
import { exceedsJsonDepth, isJsonMediaType } from "../../lib/json.ts";
import { invalidFieldsProblem } from "./error-problem.ts";
import { HttpProblem } from "./http-problem.ts";

export interface JsonBodyLimits {
  maxBytes: number;
  maxDepth: number;
}

export async function readJsonBody(request: Request, { maxBytes, maxDepth }: JsonBodyLimits): Promise<unknown> {
  const contentType = request.headers.get("content-type");
  if (!isJsonMediaType(contentType)) {
    throw new HttpProblem({
      title: "Unsupported Media Type",
      status: 415,
      detail: `expected a JSON body (content-type: application/json), got ${contentType ? JSON.stringify(contentType) : "no content-type"}`,
    });
  }
  // A compressed body read as JSON would be "not valid UTF-8", telling the client its JSON is
  // broken: an unsupported content coding is a 415 (RFC 9110 §15.5.16), naming it.
  const encoding = request.headers.get("content-encoding")?.trim().toLowerCase();
  if (encoding && encoding !== "identity") {
    throw new HttpProblem({
      title: "Unsupported Media Type",
      status: 415,
      detail: `the body is sent with content-encoding ${JSON.stringify(encoding)}; this API takes uncompressed JSON only`,
    });
  }
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) throw tooLarge(maxBytes);

  const bytes = await readAtMost(request, maxBytes);
  if (exceedsJsonDepth(bytes, maxDepth)) {
    throw new HttpProblem(
      invalidFieldsProblem([{ field: "body", message: `the body is nested deeper than ${maxDepth} levels` }], "body"),
    );
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw malformed("the body is not valid UTF-8");
  }
  if (text.trim() === "") throw malformed("the body is empty; send a JSON object");
  try {
    return JSON.parse(text);
  } catch (err) {
    throw malformed(`the body is not valid JSON: ${(err as Error).message}`);
  }
}

async function readAtMost(request: Request, maxBytes: number): Promise<Uint8Array> {
  if (!request.body) return new Uint8Array();
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = request.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => {});
      throw tooLarge(maxBytes);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks, total);
}

const tooLarge = (maxBytes: number) =>
  new HttpProblem({
    title: "Content Too Large",
    status: 413,
    detail: `the request body exceeds the limit of ${maxBytes} bytes`,
  });

const malformed = (detail: string) => new HttpProblem({ title: "Malformed JSON", status: 400, detail });
