/**
 * Headless Chromium for the browser tests (Debian's `chromium`, driven by playwright-core), each
 * launch with a fresh profile directory that `context.close()` removes.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type BrowserContext, chromium } from "playwright-core";

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export async function launchChromium(
  opts: { viewport?: { width: number; height: number } } = {},
): Promise<BrowserContext> {
  // playwright wants the profile as userDataDir, not as --user-data-dir.
  const profile = mkdtempSync(join(tmpdir(), "portico-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: Bun.which("chromium") ?? "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    ...opts,
  });
  // Removed once the browser has exited (its "close" event comes before, while it still writes).
  const close = context.close.bind(context);
  context.close = async (options) => {
    await close(options);
    rmSync(profile, { recursive: true, force: true });
  };
  return context;
}
