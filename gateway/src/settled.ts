/**
 * A promise whose settlers are handed to an object the caller already makes per request (a try
 * on the HTTP/1.1 client, a call on the HTTP/2 one), instead of to a closure made for the purpose:
 * `new Promise((resolve) => …)` costs a function and a scope object per request, and
 * `Promise.withResolvers()` an object (bench/census.ts). The executor is one shared function;
 * Promise runs it at once, inside `promiseSettledBy`, so the holder it fills is never shared.
 */
export interface Resolved<T> {
  resolve: (value: T) => void;
}

export interface Settled<T> extends Resolved<T> {
  reject: (reason: unknown) => void;
}

let filling: Settled<never> | undefined;

function fill(resolve: (value: never) => void, reject: (reason: unknown) => void): void {
  filling!.resolve = resolve;
  filling!.reject = reject;
}

// One parameter: JavaScriptCore then makes no reject function for the promise (bench/census.ts).
function fillResolve(resolve: (value: never) => void): void {
  filling!.resolve = resolve;
}

/** A new promise, its `resolve` and `reject` set on `holder`. */
export function promiseSettledBy<T>(holder: Settled<T>): Promise<T> {
  filling = holder as Settled<never>;
  const promise = new Promise<T>(fill);
  filling = undefined;
  return promise;
}

/** The same for a holder whose promise is never rejected: only its `resolve` is set. */
export function promiseResolvedBy<T>(holder: Resolved<T>): Promise<T> {
  filling = holder as unknown as Settled<never>;
  const promise = new Promise<T>(fillResolve);
  filling = undefined;
  return promise;
}
