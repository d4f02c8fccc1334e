/**
 * The wire formats: request schemas (TypeBox, validated by Elysia before a handler runs) and the
 * JSON a project is returned as. Each schema carries the message a client sees when a value is
 * refused; the app maps the failing path to `errors[].field`.
 */
import { t } from "elysia";
import { invalidFieldsProblem } from "./error-problem.ts";
import { HttpProblem } from "./http-problem.ts";
import type { Project } from "./store/store.ts";

export const TITLE_MAX_LENGTH = 200;
export const LIST_LIMIT_DEFAULT = 20;
export const LIST_LIMIT_MAX = 100;

/**
 * Path and query values arrive as strings; a pattern keeps the grammar strict (no `1e3`, `0x10`,
 * ` 7` or numbers past 2^53) before the string is decoded to a number once, here.
 */
const decimalInteger = (pattern: string, error: string) =>
  t
    .Transform(t.String({ pattern, error }))
    .Decode((value) => Number(value))
    .Encode((value) => String(value));

export const ProjectParams = t.Object({
  id: decimalInteger("^[1-9][0-9]{0,14}$", "id must be a positive integer (at most 15 digits)"),
});

export const ListQuery = t.Object({
  limit: t.Optional(decimalInteger("^([1-9][0-9]?|100)$", `limit must be an integer from 1 to ${LIST_LIMIT_MAX}`)),
  after: t.Optional(
    decimalInteger(
      "^(0|[1-9][0-9]{0,14})$",
      "after must be a project id (a non-negative integer), e.g. the previous page's `next`",
    ),
  ),
});

/**
 * `title` is trimmed before this check (see the route), so whitespace-only titles are refused and
 * length counts what is stored. Length is JavaScript string length (UTF-16 code units), the same
 * rule TypeBox applies: a character outside the BMP, like most emoji, counts as 2. Unknown members
 * are ignored (dropped, not stored), so older clients keep working when fields are added.
 */
export const CreateProjectBody = t.Object({
  title: t.String({
    minLength: 1,
    maxLength: TITLE_MAX_LENGTH,
    error: `title is required: a string of 1 to ${TITLE_MAX_LENGTH} characters, not only whitespace`,
  }),
});

/**
 * Runs before validation (Elysia's `transform`): refuses a body that is not a JSON object — Elysia
 * would otherwise validate `"text"` or `42` as `{}` and blame a missing title — refuses a title
 * that is not valid Unicode, and trims the title.
 */
export function prepareCreateProjectBody(body: unknown): void {
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new HttpProblem(
      invalidFieldsProblem(
        [{ field: "body", message: 'the body must be a JSON object like {"title": "My project"}' }],
        "body",
      ),
    );
  }
  const fields = body as { title?: unknown };
  if (typeof fields.title !== "string") return;
  // JSON can spell a lone surrogate (`"\ud800"`); stored, it would silently become U+FFFD.
  if (!fields.title.isWellFormed()) {
    throw new HttpProblem(
      invalidFieldsProblem(
        [
          {
            field: "title",
            message: "title is not valid Unicode: it contains a lone surrogate (an unpaired \\uD800-\\uDFFF escape)",
          },
        ],
        "body",
      ),
    );
  }
  fields.title = fields.title.trim();
}

export interface ProjectJson {
  id: number;
  /** `Project-<title>`: the field the original service returned, kept for its clients. */
  url: string;
  title: string;
  created_at: string;
}

export const projectJson = (p: Project): ProjectJson => ({
  id: p.id,
  url: `Project-${p.title}`,
  title: p.title,
  created_at: p.createdAt,
});
