/**
 * Which methods a path supports, derived from the app's own route table, so a wrong method on a
 * known path answers 405 with `allow` (RFC 9110 §15.5.6) instead of Elysia's 404.
 */
export interface RouteEntry {
  method: string;
  path: string;
}

export type AllowedMethods = (path: string) => string[];

/** `/projects/:id` → /^\/projects\/[^/]+\/?$/ ; a trailing slash is optional, as in Elysia's router. */
function pathPattern(routePath: string): RegExp {
  const source = routePath
    .replace(/\/+$/, "")
    .split("/")
    .map((segment) => (segment.startsWith(":") ? "[^/]+" : segment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")))
    .join("/");
  return new RegExp(`^${source}/?$`);
}

export function allowedMethodsOf(routes: readonly RouteEntry[]): AllowedMethods {
  const patterns = new Map<string, { pattern: RegExp; methods: Set<string> }>();
  for (const { method, path } of routes) {
    const entry = patterns.get(path) ?? { pattern: pathPattern(path), methods: new Set<string>() };
    entry.methods.add(method);
    // Elysia answers HEAD for every GET route.
    if (method === "GET") entry.methods.add("HEAD");
    patterns.set(path, entry);
  }
  return (path) => {
    const allowed = new Set<string>();
    for (const { pattern, methods } of patterns.values()) {
      if (pattern.test(path)) for (const m of methods) allowed.add(m);
    }
    return [...allowed].sort();
  };
}
