/** The window the budget counts orders over, ms. */
export const BUDGET_WINDOW = 3600_000;

/** The share of the budget one subject may spend in a window: the rest is kept for others. */
const SUBJECT_SHARE = 3 / 4;

/**
 * A renewal whose certificate ends within this long (or has ended) goes before
 * the subject's names without a certificate, ms: new names, or names that keep
 * failing, must not hold a working name's renewal back until its certificate
 * expires.
 */
export const URGENT_RENEWAL = 7 * 24 * 3600_000;

/** A name due for an order now. */
export interface DueName {
  hostname: string;
  /** The subject (tenant) serving it. */
  subject: string;
  /** When the certificate it has now ends (ms), or undefined for a name that has none. */
  expires?: number | undefined;
}

export interface BudgetPlan {
  /** Order these now: they are counted already. */
  order: DueName[];
  /** The rest, each with the time a slot can be its at the earliest. */
  wait: Array<{ name: DueName; until: number }>;
  /** Some name waits because the whole budget is spent: until when. */
  spentUntil: number | undefined;
  /** Subjects with a name waiting because they spent their share, and until when. */
  sharesSpent: Map<string, number>;
}

/**
 * The ACME orders a relay may start in a sliding window, shared between
 * tenants. No subject may start more than three quarters of them (rounded
 * up), so a tenant announcing hundreds of names leaves room for another's
 * first one; and when several subjects have names due, each free slot goes to
 * the subject with the fewest orders in the window. Within a subject,
 * renewals of certificates ending within URGENT_RENEWAL go first, then names
 * without a certificate, then the other renewals; the one ending soonest first.
 */
export class OrderBudget {
  readonly #limit: number;
  readonly #share: number;
  readonly #window: number;
  /** Orders started in the window, oldest first. */
  readonly #recent: Array<{ at: number; subject: string }> = [];

  constructor(limit: number, window = BUDGET_WINDOW) {
    this.#limit = limit;
    this.#share = Math.ceil(limit * SUBJECT_SHARE);
    this.#window = window;
  }

  /** Orders one subject may start in a window. */
  get share(): number {
    return this.#share;
  }

  /** Counts an order started outside a plan (a forced renewal). */
  record(subject: string, now: number): void {
    this.#recent.push({ at: now, subject });
  }

  /** Orders `subject` started in the window ending at `now`. */
  used(subject: string, now: number): number {
    this.#prune(now);
    let n = 0;
    for (const o of this.#recent) if (o.subject === subject) n++;
    return n;
  }

  /** Splits the names due now into those to order at once (counted) and those that wait. */
  plan(due: readonly DueName[], now: number): BudgetPlan {
    this.#prune(now);
    const counts = new Map<string, number>();
    for (const o of this.#recent) counts.set(o.subject, (counts.get(o.subject) ?? 0) + 1);
    const queues = new Map<string, DueName[]>();
    for (const name of due) {
      const queue = queues.get(name.subject);
      if (queue) queue.push(name);
      else queues.set(name.subject, [name]);
    }
    const urgency = byUrgency(now);
    for (const queue of queues.values()) queue.sort(urgency);

    const order: DueName[] = [];
    while (this.#recent.length < this.#limit) {
      let pick: string | undefined;
      let fewest = Infinity;
      for (const [subject, queue] of queues) {
        const used = counts.get(subject) ?? 0;
        if (queue.length === 0 || used >= this.#share) continue;
        if (used < fewest || (used === fewest && subject < pick!)) {
          pick = subject;
          fewest = used;
        }
      }
      if (pick === undefined) break;
      const name = queues.get(pick)!.shift()!;
      order.push(name);
      counts.set(pick, (counts.get(pick) ?? 0) + 1);
      this.#recent.push({ at: now, subject: pick });
    }

    const spentUntil =
      this.#recent.length >= this.#limit
        ? this.#recent[this.#recent.length - this.#limit]!.at + this.#window
        : undefined;
    const sharesSpent = new Map<string, number>();
    const wait: BudgetPlan['wait'] = [];
    for (const [subject, queue] of queues) {
      if (queue.length === 0) continue;
      let until = spentUntil ?? now;
      if ((counts.get(subject) ?? 0) >= this.#share) {
        const own = this.#recent.filter((o) => o.subject === subject);
        const back = own[own.length - this.#share]!.at + this.#window;
        sharesSpent.set(subject, back);
        until = Math.max(until, back);
      }
      for (const name of queue) wait.push({ name, until });
    }
    return {
      order,
      wait,
      spentUntil: wait.length > 0 && spentUntil !== undefined ? spentUntil : undefined,
      sharesSpent,
    };
  }

  #prune(now: number): void {
    const recent = this.#recent;
    while (recent.length > 0 && recent[0]!.at <= now - this.#window) recent.shift();
  }
}

/**
 * Renewals of certificates ending within URGENT_RENEWAL first, then names
 * without a certificate, then the other renewals; the one ending soonest first,
 * then by name.
 */
function byUrgency(now: number): (a: DueName, b: DueName) => number {
  const rank = (n: DueName) => (n.expires === undefined ? 1 : n.expires - now <= URGENT_RENEWAL ? 0 : 2);
  return (a, b) => {
    const ra = rank(a);
    const rb = rank(b);
    if (ra !== rb) return ra - rb;
    const ea = a.expires ?? -Infinity;
    const eb = b.expires ?? -Infinity;
    if (ea !== eb) return ea < eb ? -1 : 1;
    return a.hostname < b.hostname ? -1 : a.hostname > b.hostname ? 1 : 0;
  };
}
