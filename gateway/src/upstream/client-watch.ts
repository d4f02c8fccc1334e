/**
 * How the transports learn that the client of a request went away, so that its upstream call is
 * abandoned (the HTTP connection closed, the gRPC stream reset with CANCEL) rather than left to
 * run to its timeout (upstream/dispatch.ts).
 *
 * Bun.serve's `req.signal` says it, but costs to use: the signal is made on first access and a
 * listener on it is more work per request — together ~4 µs of a ~70 µs proxied request, while
 * nearly every answer comes in a few ms (bench/README.md, 2026-12-07). So a transport looks at the
 * client only once a call has run `CLIENT_WATCH_MS`: then a client already gone cancels it at
 * once, and a listener catches one that goes later. Bun tracks the disconnect whether or not the
 * signal was made yet, so a late first look still sees it. The price: a client that leaves in a
 * call's first `CLIENT_WATCH_MS` has it cancelled at that point instead of at once.
 */

/** Whoever asked for the call: a Request from Bun.serve, an AbortController, `{ signal }`. */
export interface ClientWatch {
  readonly signal: AbortSignal;
}

/** What a call abandoned for its gone client comes to (HttpOutcome, GrpcOutcome and dispatch's alike). */
export const CANCELLED = { kind: "cancelled" } as const;

/**
 * Whether `client` is gone already: looked at, whatever the watch timer's schedule, before anything
 * is sent again — a retry (dispatch.ts), a call the upstream refused unprocessed (h2-client.ts), a
 * request whose new connection just opened (h1-client.ts).
 */
export function clientGone(client: ClientWatch | undefined): boolean {
  return client?.signal.aborted === true;
}

/** How far into a call the transports first look at its client. */
export const CLIENT_WATCH_MS = 20;

/** Whether a call of `timeoutMs` for `client` starts with the watch timer rather than its timeout. */
export function watchesClient(client: ClientWatch | undefined, timeoutMs: number): client is ClientWatch {
  return client !== undefined && timeoutMs > CLIENT_WATCH_MS;
}

/**
 * The first look at a call's client, when its watch timer fires: `cancel` is called now if the
 * client is gone (and undefined returned), else when it goes; returns the ms left of `timeoutMs`
 * since `startedAt` (performance.now()), rounded up — timers truncate a fraction, and a timeout
 * must not come early — for the timer that replaces the watch.
 */
export function lookAtClient(
  client: ClientWatch,
  cancel: () => void,
  startedAt: number,
  timeoutMs: number,
): number | undefined {
  const signal = client.signal;
  if (signal.aborted) {
    cancel();
    return undefined;
  }
  signal.addEventListener("abort", cancel, ONCE);
  return Math.max(0, Math.ceil(timeoutMs - (performance.now() - startedAt)));
}

const ONCE: AddEventListenerOptions = { once: true };
