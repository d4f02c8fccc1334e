/**
 * scripts/load.ts (`make load`) against a stand-in gateway that counts the TCP connections it
 * accepts: keep-alive clients reuse theirs, the LOAD_NEW_CONN_RPS clients open one per request —
 * what lets gateway pods an autoscaler adds get a share of the load.
 */
import { afterEach, expect, test } from "bun:test";
import { createServer, type Server } from "node:http";
import { freePort } from "../stack/testing/ports.ts";
import { type Fakes, HAPPY, makeFakes, runScript } from "./fakes.ts";

let fakes: Fakes | undefined;
let server: Server | undefined;
afterEach(() => {
  fakes?.cleanup();
  server?.closeAllConnections();
  server?.close();
});

/** Answers the load's mix (GET /projects/?limit=10, POST /verify/) as the gateway does; counts connections and requests. */
async function countingGateway(): Promise<{ url: string; connections: () => number; requests: Set<string> }> {
  let connections = 0;
  const requests = new Set<string>();
  server = createServer((req, res) => {
    requests.add(`${req.method} ${req.url}`);
    req.resume();
    req.on("end", () => {
      const created = req.url === "/projects/";
      res.writeHead(created ? 201 : 200, { "content-type": "application/json", "x-served-by": "stand-in-1" });
      res.end(JSON.stringify(created ? { id: 1, url: "Project-x" } : { message: "Verified: 121" }));
    });
  });
  server.on("connection", () => connections++);
  const port = await freePort();
  await new Promise<void>((resolve) => server!.listen(port, "127.0.0.1", resolve));
  return { url: `http://127.0.0.1:${port}`, connections: () => connections, requests };
}

test("keep-alive clients and, beside them, clients opening a connection per request; nothing failed", async () => {
  const gateway = await countingGateway();
  fakes = makeFakes(HAPPY);
  const run = await runScript("load", fakes, {
    GATEWAY_URL: gateway.url,
    LOAD_RPS: "20",
    LOAD_NEW_CONN_RPS: "10",
    LOAD_DURATION_S: "2",
  });
  expect({ exitCode: run.exitCode, stderr: run.stderr }).toEqual({ exitCode: 0, stderr: "" });
  expect(run.stdout).toContain("20 requests/s on keep-alive connections and 10/s each on a new one, for 2 s");
  const clients =
    /clients {4}keep-alive (\d+) sent, (\d+) failed; a new connection per request (\d+) sent, (\d+) failed/.exec(
      run.stdout,
    );
  expect(clients).not.toBeNull();
  const [keepAliveSent, keepAliveFailed, newSent, newFailed] = clients!.slice(1).map(Number) as [
    number,
    number,
    number,
    number,
  ];
  expect([keepAliveFailed, newFailed]).toEqual([0, 0]);
  // Reads on webapp's route: minutes of creates would fill its store (it keeps every project).
  expect(gateway.requests).toEqual(new Set(["GET /projects/?limit=10", "POST /verify/"]));
  expect(newSent).toBeGreaterThanOrEqual(15);
  // Every new-connection request had its own; the keep-alive ones shared a few.
  expect(gateway.connections()).toBeGreaterThanOrEqual(newSent);
  expect(gateway.connections()).toBeLessThan(newSent + keepAliveSent);
});
