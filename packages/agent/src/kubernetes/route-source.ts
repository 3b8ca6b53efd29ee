import { EventEmitter } from 'node:events';
import type { Route, RouteSource, RouteSourceEvents } from '../routes/source.js';
import type { ServiceRoute } from './annotations.js';
import type { ServiceWatch } from './services.js';

function toRoute(r: ServiceRoute): Route {
  return {
    id: r.id,
    hostnames: r.hostnames,
    target: r.target,
    ...(r.allowCidrs.length ? { allowCidrs: r.allowCidrs } : {}),
    // A ClusterIP never matches the names in a backend's certificate: the
    // connection is encrypted, but identity comes from the cluster network.
    ...(r.protocol === 'https' ? { tlsInsecure: true } : {}),
  };
}

/** Routes from annotated Services, as a RouteSource the connector announces. */
export class KubernetesRouteSource extends EventEmitter<RouteSourceEvents> implements RouteSource {
  readonly name = 'kubernetes';
  readonly #watch: ServiceWatch;
  #routes: Route[] = [];
  #fingerprint = '[]';

  constructor(watch: ServiceWatch) {
    super();
    this.#watch = watch;
    this.#refresh(false);
    watch.on('change', () => this.#refresh(true));
  }

  routes(): readonly Route[] {
    return this.#routes;
  }

  #refresh(emit: boolean): void {
    const next = this.#watch.routes().map(toRoute);
    const fingerprint = JSON.stringify(next);
    // Our own write-back edits annotations we do not read: those MODIFIED
    // events leave the route set unchanged and must not cause a re-announce.
    if (fingerprint === this.#fingerprint) return;
    this.#fingerprint = fingerprint;
    this.#routes = next;
    if (emit) this.emit('change', this.#routes);
  }
}
