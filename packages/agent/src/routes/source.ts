import { EventEmitter } from 'node:events';

/**
 * One exposed service: the hostnames the relay should route to this agent and
 * the backend origin the agent dials for them. A relay's stream names a route
 * by `id`, never an address, so `target` is the only place the agent will
 * ever connect to on a route's behalf.
 */
export interface Route {
  /** Stable id announced to the relay (letters, digits and . _ : / -, at most 128). */
  id: string;
  /** Exact names or `*.` wildcards, lower case; empty for a TCP route. */
  hostnames: string[];
  /** A TCP route's public ports on the relay (`tcp://` targets only). */
  ports?: number[];
  /**
   * Backend origin: `http://host:port` or `https://host:port`, no path;
   * `h2c://host:port` for a backend that speaks HTTP/2 without TLS (gRPC);
   * `tls-passthrough://host:port` or `tcp://host:port` for raw byte streams.
   */
  target: string;
  /** Client IP allowlist the relay enforces; absent or empty allows everyone. */
  allowCidrs?: string[];
  /** For https targets: accept any certificate (ClusterIPs rarely match a certificate's names). */
  tlsInsecure?: boolean;
}

/** A route as given to `startAgent` directly (tests, the demo, embedding code). */
export type StaticRoute = Route;

export interface RouteSourceEvents {
  /** The whole route set after a change (never a delta). */
  change: [routes: readonly Route[]];
}

/**
 * Where routes come from: flags and a YAML file (static.ts), later Kubernetes
 * Services. A source always describes the complete set; the agent announces
 * it as a whole, so withdrawing a route is simply leaving it out.
 */
export interface RouteSource {
  /** Short name for logs, e.g. "static" or "kubernetes". */
  readonly name: string;
  /** The current full set. */
  routes(): readonly Route[];
  on(event: 'change', listener: (routes: readonly Route[]) => void): this;
  off(event: 'change', listener: (routes: readonly Route[]) => void): this;
  /**
   * Hostname → id of the route that holds it by a record outside this process
   * (a Service's `burrow.dev/holds`): a replica that starts, or another one,
   * then gives a name two routes ask for to the same route as the others did. An id not in
   * the set reserves the name: its route is out for a while (its Service edited into an
   * invalid route) and gets it back when it returns; no other route is given it meanwhile.
   */
  holders?(): ReadonlyMap<string, string>;
}

/** A route source whose set only changes when `update` is called. */
export class StaticRouteSource extends EventEmitter<RouteSourceEvents> implements RouteSource {
  readonly name: string;
  #routes: readonly Route[];

  constructor(routes: readonly Route[], name = 'static') {
    super();
    this.name = name;
    this.#routes = [...routes];
  }

  routes(): readonly Route[] {
    return this.#routes;
  }

  /** Replaces the set and tells listeners. */
  update(routes: readonly Route[]): void {
    this.#routes = [...routes];
    this.emit('change', this.#routes);
  }
}

export function isRouteSource(value: unknown): value is RouteSource {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as RouteSource).routes === 'function' &&
    typeof (value as RouteSource).on === 'function'
  );
}
