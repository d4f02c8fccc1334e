/**
 * Route matching, compiled once from the config: exact routes are one Map lookup, prefix routes
 * one Map lookup per path segment (longest prefix wins). A linear scan of regexes costs ~100x
 * more per request (docs/design.md, "Hot-path costs").
 */
import type { RouteConfig } from "../config/load.ts";

export type RouteMatch<R> =
  | { kind: "matched"; route: R }
  | { kind: "method-not-allowed"; allow: readonly string[] }
  | { kind: "not-found" };

interface Entry<R> {
  route: R;
  methods: ReadonlySet<string>;
  allow: readonly string[];
}

export class Router<R extends Pick<RouteConfig, "path" | "match" | "methods">> {
  readonly #exact = new Map<string, Entry<R>>();
  readonly #prefix = new Map<string, Entry<R>>();

  constructor(routes: readonly R[]) {
    for (const route of routes) {
      // HEAD is served wherever GET is, as HTTP expects.
      const methods = new Set<string>(route.methods);
      if (methods.has("GET")) methods.add("HEAD");
      const entry = { route, methods, allow: [...methods] };
      (route.match === "exact" ? this.#exact : this.#prefix).set(trimTrailingSlash(route.path), entry);
    }
  }

  /** Matches a normalised path; a trailing slash is ignored (`/verify/` matches `/verify`). */
  match(method: string, path: string): RouteMatch<R> {
    const key = trimTrailingSlash(path);
    const entry = this.#exact.get(key) ?? this.#longestPrefix(key);
    if (!entry) return { kind: "not-found" };
    if (!entry.methods.has(method)) return { kind: "method-not-allowed", allow: entry.allow };
    return { kind: "matched", route: entry.route };
  }

  #longestPrefix(path: string): Entry<R> | undefined {
    if (this.#prefix.size === 0) return undefined;
    let candidate = path;
    for (;;) {
      const entry = this.#prefix.get(candidate);
      if (entry) return entry;
      if (candidate === "/") return undefined;
      const slash = candidate.lastIndexOf("/");
      candidate = slash <= 0 ? "/" : candidate.slice(0, slash);
    }
  }
}

/** `path` without trailing slashes (`/` stays `/`): how route paths are keyed and matched. */
export function trimTrailingSlash(path: string): string {
  let end = path.length;
  while (end > 1 && path.charCodeAt(end - 1) === 47) end--;
  return end === path.length ? path : path.slice(0, end);
}
