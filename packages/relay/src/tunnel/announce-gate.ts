/**
 * Paces route announcements per token subject. Applying one costs the relay
 * time on its only thread in proportion to its names (a few hundred ms for the
 * largest allowed), and an agent may send them as fast as it likes: unpaced,
 * one tenant re-announcing in a loop would stall every other tenant's
 * requests. After an announcement that took `cost` ms, that subject's next
 * one waits `cost × (1 / share − 1)`, so announcing takes at most `share` of
 * the relay's time per subject, whatever its number of connections.
 *
 * An announcement replaces its connection's whole route set, so one that
 * waits is replaced by a later one from the same connection: only the latest
 * is applied (and answered; agents take the latest answer as current). Small
 * announcements cost well under a millisecond and are not held back in
 * practice.
 */
export class AnnounceGate {
  readonly #share: number;
  readonly #now: () => number;
  readonly #subjects = new Map<string, SubjectQueue>();

  /** `share`: the most of the relay's time one subject's announcements may take (0 < share ≤ 1). */
  constructor({ share = 0.25, now = () => performance.now() }: { share?: number; now?: () => number } = {}) {
    if (!(share > 0 && share <= 1)) throw new RangeError(`share must be in (0, 1] (got ${share})`);
    this.#share = share;
    this.#now = now;
  }

  /**
   * Runs `apply` for connection `key` of `subject` now if the subject's turn
   * has come, or when it does; replaces an announcement of `key` still
   * waiting. `apply` must check that its connection is still open.
   */
  submit(subject: string, key: object, apply: () => void): void {
    let q = this.#subjects.get(subject);
    if (!q) {
      q = { next: 0, waiting: new Map(), timer: undefined };
      this.#subjects.set(subject, q);
    }
    if (q.waiting.size === 0 && this.#now() >= q.next) {
      this.#run(subject, q, apply);
      return;
    }
    q.waiting.delete(key); // a replaced announcement goes to the back, after the others waiting
    q.waiting.set(key, apply);
    this.#arm(subject, q);
  }

  /** Forgets what `key` has waiting (its connection closed). */
  drop(subject: string, key: object): void {
    const q = this.#subjects.get(subject);
    if (!q?.waiting.delete(key) || q.waiting.size > 0) return;
    clearTimeout(q.timer);
    q.timer = undefined;
  }

  /** Forgets `subject` (its last connection closed): what it had waiting, and its pace. */
  forget(subject: string): void {
    clearTimeout(this.#subjects.get(subject)?.timer);
    this.#subjects.delete(subject);
  }

  /** Announcements waiting, across subjects. */
  get waiting(): number {
    let n = 0;
    for (const q of this.#subjects.values()) n += q.waiting.size;
    return n;
  }

  #run(subject: string, q: SubjectQueue, apply: () => void): void {
    const started = this.#now();
    try {
      apply();
    } finally {
      const ended = this.#now();
      q.next = ended + (ended - started) * (1 / this.#share - 1);
      // Nothing held for a subject whose turn has come and that has nothing waiting.
      if (q.waiting.size === 0 && q.next <= ended) this.#subjects.delete(subject);
    }
  }

  #arm(subject: string, q: SubjectQueue): void {
    if (q.timer) return;
    q.timer = setTimeout(
      () => {
        q.timer = undefined;
        const first = q.waiting.entries().next();
        if (first.done) return;
        const [key, apply] = first.value;
        q.waiting.delete(key);
        this.#run(subject, q, apply);
        if (q.waiting.size > 0) this.#arm(subject, q);
      },
      Math.max(0, q.next - this.#now()),
    );
    q.timer.unref();
  }
}

interface SubjectQueue {
  /** When the subject's next announcement may be applied (the gate's clock). */
  next: number;
  /** The latest announcement of each connection waiting, in order of arrival. */
  waiting: Map<object, () => void>;
  timer: NodeJS.Timeout | undefined;
}
