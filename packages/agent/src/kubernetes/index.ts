import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { CoordinationV1Api, CoreV1Api } from '@kubernetes/client-node';
import type { RouteSource } from '../routes/source.js';
import { API_TIMEOUT, apiClient } from './api.js';
import { holdsKey } from './holds.js';
import { LeaseElector, RENEW_INTERVAL } from './lease.js';
import { KubernetesRouteSource } from './route-source.js';
import { ServiceWatch, type ServiceWatchOptions } from './services.js';
import { type RouteResultsSource, StatusSync } from './status-sync.js';
import { StatusWriter } from './writer.js';

export { ANNOTATION, routeForService } from './annotations.js';

/** The Service watch's options, as it takes them; backoff and requestTimeout apply to more here. */
type WatchOptions = Pick<
  ServiceWatchOptions,
  'kubeConfig' | 'namespaces' | 'labelSelector' | 'logger' | 'watchIdleTimeout' | 'holdGrace'
>;

export interface KubernetesOptions extends WatchOptions {
  /** Write-back leader election; false writes from every replica (tests, single replica). */
  lease?:
    | { namespace: string; identity: string; name?: string; leaseDuration?: number; renewInterval?: number }
    | false;
  /** Backoff of a failed watch and of write-back that could not write: first delay and cap, ms. */
  backoff?: { base: number; cap: number };
  /** How long one request to the API server may go unanswered, ms. Default 30 s. */
  requestTimeout?: number;
  /**
   * The holds key (--holds-key-file): a secret of its own that keys the
   * `burrow.dev/holds` records, which keep a contested hostname with the same
   * Service across replicas, restarts and token rotations (holds.ts). A
   * function is called again at each use, following a file as it changes.
   */
  holdsKey?: string | (() => string);
  /**
   * The agent's token. Without a holds key, records are made with a key from
   * it, which changes when the token is rotated; with one, records made with
   * the token's key still verify (and are made again with the holds key).
   * With neither, each replica decides from what it has seen itself.
   */
  token?: string | (() => string);
}

export interface Kubernetes {
  /** Routes from annotated Services, for startAgent({ routes }). */
  readonly source: RouteSource;
  readonly watch: ServiceWatch;
  /** True once the initial list is done. */
  readonly synced: boolean;
  /** Starts write-back from the agent's route verdicts. */
  attach(agent: RouteResultsSource): StatusSync;
  stop(): Promise<void>;
}

/** The namespace this pod runs in: POD_NAMESPACE, else the service account's, else "default". */
export function podNamespace(): string {
  if (process.env['POD_NAMESPACE']) return process.env['POD_NAMESPACE'];
  try {
    return (
      readFileSync('/var/run/secrets/kubernetes.io/serviceaccount/namespace', 'utf8').trim() || 'default'
    );
  } catch {
    return 'default';
  }
}

/** This replica's identity for the Lease: POD_NAME, else the hostname (which is the pod name). */
export function podName(): string {
  return process.env['POD_NAME'] || hostname();
}

/** A holds key from `secret`, following a file as it changes; while it cannot be read, the last key read. */
function keyFrom(secret: string | (() => string)): () => Buffer {
  if (typeof secret === 'string') {
    const key = holdsKey(secret);
    return () => key;
  }
  let key = holdsKey(secret());
  return () => {
    try {
      key = holdsKey(secret());
    } catch {
      // The last key stands.
    }
    return key;
  };
}

/** The keys that verify `burrow.dev/holds` records, the one new records are made with first. */
function holdsKeys(options: KubernetesOptions): (() => readonly Buffer[]) | undefined {
  const keys = [options.holdsKey, options.token].flatMap((s) => (s === undefined ? [] : [keyFrom(s)]));
  return keys.length === 0 ? undefined : () => keys.map((key) => key());
}

/** Lists Services (resolves after the initial list) and returns the route source and write-back. */
export async function startKubernetes(options: KubernetesOptions): Promise<Kubernetes> {
  const log = options.logger;
  const watch = new ServiceWatch({
    kubeConfig: options.kubeConfig,
    logger: log,
    ...(options.namespaces ? { namespaces: options.namespaces } : {}),
    ...(options.labelSelector ? { labelSelector: options.labelSelector } : {}),
    ...(options.watchIdleTimeout ? { watchIdleTimeout: options.watchIdleTimeout } : {}),
    ...(options.backoff ? { backoff: options.backoff } : {}),
    ...(options.requestTimeout ? { requestTimeout: options.requestTimeout } : {}),
    ...(options.holdGrace !== undefined ? { holdGrace: options.holdGrace } : {}),
  });
  await watch.start();
  const timeout = options.requestTimeout ?? API_TIMEOUT;
  const holdsKeysOf = holdsKeys(options);
  const source = new KubernetesRouteSource(watch, holdsKeysOf);
  // Stopping gives up a write under way: an API server that holds it must not hold the exit.
  const stopWrites = new AbortController();
  const writer = new StatusWriter(apiClient(options.kubeConfig, CoreV1Api, timeout, stopWrites.signal), log);
  let elector: LeaseElector | undefined;
  let sync: StatusSync | undefined;
  const listed = () =>
    log.info({ services: watch.services.size, routes: source.routes().length }, 'Kubernetes services listed');
  if (watch.synced) listed();
  else {
    // Not ready until the list succeeds (the watch retries with backoff and says why it failed).
    log.warn('Kubernetes services not listed yet; the agent is not ready until they are');
    const whenSynced = () => {
      if (!watch.synced) return;
      watch.off('change', whenSynced);
      listed();
    };
    watch.on('change', whenSynced);
  }
  return {
    source,
    watch,
    get synced() {
      return watch.synced;
    },
    attach(agent) {
      if (options.lease !== false && options.lease) {
        // A Lease request waits no longer than a renewal interval: the next try is due by then.
        const renewInterval = options.lease.renewInterval ?? RENEW_INTERVAL;
        const api = apiClient(options.kubeConfig, CoordinationV1Api, Math.min(timeout, renewInterval));
        elector = new LeaseElector(api, {
          name: options.lease.name ?? 'burrow-agent-writer',
          namespace: options.lease.namespace,
          identity: options.lease.identity,
          logger: log,
          ...(options.lease.leaseDuration ? { leaseDuration: options.lease.leaseDuration } : {}),
          ...(options.lease.renewInterval ? { renewInterval: options.lease.renewInterval } : {}),
        });
        elector.start();
      }
      sync = new StatusSync({
        watch,
        agent,
        writer,
        logger: log,
        ...(elector ? { elector } : {}),
        ...(options.backoff ? { retry: options.backoff } : {}),
        ...(holdsKeysOf ? { holdsKeys: holdsKeysOf } : {}),
      });
      void sync.schedule();
      return sync;
    },
    async stop() {
      stopWrites.abort();
      await sync?.stop();
      await elector?.stop();
      await watch.stop();
    },
  };
}
