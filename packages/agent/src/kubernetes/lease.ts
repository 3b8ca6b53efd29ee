import { EventEmitter } from 'node:events';
import type { Logger } from '@burrow/shared';
import { type CoordinationV1Api, type V1Lease, V1MicroTime } from '@kubernetes/client-node';

export interface LeaseOptions {
  namespace: string;
  name: string;
  /** This replica's identity (the pod name). */
  identity: string;
  /** How long a holder's claim lasts without renewal, ms. Default 15 s. */
  leaseDuration?: number;
  /** How often the lease is tried or renewed, ms. Default 5 s. */
  renewInterval?: number;
  logger: Logger;
}

/** How long stopping waits for the Lease to be given up, ms. */
const RELEASE_TIMEOUT = 3_000;
/** Default lease duration and renewal interval, ms. */
export const LEASE_DURATION = 15_000;
export const RENEW_INTERVAL = 5_000;

function code(err: unknown): number | undefined {
  const e = err as { code?: number; statusCode?: number };
  return e?.code ?? e?.statusCode;
}

/**
 * Elects one writer among agent replicas with a coordination.k8s.io Lease
 * (docs/adr/002-write-back-lease.md). Optimistic concurrency on the Lease's
 * resourceVersion means two replicas can never both believe they hold it for
 * longer than one lease duration.
 */
export class LeaseElector extends EventEmitter<{ change: [leader: boolean] }> {
  readonly #api: CoordinationV1Api;
  readonly #opts: Required<Omit<LeaseOptions, 'logger'>> & { logger: Logger };
  #leader = false;
  #timer: NodeJS.Timeout | undefined;
  #stopped = true;
  /** Renewals in a row that failed with something other than a lost race. */
  #failures = 0;
  /**
   * The Lease as last read (its resourceVersion) and when, on this process's
   * monotonic clock. Expiry counts from when this replica saw the record
   * change, never from the renewTime the holder wrote with its own clock: a
   * holder whose clock is behind would otherwise look expired while it renews.
   */
  #observed = { version: '', at: 0 };
  /** When the last renewal that went through was sent, on the monotonic clock. */
  #renewedAt = Number.NEGATIVE_INFINITY;
  /** Ends the leadership of a replica whose renewals stopped going through (#renewDeadline). */
  #deadline: NodeJS.Timeout | undefined;

  constructor(api: CoordinationV1Api, options: LeaseOptions) {
    super();
    this.#api = api;
    this.#opts = { leaseDuration: LEASE_DURATION, renewInterval: RENEW_INTERVAL, ...options };
  }

  /**
   * How long a leader goes on as one without a renewal that went through:
   * two thirds of the lease duration, so that it stops before another replica
   * may take the Lease (once a whole duration has passed with no change). A
   * renewal that hangs or keeps failing must not leave two writers.
   */
  get #renewDeadline(): number {
    return (this.#opts.leaseDuration * 2) / 3;
  }

  get isLeader(): boolean {
    return this.#leader && performance.now() - this.#renewedAt < this.#renewDeadline;
  }

  start(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    void this.#tick();
  }

  /**
   * Stops trying; a replica that holds the Lease gives it up, so that another
   * one takes over at its next try rather than after a whole lease duration
   * (every rolling update stops the holder).
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    clearTimeout(this.#deadline);
    const held = this.#leader;
    this.#set(false);
    if (!held) return;
    // Bounded: an API server that does not answer must not hold up the agent's exit.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.#release(),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, RELEASE_TIMEOUT);
      }),
    ]);
    clearTimeout(timer);
  }

  /** Marks the Lease as held by nobody, if it is still ours; a failure only costs the others the wait. */
  async #release(): Promise<void> {
    const { namespace, name, identity } = this.#opts;
    try {
      const lease = await this.#api.readNamespacedLease({ name, namespace });
      if (lease.spec?.holderIdentity !== identity) return;
      // As client-go's ReleaseOnCancel: no holder, and a claim that lapses at once.
      await this.#api.replaceNamespacedLease({
        name,
        namespace,
        body: {
          ...lease,
          spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, renewTime: new V1MicroTime() },
        },
      });
      this.#opts.logger.info({ lease: name, identity }, 'released the write-back lease');
    } catch (err) {
      this.#opts.logger.debug(
        { status: code(err), reason: (err as Error).message },
        'could not release the write-back lease; another replica takes it once it expires',
      );
    }
  }

  /** One attempt to acquire or renew; resolves with whether this replica holds the lease. */
  async tryOnce(): Promise<boolean> {
    const { namespace, name, identity, leaseDuration } = this.#opts;
    // A renewal counts from when it was sent: the API server may have taken its time to answer.
    const sent = performance.now();
    // renewTime and acquireTime are MicroTime: the API server wants six fractional digits.
    const now = new V1MicroTime();
    const spec = {
      holderIdentity: identity,
      leaseDurationSeconds: Math.ceil(leaseDuration / 1000),
      renewTime: now,
    };
    try {
      let lease: V1Lease;
      try {
        lease = await this.#api.readNamespacedLease({ name, namespace });
      } catch (err) {
        if (code(err) !== 404) throw err;
        await this.#api.createNamespacedLease({
          namespace,
          body: { metadata: { name, namespace }, spec: { ...spec, acquireTime: now, leaseTransitions: 0 } },
        });
        this.#answered();
        return this.#renewed(sent);
      }
      const holder = lease.spec?.holderIdentity;
      const version = `${lease.metadata?.resourceVersion ?? ''} ${holder ?? ''}`;
      if (version !== this.#observed.version) this.#observed = { version, at: performance.now() };
      const duration = (lease.spec?.leaseDurationSeconds ?? 15) * 1000;
      // As client-go: a holder that stopped renewing is gone once a whole lease duration has
      // passed here without a change, whatever the clocks say.
      const expired = performance.now() - this.#observed.at > duration;
      if (holder && holder !== identity && !expired) {
        this.#answered();
        return this.#set(false);
      }
      const taking = holder !== identity;
      await this.#api.replaceNamespacedLease({
        name,
        namespace,
        body: {
          ...lease,
          spec: {
            ...lease.spec,
            ...spec,
            ...(taking
              ? { acquireTime: now, leaseTransitions: (lease.spec?.leaseTransitions ?? 0) + 1 }
              : {}),
          },
        },
      });
      this.#answered();
      return this.#renewed(sent);
    } catch (err) {
      // 409: another replica won the race. Anything else: we cannot be sure we hold it.
      if (code(err) !== 409) {
        // Every renewInterval while it lasts (a Role not granted yet, say): warned once, then counted.
        this.#failures++;
        this.#opts.logger[this.#failures === 1 ? 'warn' : 'debug'](
          { status: code(err), reason: (err as Error).message, failures: this.#failures },
          'lease renewal failed',
        );
      }
      return this.#set(false);
    }
  }

  /** This replica holds the Lease, renewed with a request sent at `sent`. */
  #renewed(sent: number): boolean {
    this.#renewedAt = Math.max(this.#renewedAt, sent);
    // An answer that took longer than the deadline came too late to act on.
    if (performance.now() - this.#renewedAt >= this.#renewDeadline) return this.#set(false);
    this.#watchDeadline();
    return this.#set(true);
  }

  /** Steps down once the renewal deadline has passed without a renewal; checks again until then. */
  #watchDeadline(): void {
    clearTimeout(this.#deadline);
    const left = this.#renewedAt + this.#renewDeadline - performance.now();
    if (left > 0) {
      // Timers count whole milliseconds and may fire a fraction early: checked again on firing.
      this.#deadline = setTimeout(() => this.#watchDeadline(), Math.ceil(left));
      this.#deadline.unref();
      return;
    }
    if (!this.#leader) return;
    this.#opts.logger.warn(
      { lease: this.#opts.name, sinceMs: Math.round(performance.now() - this.#renewedAt) },
      'write-back lease not renewed in time; this replica stops writing until it renews',
    );
    this.#set(false);
  }

  /** A renewal went through (or the Lease is another replica's): a failure that lasted is over. */
  #answered(): void {
    if (this.#failures > 0)
      this.#opts.logger.info({ failures: this.#failures }, 'lease renewal working again');
    this.#failures = 0;
  }

  async #tick(): Promise<void> {
    const started = performance.now();
    await this.tryOnce();
    if (this.#stopped) {
      // Stopped while this try was under way, and it won the Lease: give it back.
      if (this.#leader) await this.stop();
      return;
    }
    // Tries start every renewInterval, however long each took: counted from the end of the last,
    // a slow API server would push renewals past the deadline, and the leader would step down and
    // back up at every one.
    // A fifth of an interval at least: an API server slow from overload gets no tries back to back.
    const interval = this.#opts.renewInterval;
    const wait = Math.max(interval / 5, interval - (performance.now() - started));
    this.#timer = setTimeout(() => void this.#tick(), wait);
    this.#timer.unref();
  }

  #set(leader: boolean): boolean {
    if (leader !== this.#leader) {
      this.#leader = leader;
      this.#opts.logger.info(
        { lease: this.#opts.name, identity: this.#opts.identity },
        leader ? 'acquired write-back lease' : 'not the write-back leader',
      );
      this.emit('change', leader);
    }
    return leader;
  }
}
