/**
 * Route checks shared by every source: flags and YAML turn a failure into a
 * ConfigError naming the field; the agent drops an invalid route from a
 * dynamic source with a warning, because one bad route in an announcement
 * would make the relay close the whole tunnel.
 */
import { createHash } from 'node:crypto';
import {
  type AnnouncedPort,
  type AnnouncedRoute,
  announcedPortSchema,
  announcedRouteSchema,
  ConfigError,
  checkHostPattern,
  MAX_ALLOW_CIDRS,
  MAX_ANNOUNCED_ROUTES,
  parseCidr,
} from '@burrow/shared';
import type { Route } from './source.js';

const ROUTE_ID = /^[A-Za-z0-9._:/-]{1,128}$/;

/**
 * Target scheme of a TLS passthrough route: the relay routes the client's TLS
 * connection by SNI without decrypting it, and the agent splices it to this
 * address. The backend terminates TLS with its own certificate.
 */
export const PASSTHROUGH_SCHEME = 'tls-passthrough:';

/** True when a route passes TLS through instead of carrying HTTP. */
export function isPassthrough(route: Pick<Route, 'target'>): boolean {
  return route.target.startsWith(PASSTHROUGH_SCHEME);
}

/**
 * Target scheme of a TCP route: the relay splices each connection to one of
 * the route's public ports to this address, bytes untouched.
 */
export const TCP_SCHEME = 'tcp:';

/**
 * Target scheme of a backend that speaks HTTP/2 without TLS (prior knowledge,
 * as gRPC servers do): the agent sends each request as an HTTP/2 stream and
 * passes response trailers back.
 */
export const H2C_SCHEME = 'h2c:';

/** True when a route's backend speaks HTTP/2 without TLS. */
export function isH2c(route: Pick<Route, 'target'>): boolean {
  return /^h2c:/i.test(route.target);
}

/** Most public ports one route claims. */
export const MAX_ROUTE_PORTS = 16;

/** True when a route carries connections to public TCP ports (the scheme in any case, as URLs take it). */
export function isTcp(route: Pick<Route, 'target'>): boolean {
  return /^tcp:/i.test(route.target);
}

/** How a public TCP port is named where ports and hostnames are held alike: `tcp:PORT` (never a hostname). */
export function portName(port: number): string {
  return `tcp:${port}`;
}

/** What a route claims at the relay: its hostnames and its ports, as names. */
export function claimedNames(route: Pick<Route, 'hostnames' | 'ports'>): string[] {
  return route.ports?.length ? [...route.hostnames, ...route.ports.map(portName)] : route.hostnames;
}

/** True when the relay opens raw byte streams (`tcp`) for the route: TLS passthrough and TCP ports. */
export function takesRawStreams(route: Pick<Route, 'target'>): boolean {
  return isPassthrough(route) || isTcp(route);
}

/**
 * Checks a backend target; returns the normalised origin or an error message
 * phrased to follow the field name ("target: must be …").
 */
export function checkTarget(text: string): { origin: string } | { error: string } {
  const expected = `must be an http://, https://, ${H2C_SCHEME}//, ${PASSTHROUGH_SCHEME}// or ${TCP_SCHEME}// URL (got "${text}")`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return { error: expected };
  }
  // Port 0 cannot be dialled (it would quietly become the scheme's default).
  if (url.port === '0') return { error: `must name a port from 1 to 65535 (got "${text}")` };
  if (url.protocol === PASSTHROUGH_SCHEME || url.protocol === TCP_SCHEME || url.protocol === H2C_SCHEME) {
    // Not special schemes for WHATWG URLs: no default port, no origin, so check by hand.
    const scheme = url.protocol;
    if (url.username || url.password) return { error: `must not contain credentials` };
    if (!url.hostname || !url.port) {
      const examples: Record<string, string> = {
        [TCP_SCHEME]: '10.0.0.7:5432',
        [H2C_SCHEME]: '10.0.0.7:50051',
      };
      const example = examples[scheme] ?? '10.0.0.7:8443';
      return { error: `must name a host and port, e.g. ${scheme}//${example} (got "${text}")` };
    }
    if ((url.pathname !== '' && url.pathname !== '/') || url.search || url.hash) {
      return { error: `must be ${scheme}//HOST:PORT without a path (got "${text}")` };
    }
    return { origin: `${scheme}//${url.host.toLowerCase()}` };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    return { error: expected };
  }
  if (url.username || url.password) return { error: `must not contain credentials` };
  if (url.pathname !== '/' || url.search || url.hash) {
    return {
      error: `must be an origin such as http://10.0.0.7:8080, without a path (got "${text}"); the client's path is passed through`,
    };
  }
  if (!url.hostname) return { error: `must name a host (got "${text}")` };
  return { origin: url.origin };
}

/**
 * `PREFIX:readable` when that is a valid route id, else `PREFIX:` and 16 hex
 * digits of sha256(`hashed`): stable across restarts either way.
 */
export function stableRouteId(prefix: string, readable: string, hashed = readable): string {
  const id = `${prefix}:${readable}`;
  if (ROUTE_ID.test(id)) return id;
  return `${prefix}:${createHash('sha256').update(hashed).digest('hex').slice(0, 16)}`;
}

/** Deterministic route id for a hostname list: `PREFIX:first-hostname` (ids may not contain `*`). */
export function routeIdFor(prefix: string, hostnames: readonly string[]): string {
  return stableRouteId(prefix, (hostnames[0] ?? '').replace(/\*/g, '_'), hostnames.join(','));
}

/** Why an empty `allowCidrs` is refused: it would read as "no one", and mean "everyone". */
export const EMPTY_ALLOWLIST = 'must list at least one CIDR (leave allowCidrs out to admit every client)';

/** Returns `[field, message]` for the first problem with a route, or undefined. Fields are relative ("target"). */
export function checkRoute(route: Route): [string, string] | undefined {
  if (typeof route.id !== 'string' || !ROUTE_ID.test(route.id)) {
    return ['id', 'must be 1 to 128 letters, digits or . _ : / -'];
  }
  const tcp = typeof route.target === 'string' && isTcp(route);
  if (tcp) {
    const problem = checkPorts(route);
    if (problem) return problem;
  } else if (route.ports !== undefined) {
    return ['ports', `apply to ${TCP_SCHEME}// targets only; other routes are reached by hostname`];
  }
  if (!Array.isArray(route.hostnames) || (route.hostnames.length === 0 && !tcp)) {
    return ['hostnames', 'must list at least one hostname'];
  }
  if (tcp && route.hostnames.length > 0) {
    return ['hostnames', `a ${TCP_SCHEME}// route is reached by its ports, not by hostname; list none`];
  }
  if (route.hostnames.length > 64) return ['hostnames', 'at most 64 hostnames per route'];
  for (const [i, h] of route.hostnames.entries()) {
    const problem = typeof h === 'string' ? checkHostPattern(h) : 'must be a string';
    if (problem) return [`hostnames[${i}]`, problem];
  }
  const target = checkTarget(String(route.target));
  if ('error' in target) return ['target', target.error];
  if (route.allowCidrs?.length === 0) return ['allowCidrs', EMPTY_ALLOWLIST];
  if ((route.allowCidrs?.length ?? 0) > MAX_ALLOW_CIDRS)
    return [
      'allowCidrs',
      `lists ${route.allowCidrs!.length} ranges, more than the ${MAX_ALLOW_CIDRS} one route may have`,
    ];
  for (const [i, c] of (route.allowCidrs ?? []).entries()) {
    const parsed = parseCidr(String(c));
    if (typeof parsed === 'string') return [`allowCidrs[${i}]`, parsed];
  }
  if (route.tlsInsecure !== undefined && typeof route.tlsInsecure !== 'boolean') {
    return ['tlsInsecure', 'must be true or false'];
  }
  if (route.tlsInsecure && !String(route.target).startsWith('https:')) {
    return ['tlsInsecure', 'applies to https:// targets only'];
  }
  // Whatever passed the checks above must also pass the wire schema the relay enforces.
  const wire = tcp
    ? announcedPortSchema.array().safeParse(toAnnouncedPorts(route))
    : announcedRouteSchema.safeParse(toAnnounced(route));
  if (!wire.success) return [wire.error.issues[0]?.path.join('.') ?? 'route', wire.error.issues[0]!.message];
  return undefined;
}

/** The problem with a TCP route's `ports`, or undefined. */
function checkPorts(route: Route): [string, string] | undefined {
  const ports: unknown = route.ports;
  if (!Array.isArray(ports) || ports.length === 0) {
    return ['ports', 'a tcp:// route must list at least one public port on the relay'];
  }
  if (ports.length > MAX_ROUTE_PORTS) return ['ports', `at most ${MAX_ROUTE_PORTS} ports per route`];
  for (const [i, p] of ports.entries()) {
    if (!Number.isInteger(p) || p < 1 || p > 65535) {
      return [`ports[${i}]`, `must be a port number from 1 to 65535 (got ${JSON.stringify(p)})`];
    }
    if (ports.indexOf(p) !== i) return [`ports[${i}]`, `port ${p} is listed twice`];
  }
  return undefined;
}

/** The normalised copy of a valid route (target reduced to its origin). */
export function normalizeRoute(route: Route): Route {
  const target = checkTarget(route.target);
  return {
    id: route.id,
    hostnames: [...route.hostnames],
    ...(route.ports ? { ports: [...route.ports] } : {}),
    target: 'origin' in target ? target.origin : route.target,
    ...(route.allowCidrs?.length ? { allowCidrs: [...route.allowCidrs] } : {}),
    ...(route.tlsInsecure ? { tlsInsecure: true } : {}),
  };
}

/** The ports of a TCP route as the relay sees them: one entry per port, with the route's allowlist. */
export function toAnnouncedPorts(route: Route): AnnouncedPort[] {
  return (route.ports ?? []).map((port) => ({
    id: route.id,
    port,
    ...(route.allowCidrs?.length ? { allowCidrs: route.allowCidrs } : {}),
  }));
}

/** The part of a hostname route the relay sees. Targets never leave the agent. */
export function toAnnounced(route: Route): AnnouncedRoute {
  return {
    id: route.id,
    hostnames: route.hostnames,
    ...(route.allowCidrs?.length ? { allowCidrs: route.allowCidrs } : {}),
    ...(isPassthrough(route) ? { protocol: 'tls-passthrough' as const } : {}),
    ...(isH2c(route) ? { backend: 'h2c' } : {}),
  };
}

/**
 * Checks a whole route set: every route valid, ids unique, no hostname in two
 * routes. Throws ConfigError naming the route (`label(i)`, by default
 * `routes[i]`) and the field; returns normalised routes.
 */
export function validateRoutes(
  routes: readonly Route[],
  label: (index: number) => string = (i) => `routes[${i}]`,
): Route[] {
  if (routes.length > MAX_ANNOUNCED_ROUTES) {
    throw new ConfigError(
      `at most ${MAX_ANNOUNCED_ROUTES} routes, the most one announcement carries (got ${routes.length})`,
    );
  }
  const ids = new Map<string, number>();
  const names = new Map<string, number>();
  const ports = new Map<number, number>();
  return routes.map((route, i) => {
    const problem = checkRoute(route);
    if (problem) throw new ConfigError(`${label(i)}.${problem[0]}: ${problem[1]}`);
    for (const p of route.ports ?? []) {
      const seen = ports.get(p);
      if (seen !== undefined) {
        throw new ConfigError(`${label(i)}: port ${p} is already exposed by ${label(seen)}`);
      }
      ports.set(p, i);
    }
    for (const h of route.hostnames) {
      const seen = names.get(h);
      if (seen === i) throw new ConfigError(`${label(i)}: hostname "${h}" is listed twice`);
      if (seen !== undefined) {
        throw new ConfigError(
          `${label(i)}: hostname "${h}" is already exposed by ${label(seen)}; a hostname may appear in one route only`,
        );
      }
      names.set(h, i);
    }
    // After hostnames: derived ids collide exactly when first hostnames do, and that message says more.
    const seenId = ids.get(route.id);
    if (seenId !== undefined) {
      throw new ConfigError(`${label(i)}: route id "${route.id}" is already used by ${label(seenId)}`);
    }
    ids.set(route.id, i);
    return normalizeRoute(route);
  });
}
