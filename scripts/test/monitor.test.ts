/** scripts/monitor.ts (`make monitor`): what the local Prometheus scrapes, with and without TLS. */
import { expect, test } from "bun:test";
import { localTargets } from "../monitor.ts";
import { stackOptionsFromEnv } from "../stack/stack.ts";

test("the ports make dev uses; with TLS=1, webapp's plain metrics ports (its API ports speak HTTPS only)", () => {
  const plain = localTargets(stackOptionsFromEnv({}));
  expect(plain).toEqual({
    gateway: ["127.0.0.1:9901", "127.0.0.1:9902", "127.0.0.1:9903"],
    webapp: ["127.0.0.1:3001", "127.0.0.1:3002", "127.0.0.1:3003"],
    rpcapp: ["127.0.0.1:5101", "127.0.0.1:5102", "127.0.0.1:5103"],
  });
  const tls = localTargets(stackOptionsFromEnv({ TLS: "1" }));
  expect(tls.webapp).toEqual(["127.0.0.1:3101", "127.0.0.1:3102", "127.0.0.1:3103"]);
  expect([tls.gateway, tls.rpcapp]).toEqual([plain.gateway, plain.rpcapp]);
});
