/**
 * Paces route announcements per token subject. Applying one costs the relay
 * time on its only thread in proportion to its names (a few hundred ms for the
 * largest allowed), and an agent may send them as fast as it likes: unpaced,
 * one tenant re-announcing in a loop would stall every other tenant's
 * requests. An announcement that took `cost` ms puts `cost / share` on its
 * subject's account, which runs down with real time; the next is applied once
 * what is left is under `burst`. So announcing takes at most `share` of the
 * relay's time per subject, whatever its number of connections, and an
 * agent's usual announcements (a few ms together) never wait.
 *
 * Reading announcements and removing a closed connection's routes cost
 * time too (`charge`). The connection's control stream is paused while its
 * announcement waits (agent-connection.ts), so an agent sending them in a
 * loop is held to the pace; one that waits is replaced by a later one from
 * the same connection if that was already read. Small announcements cost
 * well under a millisecond and are not held back in practice.
 */
export class AnnounceGate {
  readonly #share: number;
  readonly #burst: number;
  readonly #now: () => number;
  readonly #subjects = new Map<string, SubjectQueue>();

  /**
   * `share`: the most of the relay's time one subject's announcements may
   * take (0 < share ≤ 1). `burst`: how far ahead of that pace, in ms of
   * waiting, a subject may run before anything waits; the announcements of
   * an agent's connections, all sent as they connect, are so not held up.
   */
  constructor({
    share = 0.25,
    burst = 50,
    now = () => performance.now(),
  }: { share?: number; burst?: number; now?: () => number } = {}) {
    if (!(share > 0 && share <= 1)) throw new RangeError(`share must be in (0, 1] (got ${share})`);
    this.#share = share;
    this.#burst = burst;
    this.#now = now;
  }

  /**
   * Runs `apply` for connection `key` of `subject` now if the subject's turn
   * has come (true), or when it does (false); replaces an announcement of
   * `key` still waiting, in its place in the queue. `apply` must check that
   * its connection is still open.
   */
  submit(subject: string, key: object, apply: () => void): boolean {
    const q = this.#queue(subject);
    if (q.waiting.size === 0 && this.#now() >= q.next - this.#burst) {
      this.#run(subject, q, apply);
      return true;
    }
    // Replaced in place: connections of one subject take turns, none goes back behind the rest.
    q.waiting.set(key, apply);
    this.#arm(subject, q);
    return false;
  }

  /**
   * Counts `ms` the relay spent on `subject`'s announcements outside `apply`
   * (reading them, removing the routes of a connection that closed) against
   * its share, as if applying them had taken that long.
   */
  charge(subject: string, ms: number): void {
    if (!(ms > 0)) return;
    const q = this.#queue(subject);
    q.next = Math.max(q.next, this.#now() - ms) + ms / this.#share;
  }

  #queue(subject: string): SubjectQueue {
    let q = this.#subjects.get(subject);
    if (!q) {
      q = { next: 0, waiting: new Map(), timer: undefined };
      this.#subjects.set(subject, q);
    }
    return q;
  }

  /** Forgets what `key` has waiting (its connection closed). */
  drop(subject: string, key: object): void {
    const q = this.#subjects.get(subject);
    if (!q?.waiting.delete(key) || q.waiting.size > 0) return;
    clearTimeout(q.timer);
    q.timer = undefined;
  }

  /**
   * Forgets what `subject` has waiting (its last connection closed). Its pace
   * is kept until its turn comes: reconnecting does not skip the wait.
   */
  forget(subject: string): void {
    const q = this.#subjects.get(subject);
    if (!q) return;
    clearTimeout(q.timer);
    q.timer = undefined;
    q.waiting.clear();
    // Subjects gone whose turn has come are pruned here, this one included.
    const now = this.#now();
    for (const [s, other] of this.#subjects) {
      if (other.waiting.size === 0 && other.next <= now) this.#subjects.delete(s);
    }
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
      q.next = Math.max(q.next, started) + (ended - started) / this.#share;
      // Nothing held for a subject that has paid for all it used and has nothing waiting.
      if (q.waiting.size === 0 && q.next <= ended) this.#subjects.delete(subject);
    }
  }

  #arm(subject: string, q: SubjectQueue): void {
    if (q.timer) return;
    q.timer = setTimeout(
      () => {
        q.timer = undefined;
        // Charged since the timer was set: the turn moved later.
        if (this.#now() < q.next - this.#burst) {
          this.#arm(subject, q);
          return;
        }
        const first = q.waiting.entries().next();
        if (first.done) return;
        const [key, apply] = first.value;
        q.waiting.delete(key);
        this.#run(subject, q, apply);
        if (q.waiting.size > 0) this.#arm(subject, q);
      },
      Math.max(0, q.next - this.#burst - this.#now()),
    );
    q.timer.unref();
  }
}

interface SubjectQueue {
  /**
   * When the subject's share will have paid for what its announcements cost
   * so far (the gate's clock); the next may be applied `burst` before that.
   */
  next: number;
  /** The latest announcement of each connection waiting, in order of arrival. */
  waiting: Map<object, () => void>;
  timer: NodeJS.Timeout | undefined;
}
