/**
 * `gateway --check <routes.yaml>`, like `nginx -t`: validates a routes file exactly as start-up
 * and reload would (parse, `${VAR}` interpolation from this environment, schema, cross-checks,
 * protos) without starting anything. Prints "ok" and returns 0, or prints every problem as
 * `file:line:column field: message` and returns 78 (EX_CONFIG, as a gateway refusing to start).
 */
import { ConfigError } from "./config/load.ts";
import { loadConfigFile } from "./config/reload.ts";

/** EX_USAGE and EX_CONFIG (sysexits.h). */
const EX_USAGE = 64;
export const EX_CONFIG = 78;

export function checkRoutesFile(file: string | undefined, env: Readonly<Record<string, string | undefined>>): number {
  if (!file) {
    console.error("usage: gateway --check <routes.yaml>");
    return EX_USAGE;
  }
  try {
    loadConfigFile(file, env);
    console.log("ok");
    return 0;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    console.error(err.message);
    return EX_CONFIG;
  }
}
