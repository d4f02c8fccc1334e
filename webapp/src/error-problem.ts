/**
 * Every error that reaches the app's onError, as an RFC 9457 problem. Elysia's own error bodies
 * (plain text, its JSON validation dumps) never leave the service: each of its error kinds is
 * mapped here, and anything unrecognised becomes a bare 500 with no internals in it.
 */
import { ParseError, ValidationError } from "elysia";
import { STATUS_CODES } from "node:http";
import type { Problem } from "../../lib/problem.ts";
import { HttpProblem } from "./http-problem.ts";
import { StoreFullError, StoreUnavailableError } from "./store/store.ts";

export interface FieldError {
  field: string;
  message: string;
}

export function problemForError(error: unknown): Problem {
  // A parse hook's own error arrives wrapped: Elysia rethrows anything a parser throws as ParseError.
  const cause = error instanceof ParseError && error.cause !== undefined ? error.cause : error;
  if (cause instanceof HttpProblem) return cause.problem;
  if (cause instanceof StoreUnavailableError)
    return { title: "Service Unavailable", status: 503, detail: "the project store is unavailable; retry shortly" };
  // RFC 4918's 507: the server cannot store what the request needs; not transient, so no Retry-After.
  if (cause instanceof StoreFullError)
    return {
      title: "Insufficient Storage",
      status: 507,
      detail: `the project store is full: it holds its maximum of ${cause.maxProjects} projects, and no more can be created`,
    };
  if (cause instanceof ValidationError) return validationProblem(cause);
  if (error instanceof ParseError)
    return { title: "Malformed request body", status: 400, detail: "the request body could not be parsed" };

  const status = statusOf(error);
  if (status !== undefined && status >= 400 && status < 500)
    return { title: STATUS_CODES[status] ?? "Client Error", status };
  return { title: "Internal Server Error", status: 500, detail: "an unexpected error occurred; it has been logged" };
}

/** Elysia's NotFoundError, InvalidCookieSignature, … carry `status`; status(…) responses carry `code`. */
function statusOf(error: unknown): number | undefined {
  if (typeof error !== "object" || error === null) return undefined;
  const { status, code } = error as { status?: unknown; code?: unknown };
  if (typeof status === "number") return status;
  if (typeof code === "number") return code;
  return undefined;
}

function validationProblem(error: ValidationError): Problem {
  const errors: FieldError[] = [];
  const seen = new Set<string>();
  for (const issue of error.all) {
    // "/title" → "title"; an empty path means the whole value (e.g. a body that is not an object).
    const field = issue.path ? issue.path.slice(1).replaceAll("/", ".") : error.type;
    const custom = (issue.schema as { error?: unknown } | undefined)?.error;
    const message = typeof custom === "string" ? custom : `${field}: ${issue.message}`;
    const key = `${field}\u0000${message}`;
    if (seen.has(key)) continue;
    seen.add(key);
    errors.push({ field, message });
  }
  return invalidFieldsProblem(errors, error.type === "params" ? "path" : error.type);
}

/** The one shape of a 400 for invalid input: `errors` lists every field and what is wrong with it. */
export function invalidFieldsProblem(errors: FieldError[], where: string): Problem {
  return {
    title: "Invalid request",
    status: 400,
    detail: errors.length === 1 ? errors[0]!.message : `the request ${where} has ${errors.length} invalid fields`,
    errors,
  };
}
