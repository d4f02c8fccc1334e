/**
 * /dashboard/events: the tier's state as Server-Sent Events, one `state` event per second
 * (https://html.spec.whatwg.org/multipage/server-sent-events.html). The first event of a
 * connection carries the routes' whole history; the next ones only their last few seconds, and
 * every second the round changed (a replica that answers again sends the seconds it missed),
 * which the page writes over what it has (so a second corrected by a late replica is redrawn).
 */
import type { TierState, TierView } from "./tier.ts";

/** Seconds of route history re-sent in every event after the first, at the least. */
const RESENT_SECONDS = 5;
/** Events a client may fall behind by before it is dropped (it reconnects, and gets the history anew). */
const MAX_QUEUED_EVENTS = 30;

const encoder = new TextEncoder();

export function tierEventStream(tier: TierView, signal: AbortSignal): Response {
  let unsubscribe: (() => void) | undefined;
  let sentHistory = false;
  const stream = new ReadableStream<Uint8Array>({
    start(controller) {
      // Reconnect quickly after a gateway restart (EventSource does so by itself).
      controller.enqueue(encoder.encode("retry: 1000\n\n"));
      const send = (state: TierState) => {
        // A page that stopped reading would otherwise have every event queued here for it.
        if ((controller.desiredSize ?? 0) < -MAX_QUEUED_EVENTS) return stop();
        try {
          controller.enqueue(
            encoder.encode(`event: state\ndata: ${JSON.stringify(sentHistory ? recent(state) : state)}\n\n`),
          );
          sentHistory = true;
        } catch {
          stop();
        }
      };
      const stop = () => {
        unsubscribe?.();
        unsubscribe = undefined;
        try {
          controller.close();
        } catch {}
      };
      unsubscribe = tier.subscribe(send, stop);
      signal.addEventListener("abort", stop, { once: true });
    },
    cancel() {
      unsubscribe?.();
    },
  });
  return new Response(stream, {
    headers: {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      // Proxies (nginx, kubectl port-forward is fine) must pass each event through at once.
      "x-accel-buffering": "no",
    },
  });
}

/** The state with each route's series cut to the seconds it changed, and at least its last RESENT_SECONDS. */
export function recent(state: TierState): TierState {
  return {
    ...state,
    routes: state.routes.map((r) => {
      const cut = Math.max(0, Math.min(r.requests.length - RESENT_SECONDS, state.changedFrom - r.from));
      return {
        ...r,
        from: r.from + cut,
        requests: r.requests.slice(cut),
        errors: r.errors.slice(cut),
        denied: r.denied.slice(cut),
        p50: r.p50.slice(cut),
        p99: r.p99.slice(cut),
      };
    }),
  };
}
