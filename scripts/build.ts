/**
 * `make build`: each service compiled into one self-contained executable in dist/.
 * `--bytecode` halves start-up (~80 ms to the first 200) and needs `--format=esm` for top-level
 * await (docs/design.md, "Known traps"); `--bytecode-order` lays out first what a replica runs
 * first (<service>/bytecode.order, `make bytecode-order`). Protos are embedded by lib/proto.ts, so
 * the binaries need no files beside them.
 * Usage: bun scripts/build.ts [gateway|webapp|rpcapp ...]
 */
import { $ } from "zx";
import { compileFlags, SERVICES, type Service } from "./cluster/images.ts";

const requested = process.argv.slice(2);
const unknown = requested.filter((s) => !(SERVICES as readonly string[]).includes(s));
if (unknown.length > 0) {
  console.error(`unknown service(s): ${unknown.join(", ")}; choose from ${SERVICES.join(", ")}`);
  process.exit(2);
}
$.verbose = true;
for (const service of requested.length > 0 ? (requested as Service[]) : SERVICES) {
  await $`bun build ${compileFlags(service)} ${service}/src/main.ts --outfile dist/${service}`;
}
const sizes = await $({ verbose: false })`ls -la dist/`;
console.log(sizes.stdout);
