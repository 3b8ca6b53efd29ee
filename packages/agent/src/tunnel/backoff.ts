export interface BackoffOptions {
  /** First retry delay bound, ms. Default 500. */
  base: number;
  /** Largest delay, ms. Default 30 s. */
  cap: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = Object.freeze({ base: 500, cap: 30_000 });

/**
 * How long after a planned shutdown (GOAWAY) failed attempts keep retrying
 * within `base`, ms: long enough for a relay process to restart.
 */
const RESTART_WINDOW = 15_000;

/**
 * Exponential backoff with full jitter (delay uniform in [0, min(cap, base·2^n)]),
 * so N agents that lost the same relay at the same moment do not come back in
 * lockstep. `random` is injectable for tests.
 */
export class Backoff {
  readonly #base: number;
  readonly #cap: number;
  readonly #random: () => number;
  readonly #now: () => number;
  #attempt = 0;
  /** Until then (on the `now` clock), `next()` stays within `base`: see `expectRestart`. */
  #steadyUntil = Number.NEGATIVE_INFINITY;

  /** `random` and `now` (a monotonic clock in ms) are injectable for tests. */
  constructor(
    options: BackoffOptions = DEFAULT_BACKOFF,
    random: () => number = Math.random,
    now: () => number = () => performance.now(),
  ) {
    if (!(options.base > 0) || !(options.cap >= options.base)) {
      throw new RangeError(`backoff needs 0 < base <= cap (got base ${options.base}, cap ${options.cap})`);
    }
    this.#base = options.base;
    this.#cap = options.cap;
    this.#random = random;
    this.#now = now;
  }

  get attempt(): number {
    return this.#attempt;
  }

  /**
   * Delay before the next attempt; each call doubles the bound until the cap,
   * except within a restart window (`expectRestart`).
   */
  next(): number {
    if (this.#now() < this.#steadyUntil) return this.soon();
    const bound = Math.min(this.#cap, this.#base * 2 ** Math.min(this.#attempt, 30));
    this.#attempt++;
    return Math.round(this.#random() * bound);
  }

  /**
   * A long delay for failures that retrying soon cannot fix (a refused token):
   * between half the cap and the cap, and later failures stay there.
   */
  capped(): number {
    this.#attempt = Math.max(this.#attempt, Math.ceil(Math.log2(this.#cap / this.#base)) + 1);
    return Math.round(this.#cap / 2 + (this.#random() * this.#cap) / 2);
  }

  /** A short delay (within `base`) that does not grow the bound. */
  soon(): number {
    return Math.round(this.#random() * this.#base);
  }

  /**
   * The relay announced a planned shutdown (GOAWAY): most likely it is
   * restarting, and its port refuses connections for a moment. For `window`
   * ms, failed attempts retry within `base` instead of backing off further,
   * so the tunnel is back soon after the relay listens again; then the
   * exponential schedule resumes. Returns the delay before the first attempt.
   */
  expectRestart(window = RESTART_WINDOW): number {
    this.#steadyUntil = this.#now() + window;
    return this.soon();
  }

  reset(): void {
    this.#attempt = 0;
  }
}
