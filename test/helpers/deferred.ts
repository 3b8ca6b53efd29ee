/** A promise and the function that resolves it: a backend held until released, an event awaited. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

/** Resolves with `p`, or rejects naming `what` after `ms`: a bound on an awaited event, not a sleep. */
export function within<T>(ms: number, p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not within ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

/**
 * Resolves once `check` holds, asking again every 20 ms; rejects naming
 * `what` after `ms`. For state with no event to await (a gauge that follows a
 * stream's close on the far side of a tunnel).
 */
export async function until(check: () => Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`${what}: not so after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
