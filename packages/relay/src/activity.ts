import { type AccessInfo, CLIENT_CLOSED } from './proxy/forward.js';

/** One request the relay answered with an error of its own or a 5xx, as the dashboard lists it. */
export interface RecentError {
  /** ISO 8601. */
  time: string;
  /** The route hostname, or '' when the request matched none. */
  route: string;
  method: string;
  status: number;
  /** The relay's error code (x-burrow-error), or 'status' for a backend's own 5xx. */
  reason: string;
}

export interface ActivityTotals {
  requests: number;
  requestErrors: number;
  bytesIn: number;
  bytesOut: number;
}

/**
 * Running totals and the last few errors, for the admin API and dashboard.
 * The error list is a ring buffer: memory stays bounded whatever the traffic.
 * Paths and client addresses are left out: the access log has them.
 */
export class Activity {
  readonly #capacity: number;
  readonly #errors: RecentError[] = [];
  #next = 0;
  readonly #totals: ActivityTotals = { requests: 0, requestErrors: 0, bytesIn: 0, bytesOut: 0 };

  constructor(capacity = 100) {
    this.#capacity = capacity;
  }

  record(info: AccessInfo): void {
    this.#totals.requests++;
    this.#totals.bytesIn += info.bytesIn;
    this.#totals.bytesOut += info.bytesOut;
    // A client that left was not answered with an error: browsers cancel downloads and
    // page loads all the time, and the list is for what went wrong on the way.
    if ((!info.error && info.status < 500) || info.error === CLIENT_CLOSED) return;
    this.#totals.requestErrors++;
    const entry: RecentError = {
      time: new Date().toISOString(),
      route: info.route,
      method: info.method.slice(0, 16),
      status: info.status,
      reason: info.error ?? 'status',
    };
    if (this.#errors.length < this.#capacity) this.#errors.push(entry);
    else this.#errors[this.#next] = entry;
    this.#next = (this.#next + 1) % this.#capacity;
  }

  totals(): ActivityTotals {
    return { ...this.#totals };
  }

  /** Newest first. */
  recentErrors(): RecentError[] {
    const ordered =
      this.#errors.length < this.#capacity
        ? [...this.#errors]
        : [...this.#errors.slice(this.#next), ...this.#errors.slice(0, this.#next)];
    return ordered.reverse();
  }
}
