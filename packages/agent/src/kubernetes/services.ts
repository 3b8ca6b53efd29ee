import { EventEmitter } from 'node:events';
import type { Logger } from '@burrow/shared';
import {
  CoreV1Api,
  type Informer,
  type KubeConfig,
  ListWatch,
  type ObjectCache,
  type V1Service,
} from '@kubernetes/client-node';
import { stableRouteId } from '../routes/validate.js';
import {
  ANNOTATION,
  routeForService,
  type ServiceLike,
  type ServiceRoute,
  type ServiceVerdict,
  serviceKey,
  serviceShapeError,
} from './annotations.js';
import { API_TIMEOUT, apiClient, TimedWatch } from './api.js';

/** A watch that ends sooner than this with no event is suspect (SettledWatch), ms. */
const QUICK_END = 1_000;
/** Departed Services remembered for write-back to clear; the oldest are forgotten beyond this. */
const MAX_DEPARTED = 1_000;
/**
 * A departed Service not cleared within this long is forgotten, ms: a standby replica, which never
 * clears, does not keep one for a Lease it may get much later, when someone else may own it.
 */
const DEPARTED_MAX_AGE = 10 * 60_000;
/** How long a Service whose route turned invalid, or was withdrawn, keeps its names reserved, ms. */
export const DEFAULT_HOLD_GRACE = 10 * 60_000;
/** The annotations the agent writes on a Service. */
const WRITTEN = [ANNOTATION.url, ANNOTATION.error, ANNOTATION.holds];

export interface ServiceWatchOptions {
  kubeConfig: KubeConfig;
  /** Namespaces to watch; empty or undefined watches all. */
  namespaces?: string[];
  /** Only Services matching this label selector (e.g. "expose=true"). */
  labelSelector?: string;
  logger: Logger;
  /**
   * A watch that delivered nothing for this long is restarted by our own timer,
   * in case a proxy or load balancer silently stalled it, ms. Default 5 min.
   */
  watchIdleTimeout?: number;
  /** Backoff after an informer error: first delay and cap, ms. Defaults 1 s and 30 s. */
  backoff?: { base: number; cap: number };
  /** How long a list, or a watch's response head, may take, ms. Default 30 s. */
  requestTimeout?: number;
  /**
   * How long a Service whose route turns invalid (an edit) or is withdrawn (a 403) keeps the
   * names its `burrow.dev/holds` record holds, reserved and not served, before another Service
   * asking for them may have them (it is in `lapsed` meanwhile), ms. Default 10 min; 0 keeps none.
   */
  holdGrace?: number;
  /**
   * The clock departed Services' age is told by, ms. Default performance.now: monotonic, so a
   * step of the wall clock neither forgets a departed Service early nor keeps it late.
   */
  now?: () => number;
}

/**
 * A Service that had a route and has none for now: its annotations were edited into something
 * invalid, or its namespace was withdrawn. `id` is the id its route has.
 */
export interface LapsedService {
  service: V1Service;
  id: string;
}

export interface WatchedService {
  service: V1Service;
  verdict: ServiceVerdict;
}

interface InformerEntry {
  informer: Informer<V1Service> & ObjectCache<V1Service>;
  /** The namespace it watches; undefined for all of them. */
  namespace: string | undefined;
  lastEvent: number;
  failures: number;
  /** Failures since start, never reset: tells whether one happened meanwhile. */
  failed: number;
  /** A list succeeded: the informer holds the Services as they are. */
  listed: boolean;
  /** The last failure was a list's (not a watch's). */
  listFailed?: boolean;
  timer?: NodeJS.Timeout;
  /** Waiting out a backoff delay before the next attempt: not idle, just waiting. */
  waiting: boolean;
  /** The API server answered 403: its Services are out of `services` until it answers again. */
  withdrawn: boolean;
}

type Events = {
  /** The set of Services (and their verdicts) changed. Coalesced: at most one per tick. */
  change: [];
  /** An informer failed and will be restarted. */
  restart: [reason: string];
};

/**
 * Watches Services with @kubernetes/client-node informers and turns their
 * annotations into routes. Keeps the informers alive: 410 Gone relists (the
 * informer does that itself), an error (which stops a client-node informer)
 * restarts it with backoff, and a watch that goes silent is restarted by a
 * timer of ours.
 */
export class ServiceWatch extends EventEmitter<Events> {
  readonly #opts: ServiceWatchOptions;
  readonly #now: () => number;
  readonly #services = new Map<string, WatchedService>();
  readonly #departed = new Map<string, { service: ServiceLike; at: number }>();
  readonly #lapsed = new Map<string, LapsedService & { timer: NodeJS.Timeout }>();
  /** The error last logged for each Service that cannot be exposed, so each is logged once. */
  readonly #invalid = new Map<string, string>();
  readonly #informers: InformerEntry[] = [];
  #stopped = false;
  #pending = false;
  #idleTimer: NodeJS.Timeout | undefined;
  #synced = false;
  /** Informer restarts since start (errors and idle timeouts). */
  restarts = 0;

  constructor(options: ServiceWatchOptions) {
    super();
    this.#opts = options;
    this.#now = options.now ?? (() => performance.now());
  }

  /** True once every informer's list succeeded (the agent is not ready before). */
  get synced(): boolean {
    return this.#synced;
  }

  get services(): ReadonlyMap<string, WatchedService> {
    return this.#services;
  }

  /**
   * Services that left the watch while showing what the agent writes
   * (`burrow.dev/url`, `burrow.dev/error`, `burrow.dev/holds`), by key: deleted,
   * or no longer matching the label selector, which a watch reports alike. The
   * latter still exists, and would go on showing a URL nothing serves.
   */
  get departed(): ReadonlyMap<string, ServiceLike> {
    return new Map(Array.from(this.#departed, ([key, { service }]) => [key, service]));
  }

  /**
   * Forgets the departed Services that have waited longer than DEPARTED_MAX_AGE to be cleared.
   * Write-back calls this at the start of each pass, whether or not this replica writes.
   */
  expireDeparted(): void {
    const now = this.#now();
    // Oldest first: the expired ones are at the front.
    for (const [key, { at }] of this.#departed) {
      if (now - at < DEPARTED_MAX_AGE) break;
      this.#departed.delete(key);
    }
  }

  /** Write-back has dealt with the departed Service `key` (this object of it, `uid`). */
  forgetDeparted(key: string, uid: string | undefined): void {
    if (this.#departed.get(key)?.service.metadata?.uid === uid) this.#departed.delete(key);
  }

  /**
   * Services whose route lapsed less than `holdGrace` ago, by key: edited into an invalid route,
   * or withdrawn with their namespace (403). A deleted Service, or one whose hostname annotation
   * was removed, gives its names up at once and is not here.
   */
  get lapsed(): ReadonlyMap<string, LapsedService> {
    return this.#lapsed;
  }

  /**
   * The routes of the annotated Services, oldest Service first: where two ask
   * for one hostname, the agent gives it to the first (after any route that
   * holds it already), so creating a Service cannot take a name from one that
   * was there before. Same-second creations fall back to the route id.
   */
  routes(): ServiceRoute[] {
    const out: Array<{ route: ServiceRoute; created: number }> = [];
    for (const { service, verdict } of this.#services.values()) {
      if (verdict.kind !== 'route') continue;
      out.push({ route: verdict.route, created: creationTime(service) });
    }
    out.sort((a, b) => a.created - b.created || a.route.id.localeCompare(b.route.id));
    return out.map((r) => r.route);
  }

  /**
   * Starts the informers; resolves once each has tried its first list. A list
   * that failed (API server unreachable, RBAC refusing) is retried with
   * backoff; `synced` turns true only when every informer has listed. Changes
   * are emitted from the start: what one namespace listed is served, and
   * follows its changes, while another's list keeps failing.
   */
  async start(): Promise<void> {
    const timeout = this.#opts.requestTimeout ?? API_TIMEOUT;
    const api = apiClient(this.#opts.kubeConfig, CoreV1Api, timeout);
    const selector = this.#opts.labelSelector;
    const targets = this.#opts.namespaces?.length ? this.#opts.namespaces : [undefined];
    for (const ns of targets) {
      const path = ns ? `/api/v1/namespaces/${encodeURIComponent(ns)}/services` : '/api/v1/services';
      const list = ns
        ? () => api.listNamespacedService({ namespace: ns, ...(selector ? { labelSelector: selector } : {}) })
        : () => api.listServiceForAllNamespaces(selector ? { labelSelector: selector } : {});
      // Our list function is the one place that sees a list succeed: the informer reports only failures.
      const listed = async () => {
        let result: Awaited<ReturnType<typeof list>>;
        try {
          result = await list();
        } catch (err) {
          entry.listFailed = true;
          throw err;
        }
        result.items = result.items.filter((item) => this.#wellFormed(item));
        this.#listed(entry);
        return result;
      };
      const informer = new ListWatch<V1Service>(
        path,
        new SettledWatch(
          this.#opts.kubeConfig,
          timeout,
          (obj) => this.#wellFormed(obj),
          () => this.#working(entry),
        ),
        listed,
        false,
        selector,
      );
      const entry: InformerEntry = {
        informer,
        namespace: ns,
        lastEvent: Date.now(),
        failures: 0,
        failed: 0,
        listed: false,
        waiting: false,
        withdrawn: false,
      };
      const upsert = (svc: V1Service) => {
        this.#working(entry);
        this.#upsert(svc);
      };
      informer.on('add', upsert);
      informer.on('update', upsert);
      informer.on('delete', (svc) => {
        this.#working(entry);
        this.#remove(svc);
      });
      // client-node says 'connect' as each attempt starts, before anything answered: it
      // keeps the idle timer quiet but proves nothing, so the backoff does not start over.
      informer.on('connect', () => {
        entry.lastEvent = Date.now();
      });
      informer.on('error', (err) => {
        // Only we abort a watch (stop, and the idle restart's stop + start); the
        // informer reports that abort as an error after start() has already
        // opened the next watch, and restarting for it would abort that one too.
        if ((err as { name?: string })?.name === 'AbortError') return;
        if (statusOf(err) === 403) this.#withdraw(entry);
        this.#restartLater(entry, describe(err));
      });
      this.#informers.push(entry);
    }
    await Promise.all(this.#informers.map((e) => e.informer.start()));
    const idle = this.#opts.watchIdleTimeout ?? 5 * 60_000;
    this.#idleTimer = setInterval(() => this.#checkIdle(idle), Math.max(50, Math.min(idle / 2, 30_000)));
    this.#idleTimer.unref();
  }

  /** Whether a listed or watched object can be kept; one that cannot is logged and dropped. */
  #wellFormed(obj: unknown): boolean {
    const error = serviceShapeError(obj);
    if (error === undefined) return true;
    const meta = (obj as { metadata?: { name?: unknown; namespace?: unknown } } | null)?.metadata;
    this.#opts.logger.warn(
      {
        namespace: String(meta?.namespace ?? '').slice(0, 64),
        name: String(meta?.name ?? '').slice(0, 64),
        error,
      },
      'Kubernetes API sent a Service object the agent cannot read; ignored',
    );
    return false;
  }

  /** The API server answered this informer: the backoff starts over, and a recovery is logged. */
  #working(entry: InformerEntry): void {
    entry.lastEvent = Date.now();
    this.#restore(entry);
    if (entry.failures === 0) return;
    this.#opts.logger.info({ failures: entry.failures }, 'Kubernetes watch working again');
    entry.failures = 0;
  }

  #listed(entry: InformerEntry): void {
    // A list that works ends a failure of lists. A failing watch is not over for it (an API server
    // answering every watch with 410 makes the informer list again each time): that takes an
    // event, or a watch that stays up.
    if (entry.listFailed) {
      entry.listFailed = false;
      this.#working(entry);
    } else entry.lastEvent = Date.now();
    this.#restore(entry);
    entry.listed = true;
    if (this.#synced || !this.#informers.every((e) => e.listed)) return;
    this.#synced = true;
    // After the informer has added what it listed (it does so once this returns).
    this.#schedule();
  }

  /**
   * The API server refuses this informer's Services (403: the agent's access to
   * the namespace was revoked). What it listed before is no longer known to be
   * true: a Service deleted since would go on being served, and hold its
   * hostname against a new one. Its routes are withdrawn until it answers again.
   * Other failures (an API server down or unreachable) keep them: serving what
   * was last seen beats an outage of every route.
   */
  #withdraw(entry: InformerEntry): void {
    // A refused first list has nothing to withdraw (and the agent is not ready meanwhile).
    if (entry.withdrawn || !entry.listed) return;
    entry.withdrawn = true;
    let withdrawn = 0;
    for (const [key, { service }] of this.#services) {
      if (entry.namespace !== undefined && service.metadata?.namespace !== entry.namespace) continue;
      if (this.#services.get(key)?.verdict.kind === 'route') this.#lapse(key, service);
      this.#services.delete(key);
      this.#invalid.delete(key);
      withdrawn++;
    }
    if (withdrawn === 0) return;
    this.#opts.logger.warn(
      { ...(entry.namespace !== undefined ? { namespace: entry.namespace } : {}), services: withdrawn },
      'Kubernetes refuses the agent access to these Services (403); their routes are withdrawn until it allows it again',
    );
    this.#schedule();
  }

  /** The informer is answered again after a withdrawal: its Services (as it holds them) are back. */
  #restore(entry: InformerEntry): void {
    if (!entry.withdrawn) return;
    entry.withdrawn = false;
    const services = entry.informer.list();
    this.#opts.logger.info(
      {
        ...(entry.namespace !== undefined ? { namespace: entry.namespace } : {}),
        services: services.length,
      },
      'Kubernetes allows the agent access to these Services again; their routes are back',
    );
    for (const svc of services) this.#upsert(svc);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearInterval(this.#idleTimer);
    for (const { timer } of this.#lapsed.values()) clearTimeout(timer);
    for (const e of this.#informers) {
      clearTimeout(e.timer);
      await e.informer.stop();
    }
  }

  #upsert(svc: V1Service): void {
    const key = serviceKey(svc);
    this.#departed.delete(key);
    const verdict = routeForService(svc);
    const before = this.#services.get(key)?.verdict;
    const lapsed = this.#lapsed.get(key);
    if (verdict.kind !== 'invalid') this.#unlapse(key);
    else if (lapsed) lapsed.service = svc;
    // First seen invalid (this replica just started) with a holds record: it may have lapsed
    // lately, and what the record says (route-source.ts) keeps replicas alike.
    else if (
      before?.kind === 'route' ||
      (before === undefined && svc.metadata?.annotations?.[ANNOTATION.holds])
    )
      this.#lapse(key, svc);
    this.#services.set(key, { service: svc, verdict });
    // Said here, by every replica, not only by the one that writes it back to the Service.
    if (verdict.kind !== 'invalid') this.#invalid.delete(key);
    else if (this.#invalid.get(key) !== verdict.error) {
      this.#invalid.set(key, verdict.error);
      this.#opts.logger.warn(
        { service: key, error: verdict.error },
        'service cannot be exposed as annotated',
      );
    }
    this.#schedule();
  }

  /**
   * The route of `key` lapsed: for `holdGrace`, its holds record keeps its names from other
   * Services (route-source.ts holders()), so that an edit fixed in that time, or a 403 that passes,
   * gets them back. Every replica sees the same watch events, and so counts from about the same time.
   */
  #lapse(key: string, service: V1Service): void {
    const grace = this.#opts.holdGrace ?? DEFAULT_HOLD_GRACE;
    if (!(grace > 0)) return;
    const timer = setTimeout(() => {
      if (this.#lapsed.get(key)?.timer !== timer) return;
      this.#lapsed.delete(key);
      this.#schedule();
    }, grace);
    timer.unref();
    this.#lapsed.set(key, { service, id: stableRouteId('k8s', key), timer });
  }

  #unlapse(key: string): void {
    const lapsed = this.#lapsed.get(key);
    if (!lapsed) return;
    clearTimeout(lapsed.timer);
    this.#lapsed.delete(key);
  }

  #remove(svc: V1Service): void {
    const key = serviceKey(svc);
    this.#unlapse(key);
    this.#services.delete(key);
    this.#invalid.delete(key);
    const ann = svc.metadata?.annotations ?? {};
    if (WRITTEN.some((k) => ann[k] !== undefined)) {
      const { name, namespace, uid } = svc.metadata ?? {};
      this.#departed.delete(key); // set again below, as the newest: the oldest are forgotten first
      // Enough to find this object again, and what it showed of ours when it left: write-back
      // removes those values only while they are still there (StatusWriter.clearDeparted).
      const shown = Object.fromEntries(WRITTEN.flatMap((k) => (ann[k] !== undefined ? [[k, ann[k]]] : [])));
      this.#departed.set(key, {
        service: {
          metadata: {
            ...(name !== undefined ? { name } : {}),
            ...(namespace !== undefined ? { namespace } : {}),
            ...(uid !== undefined ? { uid } : {}),
            annotations: shown,
          },
        },
        at: this.#now(),
      });
      if (this.#departed.size > MAX_DEPARTED) this.#departed.delete(this.#departed.keys().next().value!);
    }
    this.#schedule();
  }

  #schedule(): void {
    if (this.#pending) return;
    this.#pending = true;
    setImmediate(() => {
      this.#pending = false;
      if (!this.#stopped) this.emit('change');
    });
  }

  #restartLater(entry: InformerEntry, reason: string): void {
    if (this.#stopped) return;
    clearTimeout(entry.timer);
    const { base, cap } = this.#opts.backoff ?? { base: 1_000, cap: 30_000 };
    const delay = Math.min(cap, base * 2 ** entry.failures) * (0.5 + Math.random() / 2);
    // A warning when it starts failing; the retries of a failure that lasts, at debug.
    const level = entry.failures === 0 ? 'warn' : 'debug';
    entry.failures++;
    entry.failed++;
    this.#opts.logger[level](
      {
        ...(entry.namespace !== undefined ? { namespace: entry.namespace } : {}),
        reason,
        failures: entry.failures,
        retryInMs: Math.round(delay),
      },
      entry.failures === 1 ? 'Kubernetes watch failed; restarting' : 'Kubernetes watch failed again',
    );
    this.restarts++;
    this.emit('restart', reason);
    entry.waiting = true;
    entry.timer = setTimeout(() => {
      entry.waiting = false;
      if (this.#stopped) return;
      const failed = entry.failed;
      entry.informer.start().then(
        // A watch resumed from where it was delivers nothing in a quiet cluster: one that stays
        // up for the longest backoff without failing counts as working. One that failed while
        // starting (a list or watch request that took its time to fail) has its retry
        // scheduled already, and nothing to count as working.
        () => {
          if (entry.failed !== failed) return;
          // Answered: Services withdrawn for a 403 are back now, not at the first event.
          this.#restore(entry);
          entry.timer = setTimeout(() => this.#working(entry), cap);
          entry.timer.unref();
        },
        (err: unknown) => this.#restartLater(entry, describe(err)),
      );
    }, delay);
    entry.timer.unref();
  }

  #checkIdle(idle: number): void {
    const now = Date.now();
    for (const e of this.#informers) {
      if (now - e.lastEvent < idle || e.waiting) continue;
      // Nothing for a whole idle period: restart the watch (it resumes from the
      // last resourceVersion, so nothing is relisted unless the server says 410).
      // That includes a retry after a failure whose request was never answered:
      // nothing else would ever try again.
      this.#opts.logger.debug({ idleMs: now - e.lastEvent }, 'Kubernetes watch idle; restarting it');
      e.lastEvent = now;
      this.restarts++;
      this.emit('restart', 'idle');
      void e.informer
        .stop()
        .then(() => e.informer.start())
        .catch((err: unknown) => this.#restartLater(e, describe(err)));
    }
  }
}

/**
 * client-node's Watch reads credentials (an exec plugin, a token file) before
 * its request, outside the try that turns failures into its done callback; the
 * informer re-opens a watch from a callback nobody awaits, so a credential
 * plugin failing when the API server ends a watch (every few minutes) became
 * an unhandled rejection that ended the agent. Here every failure reaches done,
 * and the informer's error handler restarts the watch with backoff.
 */
class SettledWatch extends TimedWatch {
  readonly #wellFormed: (obj: unknown) => boolean;
  readonly #onBookmark: () => void;
  /** Watches in a row that ended within QUICK_END without an event (see doneOnce). */
  #quickEnds = 0;

  /** `onBookmark` hears of each bookmark: the watch is alive though no Service changed. */
  constructor(
    kubeConfig: KubeConfig,
    timeout: number,
    wellFormed: (obj: unknown) => boolean,
    onBookmark: () => void,
  ) {
    super(kubeConfig, timeout);
    this.#wellFormed = wellFormed;
    this.#onBookmark = onBookmark;
  }

  override async watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
  ): Promise<AbortController> {
    let finished = false;
    const started = performance.now();
    let delivered = false;
    // How an informer is told its resourceVersion is no use: the event a 410 Gone arrives as. It
    // then lists afresh before its next watch instead of resuming from there.
    const relistNext = (message: string) =>
      callback('ERROR', { kind: 'Status', code: 410, reason: 'Expired', message });
    const doneOnce = (err: unknown) => {
      if (finished) return;
      finished = true;
      // 504 on a watch: the API server has not reached the resourceVersion asked for ("too large
      // resource version": etcd restored from a backup, or a lagging server behind a load
      // balancer). Resuming from it would meet the same answer for ever; client-go relists, and so
      // does this. A 504 from a proxy in between costs one list more.
      if ((err as { statusCode?: number } | null)?.statusCode === 504)
        relistNext('the API server has not reached this resourceVersion');
      // A watch that ends at once with nothing in it (a 410 on every watch after each relist, a
      // proxy that closes every stream): the informer would open the next one at once, and list
      // again each time, in a loop with no pause and no word in the log. The second such watch in
      // a row ends as a failure instead, so the restart's backoff and warning apply.
      const quick = !err && !delivered && performance.now() - started < QUICK_END;
      this.#quickEnds = quick ? this.#quickEnds + 1 : 0;
      if (this.#quickEnds >= 2) {
        const ended = this.#quickEnds;
        this.#quickEnds = 0; // reported: the count starts over
        done(new Error(`the API server ended ${ended} watches in a row at once, with no event`));
        return;
      }
      done(err);
    };
    // An ERROR event other than 410 (which the informer answers with a relist) ends the watch as
    // a failure: the informer would otherwise re-open it at once, from the same point, and meet
    // the same error again, back to back and without a word in the log.
    const onEvent = (phase: string, apiObj: unknown, watchObj?: unknown) => {
      if (finished) return;
      if (phase !== 'ERROR') {
        delivered = true;
        this.#quickEnds = 0;
      }
      const status = apiObj as { code?: number; message?: string } | undefined;
      if (phase === 'ERROR' && status?.code !== 410) {
        const err = new Error(`watch ended by an error event: ${status?.message ?? 'no message'}`);
        doneOnce(Object.assign(err, { statusCode: status?.code }));
        return;
      }
      // An object the informer would fail on (client-node checks nothing) is skipped: its
      // watch handler is async, and what it throws would end the process.
      if ((phase === 'ADDED' || phase === 'MODIFIED' || phase === 'DELETED') && !this.#wellFormed(apiObj))
        return;
      if (phase === 'BOOKMARK') {
        // The informer resumes from a bookmark's resourceVersion; one without any would make it
        // list everything again next time, so it is skipped.
        const version = (apiObj as { metadata?: { resourceVersion?: unknown } } | null)?.metadata
          ?.resourceVersion;
        if (typeof version !== 'string' || version === '') return;
        this.#onBookmark();
      }
      const handled: unknown = callback(phase, apiObj, watchObj);
      if (handled instanceof Promise) handled.catch((err: unknown) => doneOnce(err));
    };
    try {
      // Bookmarks move the informer's resourceVersion on while nothing it watches changes, so a
      // watch resumed after a quiet spell (or the idle restart) is not refused with 410 Gone for
      // a version the API server has compacted away, and nothing is listed again for it.
      return await super.watch(path, { ...queryParams, allowWatchBookmarks: true }, onEvent, doneOnce);
    } catch (err) {
      queueMicrotask(() => doneOnce(err));
      return new AbortController();
    }
  }
}

/** The HTTP status of a failed list (client-node's ApiException) or watch. */
function statusOf(err: unknown): number | string | undefined {
  const e = err as { statusCode?: number; code?: number | string } | null;
  return e?.statusCode ?? e?.code;
}

function describe(err: unknown): string {
  const e = err as { message?: string } | null;
  const status = statusOf(err);
  return `${status ? `${status} ` : ''}${e?.message ?? String(err)}`.slice(0, 300);
}

/** A Service's creation time, ms; one without a readable time sorts last. */
function creationTime(svc: V1Service): number {
  const at = svc.metadata?.creationTimestamp as Date | string | undefined;
  const ms = at === undefined ? Number.NaN : new Date(at).getTime();
  return Number.isNaN(ms) ? Number.POSITIVE_INFINITY : ms;
}
