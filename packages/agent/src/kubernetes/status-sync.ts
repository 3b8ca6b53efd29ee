import type { Logger, PortResult, RouteResult } from '@burrow/shared';
import { portName, stableRouteId } from '../routes/validate.js';
import { Backoff } from '../tunnel/backoff.js';
import { ANNOTATION, type ServiceLike } from './annotations.js';
import { holdsRecord, verifiedHolds } from './holds.js';
import type { LeaseElector } from './lease.js';
import type { ServiceWatch } from './services.js';
import type { DesiredStatus, StatusWriter } from './writer.js';

/** What the sync needs from the agent: its latest per-hostname verdicts from the relay. */
export interface RouteResultsSource {
  routeStatus(): RouteResult[];
  /** Its latest per-port verdicts, for Services exposed by `burrow.dev/tcp-port`. */
  portStatus(): PortResult[];
  /** Routes the agent left out of its announcement (a hostname another Service has), with why. */
  skippedRoutes(): ReadonlyMap<string, string>;
  on(event: 'routes', listener: (results: RouteResult[]) => void): unknown;
}

/**
 * Keeps every annotated Service's write-back (annotations and Events) in step
 * with what the relay said about its hostnames. Only the Lease holder writes
 * (docs/adr/002-write-back-lease.md). Reconciles run one at a time; a change
 * during a run schedules one more.
 */
export class StatusSync {
  readonly #watch: ServiceWatch;
  readonly #agent: RouteResultsSource;
  readonly #writer: StatusWriter;
  readonly #elector: LeaseElector | undefined;
  readonly #log: Logger;
  /** Delay before a reconcile that could not write everything runs again; grows while that lasts. */
  readonly #retry: Backoff;
  readonly #holdsKeys: (() => readonly Buffer[]) | undefined;
  /** The `burrow.dev/holds` record last made for each route, by route id (holdsRecord's `issued`). */
  readonly #issued = new Map<string, string>();
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  #retryTimer: NodeJS.Timeout | undefined;

  constructor(opts: {
    watch: ServiceWatch;
    agent: RouteResultsSource;
    writer: StatusWriter;
    elector?: LeaseElector;
    logger: Logger;
    /** Delay before a reconcile that could not write everything runs again: first and cap, ms. Defaults 1 s, 30 s. */
    retry?: { base: number; cap: number };
    /** The key for `burrow.dev/holds` records (holds.ts); without it none are written. */
    holdsKeys?: () => readonly Buffer[];
  }) {
    this.#watch = opts.watch;
    this.#agent = opts.agent;
    this.#writer = opts.writer;
    this.#elector = opts.elector;
    this.#log = opts.logger;
    this.#retry = new Backoff(opts.retry ?? { base: 1_000, cap: 30_000 });
    this.#holdsKeys = opts.holdsKeys;
    const kick = () => this.schedule();
    this.#watch.on('change', kick);
    this.#agent.on('routes', kick);
    this.#elector?.on('change', kick);
  }

  /**
   * Writes nothing more; resolves once a pass under way has stopped, so that
   * the Lease is handed over only when this replica has finished writing.
   */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#retryTimer);
    await this.#running;
  }

  /** Whether this replica may write now: not stopped, and the Lease holder where there is a Lease. */
  get #writing(): boolean {
    return !this.#stopped && (!this.#elector || this.#elector.isLeader);
  }

  /** Runs a reconcile soon; resolves when the state seen at call time is written. */
  schedule(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    clearTimeout(this.#retryTimer);
    this.#running = (async () => {
      let complete = true;
      do {
        this.#again = false;
        complete = await this.#reconcile().catch((err: unknown) => {
          this.#log.warn({ reason: (err as Error).message }, 'write-back failed');
          return false;
        });
      } while (this.#again && !this.#stopped);
      this.#running = undefined;
      if (complete) this.#retry.reset();
      else this.#retryLater();
    })();
    return this.#running;
  }

  /**
   * A write that failed (the API server briefly down, a 500) is not left for
   * some later change to repair: in a quiet cluster there may be none, and a
   * fixed Service would show its old error and no URL.
   */
  #retryLater(): void {
    if (this.#stopped) return;
    this.#retryTimer = setTimeout(() => void this.schedule(), this.#retry.next());
    this.#retryTimer.unref();
  }

  /** One pass over the Services; false when a write failed. */
  async #reconcile(): Promise<boolean> {
    // Before the Lease check: a standby replica, which never clears, forgets them in time too.
    this.#watch.expireDeparted();
    if (!this.#writing || !this.#watch.synced) return true;
    const results = this.#agent.routeStatus();
    const portResults = this.#agent.portStatus();
    const skippedRoutes = this.#agent.skippedRoutes();
    const services = this.#watch.services;
    const keys = this.#holdsKeys?.();
    this.#writer.startPass(Array.from(services.values(), (s) => s.service));
    let complete = true;
    /** Routes given a holds record in this pass: the others' records are not reused later. */
    const made = new Set<string>();
    for (const [key, { service, verdict }] of services) {
      // Checked before each write: a pass can take a while, and the Lease may go meanwhile.
      if (!this.#writing) return true;
      let written: boolean;
      if (verdict.kind === 'ignored') {
        written = await this.#writer.clear(service);
      } else if (verdict.kind === 'invalid') {
        written = await this.#writer.apply(service, {
          error: verdict.error,
          ...this.#reservedHolds(key, service, keys),
          event: { type: 'Warning', reason: 'InvalidAnnotation', message: verdict.error },
        });
      } else {
        const route = verdict.route;
        const reason = skippedRoutes.get(route.id);
        const skipped = reason === undefined ? undefined : privateTo(service, reason);
        const mine = results.filter((r) => r.id === route.id);
        if (skipped !== undefined) {
          written = await this.#writer.apply(service, {
            error: skipped,
            event: { type: 'Warning', reason: 'ExposeRefused', message: skipped },
          });
        } else if (route.ports) {
          const ports = route.ports;
          const answered = portResults.filter((r) => r.id === route.id);
          // As for names: no verdict yet for every port, nothing is written.
          if (ports.every((p) => answered.some((r) => r.port === p))) {
            const desired = desiredForPorts(ports, answered);
            const held = answered.filter((r) => r.status === 'active').map((r) => portName(r.port));
            if (keys && held.length > 0)
              desired.holds = this.#holdsRecord(keys, route.id, held, service, made);
            written = await this.#writer.apply(service, desired);
          } else written = true;
        } else if (!route.hostnames.every((h) => mine.some((r) => r.hostname.toLowerCase() === h))) {
          // No verdict from the relay yet for every name (not connected, or the
          // announcement is in flight): leave what is there rather than guess.
          written = true;
        } else {
          const desired = desiredFor(route.hostnames, mine);
          const held = mine.filter((r) => r.status === 'active').map((r) => r.hostname.toLowerCase());
          if (keys && held.length > 0) desired.holds = this.#holdsRecord(keys, route.id, held, service, made);
          written = await this.#writer.apply(service, desired);
        }
      }
      complete &&= written;
    }
    // A route that holds nothing now starts a new record when it holds names again: its old one
    // would claim a time before another Service's, meanwhile, and win the name back.
    for (const id of this.#issued.keys()) if (!made.has(id)) this.#issued.delete(id);
    for (const [key, service] of [...this.#watch.departed]) {
      if (!this.#writing) return true;
      // A record that our keys do not verify was written by another installation, and so was
      // the status beside it: it is not ours to remove.
      const record = service.metadata?.annotations?.[ANNOTATION.holds];
      const foreign =
        keys !== undefined &&
        record !== undefined &&
        verifiedHolds(keys, stableRouteId('k8s', key), record).names.length === 0;
      const cleared = foreign || (await this.#writer.clearDeparted(service));
      if (cleared) this.#watch.forgetDeparted(key, service.metadata?.uid);
      complete &&= cleared;
    }
    return complete;
  }

  /**
   * The holds record a Service whose route lapsed (ServiceWatch.lapsed) keeps: its own, while it
   * verifies and the hold grace lasts, so that every replica, and one that starts meanwhile,
   * keeps its names from other Services. After that it is removed like any other.
   */
  #reservedHolds(key: string, service: ServiceLike, keys: readonly Buffer[] | undefined): { holds?: string } {
    const lapsed = this.#watch.lapsed.get(key);
    const record = service.metadata?.annotations?.[ANNOTATION.holds];
    if (!keys || !lapsed || verifiedHolds(keys, lapsed.id, record).names.length === 0) return {};
    return { holds: record };
  }

  /** The holds record `service` should show for its route `id` holding `held`. */
  #holdsRecord(
    keys: readonly Buffer[],
    id: string,
    held: string[],
    service: ServiceLike,
    made: Set<string>,
  ): string {
    const current = service.metadata?.annotations?.[ANNOTATION.holds];
    const record = holdsRecord(keys, id, held, Date.now(), current, this.#issued.get(id));
    this.#issued.set(id, record);
    made.add(id);
    return record;
  }
}

/** The annotations and Event a Service should show for the relay's per-hostname verdicts. */
export function desiredFor(hostnames: string[], results: RouteResult[]): DesiredStatus {
  const byHost = new Map(results.map((r) => [r.hostname.toLowerCase(), r]));
  const active = hostnames.map((h) => byHost.get(h)).filter((r) => r?.status === 'active');
  const refused = hostnames.map((h) => byHost.get(h)).filter((r) => r?.status === 'refused');
  const url = active.length ? active.map((r) => r!.url ?? `http://${r!.hostname}`).join(',') : undefined;
  return statusOf(
    url,
    refused.map((r) => r!.error ?? `${r!.hostname} refused`),
  );
}

/** The same for a Service exposed on TCP ports of the relay. */
export function desiredForPorts(ports: number[], results: PortResult[]): DesiredStatus {
  const byPort = new Map(results.map((r) => [r.port, r]));
  const active = ports.map((p) => byPort.get(p)).filter((r) => r?.status === 'active');
  const refused = ports.map((p) => byPort.get(p)).filter((r) => r?.status === 'refused');
  const url = active.length ? active.map((r) => r!.url ?? `tcp port ${r!.port}`).join(',') : undefined;
  return statusOf(
    url,
    refused.map((r) => r!.error ?? `port ${r!.port} refused`),
  );
}

function statusOf(url: string | undefined, refusals: string[]): DesiredStatus {
  if (refusals.length === 0) {
    return {
      url,
      error: undefined,
      event: { type: 'Normal', reason: 'Exposed', message: `exposed at ${url}` },
    };
  }
  const error = refusals.join('; ');
  return { url, error, event: { type: 'Warning', reason: 'ExposeRefused', message: error } };
}

/**
 * A reason written on `service` (its annotation, its Event), without the name
 * of a Service in another namespace: those who may read this one need not be
 * allowed to read that one. `route "k8s:team-a/payments"` becomes `the
 * route of a Service in another namespace`.
 */
export function privateTo(service: ServiceLike, reason: string): string {
  const own = service.metadata?.namespace ?? 'default';
  return reason.replace(/route "k8s:([^"/]+)\/[^"]*"/g, (whole, namespace: string) =>
    namespace === own ? whole : 'the route of a Service in another namespace',
  );
}
