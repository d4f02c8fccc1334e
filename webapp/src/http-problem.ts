/**
 * An error answer as a value: code that refuses a request (bad input, unknown project, not ready)
 * throws an HttpProblem, and the app's single onError turns it — and every error Elysia raises
 * itself — into an RFC 9457 response.
 */
import type { Problem } from "../../lib/problem.ts";

export class HttpProblem extends Error {
  override name = "HttpProblem";

  constructor(readonly problem: Problem) {
    super(problem.detail ?? problem.title);
  }
}
