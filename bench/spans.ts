/**
 * What tracing costs per request, outside the gateway: the gateway's own span helpers
 * (lib/telemetry/spans.ts) make one server span and one client span per request, with the
 * attributes the gateway sets, 64 requests in flight with two turns of the event loop each, as a
 * proxied request has. Three modes, each in a process of its own (a tracer provider is global):
 *
 *   unsampled  spans started and ended, sampler always_off (ids and traceparent still made)
 *   recorded   sampled, ended into the batch processor, exported nowhere (an exporter that drops)
 *   exported   sampled and exported over OTLP/HTTP (protobuf, the default) to a sink
 *              (bench/upstream.ts, another process)
 *   exported-json  the same in OTLP/JSON (OTEL_EXPORTER_OTLP_PROTOCOL=http/json)
 *
 * Prints CPU µs per request of this process (all threads) and the ratio to `unsampled`.
 * A loop like this one understates what the same work costs inside the gateway, whose request path
 * works over far more code and heap (bench/README.md, "where tracing's cost sits").
 * Usage: bun bench/spans.ts
 */
import { context, trace } from "@opentelemetry/api";
import type { SpanExporter } from "@opentelemetry/sdk-trace";
import { freePort } from "../scripts/stack/testing/ports.ts";
import { headersGetter, headersSetter, startClientSpan, startServerSpan } from "../lib/telemetry/spans.ts";
import { startTracing } from "../lib/telemetry/tracing.ts";
import { spawn, stop, waitHttp } from "./procs.ts";

const MODES = ["unsampled", "recorded", "exported", "exported-json"] as const;
type Mode = (typeof MODES)[number];
const IN_FLIGHT = 64;
const PER_WORKER = 3_000;

const turn = () => new Promise((resolve) => setImmediate(resolve));
const dropping = {
  export: (_spans: unknown, done: (result: { code: number }) => void) => done({ code: 0 }),
  shutdown: async () => {},
  forceFlush: async () => {},
} as unknown as SpanExporter;

async function measure(mode: Mode, sink: string): Promise<number> {
  const tracing = await startTracing(
    { service: "gateway", version: "bench", instance: "bench-spans" },
    {
      env: {
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://${sink}`,
        OTEL_TRACES_SAMPLER: mode === "unsampled" ? "always_off" : "parentbased_always_on",
        OTEL_BSP_SCHEDULE_DELAY: "1000",
        ...(mode === "exported-json" ? { OTEL_EXPORTER_OTLP_PROTOCOL: "http/json" } : {}),
      },
      ...(mode === "recorded" ? { exporter: dropping } : {}),
    },
  );
  const { tracer } = tracing;
  let n = 0;
  const request = async () => {
    const id = `r${n++}`;
    const scope = startServerSpan(
      tracer,
      "POST",
      new Headers({ "content-type": "application/json" }),
      headersGetter,
      id,
      {
        "http.request.method": "POST",
        "url.path": "/projects",
      },
    );
    await context.with(scope, async () => {
      await turn();
      const client = startClientSpan(tracer, "POST", new Headers(), headersSetter, {});
      client.setAttributes({
        "http.request.method": "POST",
        "url.full": "http://127.0.0.1:8080/projects",
        "server.address": "127.0.0.1",
        "server.port": 8080,
      });
      await turn();
      client.setAttribute("http.response.status_code", 201);
      client.end();
      const server = trace.getSpan(scope)!;
      server.setAttribute("client.address", "127.0.0.1");
      server.updateName("POST /projects");
      server.setAttributes({ "http.route": "/projects", "portico.route": "projects", "portico.upstream": "webapp" });
      server.setAttribute("http.response.status_code", 201);
      server.end();
    });
  };
  const run = (count: number) =>
    Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        for (let i = 0; i < count; i++) await request();
      }),
    );
  await run(PER_WORKER / 10); // warm-up
  const before = process.cpuUsage();
  await run(PER_WORKER);
  const used = process.cpuUsage(before);
  await tracing.shutdown();
  return (used.user + used.system) / (IN_FLIGHT * PER_WORKER);
}

const [mode, sink] = process.argv.slice(2);
if (mode) {
  // A child: one mode, its figure on stdout.
  console.log(JSON.stringify(await measure(mode as Mode, sink!)));
  process.exit(0);
}

const port = await freePort();
const sinkProc = spawn("otlp sink", [process.execPath, `${import.meta.dir}/upstream.ts`, String(port)], {
  stdout: "ignore",
  stderr: "inherit",
});
try {
  await waitHttp(`http://127.0.0.1:${port}/readyz`, sinkProc);
  const figures = new Map<Mode, number>();
  for (const m of MODES) {
    const child = spawn(`spans ${m}`, [process.execPath, import.meta.path, m, `127.0.0.1:${port}`], {
      stdout: "pipe",
      stderr: "inherit",
    });
    const out = await new Response(child.stdout as ReadableStream).text();
    if ((await child.exited) !== 0) throw new Error(`the ${m} run failed`);
    figures.set(m, Number(out.trim()));
  }
  const base = figures.get("unsampled")!;
  console.log("tracing, one server + one client span per request, 64 in flight (CPU µs per request):");
  for (const [m, us] of figures)
    console.log(`  ${m.padEnd(10)} ${us.toFixed(2).padStart(6)}  ${(us / base).toFixed(2)}×`);
} finally {
  await stop(sinkProc);
}
