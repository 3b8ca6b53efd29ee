/**
 * Static routes from `--expose HOST[,HOST…]=URL` flags. Each flag is one
 * route whose id is derived from its first hostname, so the id is the same on
 * every restart and every replica.
 */
import { ConfigError, checkHostPattern } from '@burrow/shared';
import type { Route } from './source.js';
import { checkTarget, routeIdFor } from './validate.js';

/** Prefix of ids of routes given by flags or a routes file. */
export const STATIC_ID_PREFIX = 'static';

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
  const hostnames = text
    .slice(0, eq)
    .split(',')
    .map((h) => h.trim())
    .filter(Boolean);
  if (hostnames.length === 0) throw new ConfigError(`${where}: no hostname before "="`);
  for (const h of hostnames) {
    const problem = checkHostPattern(h);
    if (problem) throw new ConfigError(`${where}: ${problem}`);
  }
  const target = checkTarget(text.slice(eq + 1).trim());
  if ('error' in target) throw new ConfigError(`${where}: target ${target.error}`);
  return { id: routeIdFor(STATIC_ID_PREFIX, hostnames), hostnames, target: target.origin };
}

/**
 * Parses every `--expose` value. An environment variable holds the list
 * comma-separated, which also separates hostnames, so a piece without "="
 * is glued to the next one: `a.example.com,b.example.com=http://x` is one route.
 */
export function parseExposeList(values: readonly string[]): Route[] {
  const routes: Route[] = [];
  let pending: string[] = [];
  for (const value of values) {
    if (!value.includes('=')) {
      pending.push(value);
      continue;
    }
    routes.push(parseExpose([...pending, value].join(',')));
    pending = [];
  }
  if (pending.length > 0) parseExpose(pending.join(',')); // throws: no "=" in it
  return routes;
}
