/**
 * What one connection's receive windows may grow to together, past their
 * initial size. Auto-tuning grows a stream's window while half of it drains
 * in under two round trips, and the peer times the round trips (its PONGs):
 * a peer that delays each by the same amount looks like a long, empty path,
 * and every stream's window would grow to `maxWindow`. What a side buffers
 * for streams whose reader then stops is their windows, so without a shared
 * bound a connection's streams could hold thousands of times `maxWindow`.
 */
export class WindowBudget {
  readonly #initial: number;
  readonly #limit: number;
  #used = 0;

  /** `initial`: every stream's starting window; `limit`: growth past it, summed over streams. */
  constructor(initial: number, limit: number) {
    this.#initial = initial;
    this.#limit = limit;
  }

  /** Growth past the initial windows, in bytes, held now. */
  get used(): number {
    return this.#used;
  }

  /** StreamHost.resizeWindow: a move of `resize` from `window`, cut to what the budget has left. */
  resize(window: number, resize: number): number {
    const before = Math.max(0, window - this.#initial);
    let after = Math.max(0, window + resize - this.#initial);
    if (after > before) after = Math.min(after, before + Math.max(0, this.#limit - this.#used));
    this.#used += after - before;
    // At or below the start the move is free; above it, the window ends where the budget allows.
    const target = window + resize;
    return (target > this.#initial ? this.#initial + after : target) - window;
  }

  /** A stream with this window is gone: its growth goes back. */
  release(window: number): void {
    this.#used -= Math.max(0, window - this.#initial);
  }
}
