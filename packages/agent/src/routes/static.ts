/**
 * Static routes from `--expose HOST[,HOST…]=URL` and `--expose PORT[,PORT…]=tcp://HOST:PORT`
 * flags. Each flag is one route whose id is derived from its first hostname
 * (or port), so the id is the same on every restart and every replica.
 */
import { ConfigError, checkHostPattern, portNumber } from '@burrow/shared';
import type { Route } from './source.js';
import { checkTarget, isTcp, routeIdFor, stableRouteId } from './validate.js';

/** Prefix of ids of routes given by flags or a routes file. */
export const STATIC_ID_PREFIX = 'static';

/** The id of a TCP route from flags or a file: `static:tcp-FIRST-PORT`. */
export function tcpRouteId(ports: readonly number[]): string {
  return stableRouteId(STATIC_ID_PREFIX, `tcp-${ports[0] ?? ''}`);
}

/**
 * Parses one `--expose` value. Throws ConfigError quoting the flag value and
 * saying what is wrong with it.
 */
export function parseExpose(text: string): Route {
  const where = `--expose "${text}"`;
  const eq = text.indexOf('=');
  if (eq === -1) {
    throw new ConfigError(`${where}: expected HOST=URL, e.g. --expose app.example.com=http://127.0.0.1:3000`);
  }
  const names = text
    .slice(0, eq)
    .split(',')
    .map((h) => h.trim())
    .filter(Boolean);
  const targetText = text.slice(eq + 1).trim();
  if (isTcp({ target: targetText })) return parseTcpExpose(where, names, targetText);
  const hostnames = names;
  if (hostnames.length === 0) throw new ConfigError(`${where}: no hostname before "="`);
  for (const h of hostnames) {
    if (/^\d+$/.test(h)) {
      throw new ConfigError(
        `${where}: "${h}" is a port, not a hostname; a TCP service takes a tcp:// target, e.g. --expose ${h}=tcp://127.0.0.1:${h}`,
      );
    }
    const problem = checkHostPattern(h);
    if (problem) throw new ConfigError(`${where}: ${problem}`);
  }
  const target = checkTarget(targetText);
  if ('error' in target) throw new ConfigError(`${where}: target ${target.error}`);
  return { id: routeIdFor(STATIC_ID_PREFIX, hostnames), hostnames, target: target.origin };
}

/** `--expose 5432=tcp://10.0.0.7:5432`: public ports on the relay before "=". */
function parseTcpExpose(where: string, names: readonly string[], targetText: string): Route {
  if (names.length === 0) {
    throw new ConfigError(`${where}: no port before "="; e.g. --expose 5432=tcp://127.0.0.1:5432`);
  }
  const ports = names.map((p) => {
    const port = portNumber(p);
    if (Number.isNaN(port)) {
      throw new ConfigError(
        `${where}: "${p}" is not a port; a tcp:// target is exposed on public ports of the relay, e.g. --expose 5432=tcp://127.0.0.1:5432`,
      );
    }
    return port;
  });
  const target = checkTarget(targetText);
  if ('error' in target) throw new ConfigError(`${where}: target ${target.error}`);
  return { id: tcpRouteId(ports), hostnames: [], ports, target: target.origin };
}

/**
 * Parses every `--expose` value. An environment variable holds the list
 * comma-separated, which also separates hostnames, so there (`glued`) a piece
 * without "=" is glued to the next one: `a.example.com,b.example.com=http://x`
 * is one route. Each flag is a route of its own: one without "=" is an error,
 * never the first hostname of the next flag's route.
 */
export function parseExposeList(values: readonly string[], glued = true): Route[] {
  const routes: Route[] = [];
  let pending: string[] = [];
  for (const value of values) {
    if (!value.includes('=') && glued) {
      pending.push(value);
      continue;
    }
    routes.push(parseExpose([...pending, value].join(',')));
    pending = [];
  }
  if (pending.length > 0) parseExpose(pending.join(',')); // throws: no "=" in it
  return routes;
}
