import type { Logger } from '@burrow/shared';

/**
 * Connection failures, logged once per change of reason across all of an
 * agent's connections: a relay that is down for an hour produces one warning
 * (and debug lines with a running count), not one per retry per connection.
 */
export class FailureLog {
  readonly #log: Logger;
  #lastReason: string | undefined;
  #count = 0;

  constructor(logger: Logger) {
    this.#log = logger;
  }

  /** Records a failed attempt of connection `conn`; logs at `level` only when the reason changed. */
  failed(conn: number, reason: string, retryIn: number, level: 'warn' | 'error' = 'warn'): void {
    this.#count++;
    const fields = { conn, reason, failures: this.#count, retryIn };
    if (reason === this.#lastReason) {
      this.#log.debug(fields, 'tunnel connect failed again');
      return;
    }
    this.#lastReason = reason;
    this.#log[level](fields, 'tunnel connect failed; retrying');
  }

  /** A connection came up: returns the failures since the last success and starts over. */
  recovered(): number {
    const n = this.#count;
    this.#count = 0;
    this.#lastReason = undefined;
    return n;
  }
}
