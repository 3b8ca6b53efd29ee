// How the agent combines its tunnel connections' answers to its announcement
// (agent.ts): per name or port, as each answer comes.

/** The index of the lowest bit set in a 64-bit mask kept as two 32-bit halves, or -1. */
function lowest(lo: number, hi: number): number {
  if (lo !== 0) return 31 - Math.clz32(lo & -lo);
  if (hi !== 0) return 63 - Math.clz32(hi & -hi);
  return -1;
}

/** One name's (or port's) latest result from each connection (index < 64) that answered for it. */
class Votes<R extends { status: string }> {
  readonly results: (R | undefined)[] = [];
  constructor(readonly key: string) {}
  /** Which connections answered for it, and which of those have it active: bit masks, low and high half. */
  answeredLo = 0;
  answeredHi = 0;
  activeLo = 0;
  activeHi = 0;

  set(index: number, r: R | undefined): void {
    this.results[index] = r;
    const bit = 1 << (index & 31);
    const high = index >= 32;
    const answered = r !== undefined;
    const active = r?.status === 'active';
    if (high) {
      this.answeredHi = answered ? this.answeredHi | bit : this.answeredHi & ~bit;
      this.activeHi = active ? this.activeHi | bit : this.activeHi & ~bit;
    } else {
      this.answeredLo = answered ? this.answeredLo | bit : this.answeredLo & ~bit;
      this.activeLo = active ? this.activeLo | bit : this.activeLo & ~bit;
    }
  }

  get empty(): boolean {
    return this.answeredLo === 0 && this.answeredHi === 0;
  }

  /**
   * The result of the lowest-numbered connection that has it active, or else of
   * the lowest-numbered that answered for it.
   */
  get chosen(): R | undefined {
    const active = lowest(this.activeLo, this.activeHi);
    if (active >= 0) return this.results[active];
    const answered = lowest(this.answeredLo, this.answeredHi);
    return answered >= 0 ? this.results[answered] : undefined;
  }
}

/**
 * The connections' latest answers, combined per name (or port) as each comes:
 * an answer costs in proportion to its own size and its connection's previous
 * one, not to every connection's. A name's result is the lowest-numbered
 * connection's that has it active, or else the lowest-numbered's that answered
 * for it.
 */
export class Verdicts<R extends ResultFields> {
  readonly #byKey = new Map<string, Votes<R>>();
  /** The keys of each connection's latest answer. */
  readonly #keysOf = new Map<number, string[]>();

  /** Connection `index` answered: `results` replace its previous answer. */
  answer(index: number, results: ReadonlyArray<readonly [string, R]>): void {
    // Within one answer, a key given twice (a relay may send anything) counts once: active if
    // any of its results is, else the first.
    const mine = new Map<string, R>();
    for (const [key, r] of results) {
      const current = mine.get(key);
      if (!current || (current.status !== 'active' && r.status === 'active')) mine.set(key, r);
    }
    const previous = this.#keysOf.get(index) ?? [];
    for (const key of previous) if (!mine.has(key)) this.#clear(index, key);
    const keys: string[] = [];
    for (const [key, r] of mine) {
      let votes = this.#byKey.get(key);
      if (!votes) {
        votes = new Votes<R>(key);
        this.#byKey.set(key, votes);
      }
      keys.push(votes.key); // one string for the key, however many connections answer for it
      // The connections mostly agree: one object for equal results, not one per connection.
      const chosen = votes.chosen;
      votes.set(index, chosen && sameResult(chosen, r) ? chosen : r);
    }
    this.#keysOf.set(index, keys);
  }

  /** Connection `index` went down: its answer no longer counts. False when it had not answered. */
  forget(index: number): boolean {
    for (const key of this.#keysOf.get(index) ?? []) this.#clear(index, key);
    return this.#keysOf.delete(index);
  }

  get(key: string): R | undefined {
    return this.#byKey.get(key)?.chosen;
  }

  #clear(index: number, key: string): void {
    const votes = this.#byKey.get(key);
    if (!votes) return;
    votes.set(index, undefined);
    if (votes.empty) this.#byKey.delete(key);
  }
}

/** Whether two results say the same, retryAfter included (each connection's schedules an announcement). */
function sameResult(a: ResultFields, b: ResultFields): boolean {
  return (
    a.id === b.id &&
    a.hostname === b.hostname &&
    a.port === b.port &&
    a.status === b.status &&
    a.url === b.url &&
    a.error === b.error &&
    a.retryAfter === b.retryAfter
  );
}

type ResultFields = Partial<Record<'id' | 'hostname' | 'url' | 'error', string>> & {
  status: string;
  port?: number;
  retryAfter?: number | undefined;
};
