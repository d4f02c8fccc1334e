/**
 * The dashboard's static files — the page, its script and style, and uPlot — embedded in the
 * gateway (imported as text, so they are inside a `bun build --compile` binary) and served from
 * memory with their content type and a CSP that allows nothing from elsewhere.
 */
import uplotCss from "uplot/dist/uPlot.min.css" with { type: "text" };
import uplotJs from "uplot/dist/uPlot.iife.min.js" with { type: "text" };
import dashboardJs from "./page/dashboard.client.js" with { type: "text" };
import dashboardCss from "./page/dashboard.css" with { type: "text" };
import page from "./page/index.html" with { type: "text" };

const SECURITY_HEADERS = {
  // uPlot styles elements through the CSSOM only, which style-src does not restrict.
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  // A new gateway version may ship a new page: never serve a stale one.
  "cache-control": "no-cache",
};

const ASSETS: Record<string, { body: string; type: string }> = {
  "dashboard.js": { body: dashboardJs, type: "text/javascript; charset=utf-8" },
  "dashboard.css": { body: dashboardCss, type: "text/css; charset=utf-8" },
  "uPlot.iife.min.js": { body: uplotJs, type: "text/javascript; charset=utf-8" },
  "uPlot.min.css": { body: uplotCss, type: "text/css; charset=utf-8" },
};

/** bun-types declares `*.html` imports as HTML bundles (Bun's HTML imports); with type "text" it is the text. */
const PAGE = page as unknown as string;

export function dashboardPage(): Response {
  return new Response(PAGE, { headers: { ...SECURITY_HEADERS, "content-type": "text/html; charset=utf-8" } });
}

/** One of the page's files by name, or undefined. */
export function dashboardAsset(name: string): Response | undefined {
  const asset = Object.hasOwn(ASSETS, name) ? ASSETS[name] : undefined;
  return asset && new Response(asset.body, { headers: { ...SECURITY_HEADERS, "content-type": asset.type } });
}
