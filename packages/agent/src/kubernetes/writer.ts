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

/** What the agent wants a Service to show: its URL or the reason it is not exposed. */
export interface DesiredStatus {
  url?: string | undefined;
  error?: string | undefined;
  event: { type: 'Normal' | 'Warning'; reason: string; message: string };
}

const MERGE_PATCH = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const COMPONENT = 'burrow-agent';

/**
 * Annotation writes to one Service within WRITE_WINDOW before its write-back
 * pauses. Our writes change only what differs, so a Service that needs more
 * is being written by someone else too: typically a second agent installation
 * whose scope overlaps ours, each rewriting what the other wrote (hundreds of
 * PATCHes a second, each one an event for every watcher).
 */
const MAX_WRITES = 5;
const WRITE_WINDOW = 60_000;

function statusCode(err: unknown): number | undefined {
  const e = err as { code?: number; statusCode?: number };
  return e?.code ?? e?.statusCode;
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
   * Last event written per Service object (its uid: a Service deleted and
   * created again is a new object and gets its own Event), so a steady state
   * emits nothing.
   */
  readonly #lastEvent = new Map<string, string>();
  readonly #repeats = new Map<string, number>();
  /** When each Service's annotations were last written (within WRITE_WINDOW), by Service object. */
  readonly #writes = new Map<string, number[]>();
  /** Services whose write-back is paused (warned once per pause). */
  readonly #paused = new Set<string>();

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
    const name = svc.metadata?.name ?? '';
    const namespace = svc.metadata?.namespace ?? 'default';
    let ok = true;
    if (Object.keys(patch).length > 0) {
      if (!this.#mayWrite(svc)) return false;
      try {
        await this.#api.patchNamespacedService(
          { name, namespace, body: { metadata: { annotations: patch } } },
          MERGE_PATCH,
        );
        this.#log.info({ service: serviceKey(svc), ...patch }, 'service status updated');
      } catch (err) {
        // 404: the Service is gone, and with it what there was to write.
        if (statusCode(err) !== 404) {
          ok = false;
          this.#log.warn(
            { service: serviceKey(svc), status: statusCode(err), reason: (err as Error).message },
            'could not update service annotations',
          );
        }
      }
    }
    return (await this.#event(svc as V1Service, desired.event)) && ok;
  }

  /** Removes our annotations from a Service that no longer asks to be exposed; false when that failed. */
  async clear(svc: ServiceLike): Promise<boolean> {
    const ann = svc.metadata?.annotations ?? {};
    if (ann[ANNOTATION.url] === undefined && ann[ANNOTATION.error] === undefined) return true;
    try {
      await this.#api.patchNamespacedService(
        {
          name: svc.metadata?.name ?? '',
          namespace: svc.metadata?.namespace ?? 'default',
          body: { metadata: { annotations: { [ANNOTATION.url]: null, [ANNOTATION.error]: null } } },
        },
        MERGE_PATCH,
      );
    } catch (err) {
      if (statusCode(err) !== 404) {
        this.#log.warn(
          { service: serviceKey(svc), reason: (err as Error).message },
          'could not clear service annotations',
        );
        return false;
      }
    }
    this.#lastEvent.delete(eventKey(svc));
    return true;
  }

  /** Forgets the Services not among `services` (deleted ones). */
  retain(services: Iterable<ServiceLike>): void {
    const live = new Set<string>();
    for (const svc of services) live.add(eventKey(svc));
    for (const key of this.#lastEvent.keys()) if (!live.has(key)) this.#lastEvent.delete(key);
    for (const key of this.#writes.keys()) if (!live.has(key)) this.#writes.delete(key);
    for (const key of this.#paused) if (!live.has(key)) this.#paused.delete(key);
  }

  /**
   * Counts a write to `svc`'s annotations; false once MAX_WRITES happened in
   * WRITE_WINDOW. The first refusal of a streak is a warning; the caller's
   * retry tries again once the window has room.
   */
  #mayWrite(svc: ServiceLike): boolean {
    const key = eventKey(svc);
    const now = performance.now();
    const recent = (this.#writes.get(key) ?? []).filter((at) => now - at < WRITE_WINDOW);
    this.#writes.set(key, recent);
    if (recent.length >= MAX_WRITES) {
      if (!this.#paused.has(key)) {
        this.#paused.add(key);
        this.#log.warn(
          { service: serviceKey(svc), writes: MAX_WRITES, withinMs: WRITE_WINDOW },
          'service status keeps changing under the agent (another agent installation writing it?); pausing its write-back',
        );
      }
      return false;
    }
    this.#paused.delete(key);
    recent.push(now);
    return true;
  }

  /** Records `ev` for `svc` unless it is the last one recorded; false when that failed. */
  async #event(svc: V1Service, ev: DesiredStatus['event']): Promise<boolean> {
    const key = eventKey(svc);
    const fingerprint = `${ev.type}/${ev.reason}/${ev.message}`;
    if (this.#lastEvent.get(key) === fingerprint) return true;
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
      this.#lastEvent.set(key, fingerprint);
      return true;
    } catch (err) {
      if (statusCode(err) !== 409) {
        this.#log.warn({ service: key, reason: (err as Error).message }, 'could not record event');
        return false;
      }
      // The Event exists (a restart, another replica): it is recorded, and only its count is behind.
      this.#lastEvent.set(key, fingerprint);
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
