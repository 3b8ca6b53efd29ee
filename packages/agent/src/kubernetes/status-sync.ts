import type { Logger, RouteResult } from '@burrow/shared';
import type { LeaseElector } from './lease.js';
import type { ServiceWatch } from './services.js';
import type { DesiredStatus, StatusWriter } from './writer.js';

/** What the sync needs from the agent: its latest per-hostname verdicts from the relay. */
export interface RouteResultsSource {
  routeStatus(): RouteResult[];
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
  #running: Promise<void> | undefined;
  #again = false;
  #stopped = false;

  constructor(opts: {
    watch: ServiceWatch;
    agent: RouteResultsSource;
    writer: StatusWriter;
    elector?: LeaseElector;
    logger: Logger;
  }) {
    this.#watch = opts.watch;
    this.#agent = opts.agent;
    this.#writer = opts.writer;
    this.#elector = opts.elector;
    this.#log = opts.logger;
    const kick = () => this.schedule();
    this.#watch.on('change', kick);
    this.#agent.on('routes', kick);
    this.#elector?.on('change', kick);
  }

  stop(): void {
    this.#stopped = true;
  }

  /** Runs a reconcile soon; resolves when the state seen at call time is written. */
  schedule(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = (async () => {
      do {
        this.#again = false;
        await this.#reconcile().catch((err: unknown) =>
          this.#log.warn({ reason: (err as Error).message }, 'write-back failed'),
        );
      } while (this.#again && !this.#stopped);
      this.#running = undefined;
    })();
    return this.#running;
  }

  async #reconcile(): Promise<void> {
    if (this.#stopped || !this.#watch.synced) return;
    if (this.#elector && !this.#elector.isLeader) return;
    const results = this.#agent.routeStatus();
    const skippedRoutes = this.#agent.skippedRoutes();
    const services = this.#watch.services;
    this.#writer.retain(Array.from(services.values(), (s) => s.service));
    for (const { service, verdict } of services.values()) {
      if (verdict.kind === 'ignored') {
        await this.#writer.clear(service);
        continue;
      }
      if (verdict.kind === 'invalid') {
        await this.#writer.apply(service, {
          error: verdict.error,
          event: { type: 'Warning', reason: 'InvalidAnnotation', message: verdict.error },
        });
        continue;
      }
      const route = verdict.route;
      const skipped = skippedRoutes.get(route.id);
      if (skipped !== undefined) {
        await this.#writer.apply(service, {
          error: skipped,
          event: { type: 'Warning', reason: 'ExposeRefused', message: skipped },
        });
        continue;
      }
      const mine = results.filter((r) => r.id === route.id);
      // No verdict from the relay yet for every name (not connected, or the
      // announcement is in flight): leave what is there rather than guess.
      if (!route.hostnames.every((h) => mine.some((r) => r.hostname.toLowerCase() === h))) continue;
      const desired = desiredFor(route.hostnames, mine);
      await this.#writer.apply(service, desired);
    }
  }
}

/** The annotations and Event a Service should show for the relay's per-hostname verdicts. */
export function desiredFor(hostnames: string[], results: RouteResult[]): DesiredStatus {
  const byHost = new Map(results.map((r) => [r.hostname.toLowerCase(), r]));
  const active = hostnames.map((h) => byHost.get(h)).filter((r) => r?.status === 'active');
  const refused = hostnames.map((h) => byHost.get(h)).filter((r) => r?.status === 'refused');
  const url = active.length ? active.map((r) => r!.url ?? `http://${r!.hostname}`).join(',') : undefined;
  if (refused.length === 0) {
    return {
      url,
      error: undefined,
      event: { type: 'Normal', reason: 'Exposed', message: `exposed at ${url}` },
    };
  }
  const error = refused.map((r) => r!.error ?? `${r!.hostname} refused`).join('; ');
  return { url, error, event: { type: 'Warning', reason: 'ExposeRefused', message: error } };
}
