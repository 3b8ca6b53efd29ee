/** A promise and the function that resolves it: a backend held until released, an event awaited. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/**
 * Resolves once `check` holds, asking again after each 10 ms; rejects, naming
 * `what`, if it still does not after `timeoutMs`. For state that settles with
 * no event a test can await (a gauge that follows a stream's close on the far
 * side of a tunnel).
 */
export async function until(check: () => boolean | Promise<boolean>, what: string, timeoutMs = 5_000) {
  const deadline = performance.now() + timeoutMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`${what}: not so after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
