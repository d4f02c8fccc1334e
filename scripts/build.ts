/**
 * `make build`: each service compiled into one self-contained executable in dist/.
 * `--bytecode` halves start-up (~80 ms to the first 200) and needs `--format=esm` for top-level
 * await (docs/design.md, "Known traps"). Protos are embedded by lib/proto.ts, so the binaries need no files beside them.
 * Usage: bun scripts/build.ts [gateway|webapp|rpcapp ...]
 */
import { $ } from "zx";
import { COMPILE_FLAGS, SERVICES } from "./cluster/images.ts";

const requested = process.argv.slice(2);
const unknown = requested.filter((s) => !(SERVICES as readonly string[]).includes(s));
if (unknown.length > 0) {
  console.error(`unknown service(s): ${unknown.join(", ")}; choose from ${SERVICES.join(", ")}`);
  process.exit(2);
}
$.verbose = true;
for (const service of requested.length > 0 ? requested : SERVICES) {
  await $`bun build ${COMPILE_FLAGS} ${service}/src/main.ts --outfile dist/${service}`;
}
const sizes = await $({ verbose: false })`ls -la dist/`;
console.log(sizes.stdout);
