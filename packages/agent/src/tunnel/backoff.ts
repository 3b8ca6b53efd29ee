export interface BackoffOptions {
  /** First retry delay bound, ms. Default 500. */
  base: number;
  /** Largest delay, ms. Default 30 s. */
  cap: number;
}

export const DEFAULT_BACKOFF: Readonly<BackoffOptions> = Object.freeze({ base: 500, cap: 30_000 });

/**
 * Exponential backoff with full jitter (delay uniform in [0, min(cap, base·2^n)]),
 * so N agents that lost the same relay at the same moment do not come back in
 * lockstep. `random` is injectable for tests.
 */
export class Backoff {
  readonly #base: number;
  readonly #cap: number;
  readonly #random: () => number;
  #attempt = 0;

  constructor(options: BackoffOptions = DEFAULT_BACKOFF, random: () => number = Math.random) {
    if (!(options.base > 0) || !(options.cap >= options.base)) {
      throw new RangeError(`backoff needs 0 < base <= cap (got base ${options.base}, cap ${options.cap})`);
    }
    this.#base = options.base;
    this.#cap = options.cap;
    this.#random = random;
  }

  get attempt(): number {
    return this.#attempt;
  }

  /** Delay before the next attempt; each call doubles the bound until the cap. */
  next(): number {
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

  /** A short delay for a planned reconnect (the relay sent GOAWAY), without growing the bound. */
  soon(): number {
    return Math.round(this.#random() * this.#base);
  }

  reset(): void {
    this.#attempt = 0;
  }
}
