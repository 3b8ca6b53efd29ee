import { EventEmitter } from 'node:events';
import type { Route, RouteSource, RouteSourceEvents } from '../routes/source.js';
import { claimedNames } from '../routes/validate.js';
import { ANNOTATION, type ServiceLike, type ServiceRoute } from './annotations.js';
import { verifiedHolds } from './holds.js';
import type { ServiceWatch } from './services.js';

function toRoute(r: ServiceRoute): Route {
  return {
    id: r.id,
    hostnames: r.hostnames,
    ...(r.ports ? { ports: r.ports } : {}),
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
  #fingerprint = '';

  readonly #holdsKeys: (() => readonly Buffer[]) | undefined;

  /** `holdsKeys` verify the Services' `burrow.dev/holds` records (holds.ts); without them they are not read. */
  constructor(watch: ServiceWatch, holdsKeys?: () => readonly Buffer[]) {
    super();
    this.#watch = watch;
    this.#holdsKeys = holdsKeys;
    this.#refresh(false);
    watch.on('change', () => this.#refresh(true));
  }

  routes(): readonly Route[] {
    return this.#routes;
  }

  /**
   * Hostname (or `tcp:PORT`) → the route whose Service holds it by a verified record: also a
   * route not in the set now, whose Service lapsed within the hold grace (ServiceWatch.lapsed),
   * which keeps the name reserved. Where
   * two Services' records claim a name, the newer record has it: the older
   * one was left on a Service that has since lost the name (not yet cleared,
   * or put back by a tenant who kept it). Two as old as each other leave it to
   * the agent's own rules.
   */
  holders(): ReadonlyMap<string, string> {
    const out = new Map<string, { id: string; since: number }>();
    if (!this.#holdsKeys) return new Map();
    const keys = this.#holdsKeys();
    const tied = new Set<string>();
    /** Each Service with a record, the route id it is for, and the names it may hold. */
    const claims: Array<{ service: ServiceLike; id: string; claimed: readonly string[] | undefined }> = [];
    for (const { service, verdict } of this.#watch.services.values())
      if (verdict.kind === 'route')
        claims.push({ service, id: verdict.route.id, claimed: claimedNames(verdict.route) });
    // A Service whose route lapsed a short while ago (edited into an invalid one, or withdrawn
    // with its namespace) still has its record, which write-back keeps meanwhile: the names it
    // holds stay its own, reserved and not served, so that another Service asking for them does
    // not take them, with a newer record of its own, for good, before the edit is fixed.
    for (const { service, id } of this.#watch.lapsed.values())
      claims.push({ service, id, claimed: undefined });
    for (const { service, id, claimed } of claims) {
      const { names, since } = verifiedHolds(keys, id, service.metadata?.annotations?.[ANNOTATION.holds]);
      for (const h of names) {
        if (claimed && !claimed.includes(h)) continue;
        const other = out.get(h);
        if (other && other.id !== id && other.since === since) tied.add(h);
        else if (!other || since > other.since) {
          out.set(h, { id, since });
          tied.delete(h);
        }
      }
    }
    const holders = new Map<string, string>();
    for (const [h, { id }] of out) if (!tied.has(h)) holders.set(h, id);
    return holders;
  }

  #refresh(emit: boolean): void {
    const next = this.#watch.routes().map(toRoute);
    // A lapsed Service's reservation ending (its grace over, or its record removed by the replica
    // that writes) changes no route, but what holders() says.
    const lapsed = Array.from(this.#watch.lapsed, ([key, l]) => [
      key,
      l.service.metadata?.annotations?.[ANNOTATION.holds],
    ]);
    const fingerprint = JSON.stringify([next, lapsed]);
    // Our own write-back edits annotations we do not read: those MODIFIED
    // events leave the route set unchanged and must not cause a re-announce.
    if (fingerprint === this.#fingerprint) return;
    this.#fingerprint = fingerprint;
    this.#routes = next;
    if (emit) this.emit('change', this.#routes);
  }
}
