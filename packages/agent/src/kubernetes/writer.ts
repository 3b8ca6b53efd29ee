import { createHash } from 'node:crypto';
import type { Logger } from '@burrow/shared';
import {
  type CoreV1Api,
  type CoreV1Event,
  PatchStrategy,
  setHeaderOptions,
  type V1Service,
} from '@kubernetes/client-node';
import { ANNOTATION, type ServiceLike, serviceKey } from './annotations.js';
import { ApiStoppedError } from './api.js';

/** What the agent wants a Service to show: its URL or the reason it is not exposed. */
export interface DesiredStatus {
  url?: string | undefined;
  error?: string | undefined;
  /** The `burrow.dev/holds` record (holds.ts); absent clears it. */
  holds?: string | undefined;
  event: { type: 'Normal' | 'Warning'; reason: string; message: string };
}

const MERGE_PATCH = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const JSON_PATCH = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);
const COMPONENT = 'burrow-agent';

/**
 * Contested writes to one Service within WRITE_WINDOW before its write-back
 * pauses. A write is contested when it puts back what this agent wrote last:
 * someone else changed it since, typically a second agent installation whose
 * scope overlaps ours, each rewriting what the other wrote (hundreds of
 * PATCHes a second, each one an event for every watcher). Writes of a new
 * status (a Service edited, a route's verdict changing) are never limited.
 */
const MAX_WRITES = 5;
const WRITE_WINDOW = 60_000;

function statusCode(err: unknown): number | undefined {
  const e = err as { code?: number; statusCode?: number };
  return e?.code ?? e?.statusCode;
}

/**
 * A refusal that trying again cannot change (a validation error, say): 4xx but
 * timeout, conflict, throttling, and 401 and 403. Those two are tried again: a
 * service-account token that expired is read afresh, and a Role that is missing
 * may be granted (or an admission policy changed) while the agent runs.
 */
function isFinal(status: number | undefined): boolean {
  return status !== undefined && status >= 400 && status < 500 && ![401, 403, 408, 409, 429].includes(status);
}

type WriteKind = 'annotations' | 'event';

/** What the writer remembers of one Service object. */
interface Written {
  /** The last Event recorded (type/reason/message), so a steady state emits nothing. */
  event?: string | undefined;
  /** The status (url, error) last written to its annotations. */
  status?: string | undefined;
  /**
   * The resourceVersion the object had when that status was written: while
   * the watch still shows this one, it has not caught up with the write.
   */
  writtenOver?: string | undefined;
  /** When contested rewrites happened, within WRITE_WINDOW. */
  rewrites: number[];
  /** Its write-back is paused (warned once per pause). */
  paused: boolean;
  /** Kinds of write that failed and have not succeeded since (warned once). */
  failing: Set<WriteKind>;
}

/**
 * Writes status back to Services: the `burrow.dev/url` / `burrow.dev/error`
 * annotations (merge-patch of only those keys, and only when they differ, so
 * our own writes never trigger another write) and a deduplicated Event.
 */
export class StatusWriter {
  readonly #api: CoreV1Api;
  readonly #log: Logger;
  /**
   * What the writer remembers per Service object (its uid: a Service deleted
   * and created again is a new object and gets its own Event).
   */
  readonly #services = new Map<string, Written>();
  readonly #repeats = new Map<string, number>();
  /**
   * Where writes of a kind were refused (401, 403) in this pass: `NAMESPACE
   * KIND`, or `* KIND` for a 401, which no namespace will take. The rest of the
   * pass writes nothing more there: a namespace the agent may not write to
   * costs one request per pass, not one per Service.
   */
  readonly #refused = new Set<string>();
  /**
   * The writes (`SERVICE KIND`) refused in this pass, and in the last one.
   * One refused in the last pass waits out this one, so that another Service
   * of its namespace asks instead: a refusal for that one object (RBAC
   * resourceNames, an admission policy) then holds back no other.
   */
  #refusedNow = new Set<string>();
  #refusedBefore = new Set<string>();

  constructor(api: CoreV1Api, logger: Logger) {
    this.#api = api;
    this.#log = logger;
  }

  /**
   * Brings `svc` to `desired`. Never throws: an API failure is logged and
   * the result is false, so the caller tries again later.
   */
  async apply(svc: ServiceLike, desired: DesiredStatus): Promise<boolean> {
    const ann = svc.metadata?.annotations ?? {};
    const patch: Record<string, string | null> = {};
    if ((ann[ANNOTATION.url] ?? undefined) !== desired.url) patch[ANNOTATION.url] = desired.url ?? null;
    if ((ann[ANNOTATION.error] ?? undefined) !== desired.error)
      patch[ANNOTATION.error] = desired.error ?? null;
    if ((ann[ANNOTATION.holds] ?? undefined) !== desired.holds)
      patch[ANNOTATION.holds] = desired.holds ?? null;
    const name = svc.metadata?.name ?? '';
    const namespace = svc.metadata?.namespace ?? 'default';
    let ok = true;
    const changed = Object.keys(patch).length > 0;
    if (changed && this.#refusedIn(svc, 'annotations')) ok = false;
    else if (changed) {
      const state = this.#of(svc);
      const status = JSON.stringify([desired.url ?? null, desired.error ?? null, desired.holds ?? null]);
      const version = svc.metadata?.resourceVersion;
      // The object is still the one this status was written over: the watch (an API server's
      // watch cache trails writes) has not shown the write yet. Writing it again would be
      // taken for a contest, and each pass meanwhile would write it once more.
      const pending = state.status === status && version !== undefined && state.writtenOver === version;
      if (pending) return this.#event(svc as V1Service, desired.event, false);
      if (state.status === status && !this.#mayRewrite(svc, state)) return false;
      try {
        await this.#api.patchNamespacedService(
          { name, namespace, body: { metadata: { annotations: patch } } },
          MERGE_PATCH,
        );
        state.status = status;
        state.writtenOver = version;
        state.failing.delete('annotations');
        this.#log.info({ service: serviceKey(svc), ...patch }, 'service status updated');
      } catch (err) {
        ok = this.#failed(svc, 'annotations', err, 'could not update service annotations');
      }
    }
    // A Service that shows this status already, seen for the first time (this process started, or
    // became the writer): its Event was recorded by whoever wrote the status, and recording it
    // again would only bump its count on every restart and change of leader.
    const adopt = !changed;
    return (await this.#event(svc as V1Service, desired.event, adopt)) && ok;
  }

  /** Removes our annotations from a Service that no longer asks to be exposed; false when that failed. */
  async clear(svc: ServiceLike): Promise<boolean> {
    const ann = svc.metadata?.annotations ?? {};
    if (
      ann[ANNOTATION.url] === undefined &&
      ann[ANNOTATION.error] === undefined &&
      ann[ANNOTATION.holds] === undefined
    )
      return true;
    if (this.#refusedIn(svc, 'annotations')) return false;
    const state = this.#of(svc);
    try {
      await this.#removeAnnotations(svc);
      state.failing.delete('annotations');
    } catch (err) {
      if (!this.#failed(svc, 'annotations', err, 'could not clear service annotations')) return false;
    }
    state.status = undefined;
    state.event = undefined;
    return true;
  }

  /**
   * Removes our annotations from a Service that left the watch (`departed` of
   * ServiceWatch): gone, or out of the label selector. `svc` shows the values
   * it had when it left, and only those are removed, in one JSON patch that
   * tests each first: a Service that another installation has taken over since
   * (its label selector matches it now) shows that installation's values, and
   * the API server refuses the whole patch (422). Only from that object, too:
   * one created since under the same name has another uid, and the patch tests
   * it. False when that failed.
   */
  async clearDeparted(svc: ServiceLike): Promise<boolean> {
    const uid = svc.metadata?.uid;
    const shown = svc.metadata?.annotations ?? {};
    const ops: Array<{ op: 'test' | 'remove'; path: string; value?: string }> = [];
    if (uid) ops.push({ op: 'test', path: '/metadata/uid', value: uid });
    for (const key of [ANNOTATION.url, ANNOTATION.error, ANNOTATION.holds]) {
      const value = shown[key];
      if (value === undefined) continue;
      const path = `/metadata/annotations/${key.replace(/~/g, '~0').replace(/\//g, '~1')}`;
      ops.push({ op: 'test', path, value }, { op: 'remove', path });
    }
    if (!ops.some((op) => op.op === 'remove')) return true;
    if (this.#refusedIn(svc, 'annotations')) return false;
    try {
      await this.#api.patchNamespacedService(
        { name: svc.metadata?.name ?? '', namespace: svc.metadata?.namespace ?? 'default', body: ops },
        JSON_PATCH,
      );
      this.#log.info(
        { service: serviceKey(svc) },
        "service left the agent's scope; its status annotations removed",
      );
      return true;
    } catch (err) {
      // Deleted; deleted and created again (another uid); or its status changed since it left,
      // written by someone else (a test failed): nothing of ours to clear.
      const status = statusCode(err);
      if (status === 404 || status === 422 || status === 409) return true;
      return this.#failed(svc, 'annotations', err, 'could not clear service annotations');
    }
  }

  /** Patches our status annotations away. */
  async #removeAnnotations(svc: ServiceLike): Promise<void> {
    await this.#api.patchNamespacedService(
      {
        name: svc.metadata?.name ?? '',
        namespace: svc.metadata?.namespace ?? 'default',
        body: {
          metadata: {
            annotations: { [ANNOTATION.url]: null, [ANNOTATION.error]: null, [ANNOTATION.holds]: null },
          },
        },
      },
      MERGE_PATCH,
    );
  }

  /**
   * Logs a failed write and says whether it is done with (true: the Service
   * is gone, or the API server refuses in a way a retry cannot change) or
   * should be tried again (false). A failure that lasts warns once; its
   * repeats log at debug, until a write of that kind succeeds.
   */
  #failed(svc: ServiceLike, what: WriteKind, err: unknown, message: string): boolean {
    // Given up because the agent is stopping: nothing failed, and nothing is tried again.
    if (err instanceof ApiStoppedError) return false;
    const status = statusCode(err);
    if (status === 404) return true;
    if (status === 401 || status === 403) {
      this.#refused.add(`${status === 401 ? '*' : (svc.metadata?.namespace ?? 'default')} ${what}`);
      this.#refusedNow.add(`${eventKey(svc)} ${what}`);
    }
    const { failing } = this.#of(svc);
    const level = failing.has(what) ? 'debug' : 'warn';
    failing.add(what);
    const final = isFinal(status);
    this.#log[level](
      {
        service: serviceKey(svc),
        status,
        reason: (err as Error).message,
        ...(final ? {} : { retrying: true }),
      },
      message,
    );
    return final;
  }

  #of(svc: ServiceLike): Written {
    const key = eventKey(svc);
    let state = this.#services.get(key);
    if (!state) {
      state = { rewrites: [], paused: false, failing: new Set() };
      this.#services.set(key, state);
    }
    return state;
  }

  /** Whether a write of `what` for `svc` waits for a later pass: refused there in this pass, or itself in the last. */
  #refusedIn(svc: ServiceLike, what: WriteKind): boolean {
    if (this.#refused.size === 0 && this.#refusedBefore.size === 0) return false;
    return (
      this.#refused.has(`* ${what}`) ||
      this.#refused.has(`${svc.metadata?.namespace ?? 'default'} ${what}`) ||
      this.#refusedBefore.has(`${eventKey(svc)} ${what}`)
    );
  }

  /**
   * Starts a pass over `services`, all there are: forgets the Services not
   * among them (deleted ones), and the refusals of the last pass.
   */
  startPass(services: Iterable<ServiceLike>): void {
    this.#refused.clear();
    this.#refusedBefore = this.#refusedNow;
    this.#refusedNow = new Set();
    const live = new Set<string>();
    for (const svc of services) live.add(eventKey(svc));
    for (const key of this.#services.keys()) if (!live.has(key)) this.#services.delete(key);
  }

  /**
   * Counts a contested write to `svc`'s annotations; false once MAX_WRITES
   * happened in WRITE_WINDOW. The first refusal of a streak is a warning; the
   * caller's retry tries again once the window has room.
   */
  #mayRewrite(svc: ServiceLike, state: Written): boolean {
    const now = performance.now();
    const recent = state.rewrites.filter((at) => now - at < WRITE_WINDOW);
    state.rewrites = recent;
    if (recent.length >= MAX_WRITES) {
      if (!state.paused) {
        state.paused = true;
        this.#log.warn(
          { service: serviceKey(svc), writes: MAX_WRITES, withinMs: WRITE_WINDOW },
          'service status keeps changing under the agent (another agent installation writing it?); pausing its write-back',
        );
      }
      return false;
    }
    state.paused = false;
    recent.push(now);
    return true;
  }

  /**
   * Records `ev` for `svc` unless it is the last one recorded; false when that
   * failed. With `adopt`, a Service this writer has recorded nothing for yet
   * takes `ev` as recorded already.
   */
  async #event(svc: V1Service, ev: DesiredStatus['event'], adopt: boolean): Promise<boolean> {
    const key = eventKey(svc);
    const state = this.#of(svc);
    const fingerprint = `${ev.type}/${ev.reason}/${ev.message}`;
    if (state.event === fingerprint) return true;
    // Only where this writer has neither written the status nor failed to record its Event.
    if (adopt && state.event === undefined && state.status === undefined && !state.failing.has('event')) {
      state.event = fingerprint;
      return true;
    }
    if (this.#refusedIn(svc, 'event')) return false;
    const namespace = svc.metadata?.namespace ?? 'default';
    // A deterministic name per (Service, reason, message): a repeat — from a
    // restart or another replica — finds the existing Event and bumps its count.
    const digest = createHash('sha256').update(`${key}/${fingerprint}`).digest('hex').slice(0, 16);
    const name = `${svc.metadata?.name ?? 'service'}.burrow.${digest}`.slice(0, 253);
    const now = new Date();
    const body: CoreV1Event = {
      metadata: { name, namespace },
      involvedObject: {
        apiVersion: 'v1',
        kind: 'Service',
        name: svc.metadata?.name ?? '',
        namespace,
        ...(svc.metadata?.uid ? { uid: svc.metadata.uid } : {}),
        ...(svc.metadata?.resourceVersion ? { resourceVersion: svc.metadata.resourceVersion } : {}),
      },
      type: ev.type,
      reason: ev.reason,
      message: ev.message.slice(0, 1024),
      source: { component: COMPONENT },
      reportingComponent: COMPONENT,
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
    };
    try {
      await this.#api.createNamespacedEvent({ namespace, body });
      state.event = fingerprint;
      state.failing.delete('event');
      return true;
    } catch (err) {
      if (statusCode(err) !== 409) {
        // A refusal a retry cannot change is not tried again for this Event either.
        const done = this.#failed(svc, 'event', err, 'could not record event');
        if (done) state.event = fingerprint;
        return done;
      }
      // The Event exists (a restart, another replica): it is recorded, and only its count is behind.
      state.event = fingerprint;
      // RBAC grants events create/patch only (no get): count repeats locally.
      const count = (this.#repeats.get(name) ?? 1) + 1;
      this.#repeats.set(name, count);
      if (this.#repeats.size > 10_000) this.#repeats.clear();
      try {
        await this.#api.patchNamespacedEvent(
          { name, namespace, body: { count, lastTimestamp: now } },
          MERGE_PATCH,
        );
      } catch (patchErr) {
        if (!(patchErr instanceof ApiStoppedError))
          this.#log.warn({ service: key, reason: (patchErr as Error).message }, 'could not update event');
      }
      return true;
    }
  }
}

/** Which Service object an Event is for: its uid, or namespace/name where there is none. */
function eventKey(svc: ServiceLike): string {
  return svc.metadata?.uid ?? serviceKey(svc);
}
