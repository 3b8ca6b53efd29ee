/**
 * Which Service holds a contested hostname, recorded on the Service itself so
 * that every replica, and a replica that starts later, decides alike.
 *
 * The agent that writes back a Service's status also writes `burrow.dev/holds`:
 * the hostnames the Service's route holds, since when it has held exactly
 * those, and a MAC over them, that time and the route id, keyed from the
 * agent's token. Anyone who may edit a Service can copy that value, but not
 * make one that verifies for another route: a copied record names the wrong
 * route id, and without the token no MAC can be made. A record a tenant kept
 * from a time their Service held a name, and puts back once another Service
 * has it, verifies, but is older than the new holder's record, and the newer
 * record wins. So a name stays with the Service that holds it across restarts
 * and rolling updates, and a tenant annotating another Service cannot take it.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** The key for holder records, from the agent's token (every replica has the same). */
export function holdsKey(token: string): Buffer {
  return createHash('sha256').update('burrow.dev/holds key\n').update(token).digest();
}

/** What a verified record says: the names its route holds, and since when (ms since the epoch). */
export interface Holds {
  names: string[];
  since: number;
}

const NO_HOLDS: Holds = { names: [], since: 0 };
/** Largest record read; a Service's annotations are bounded by the API server anyway. */
const MAX_RECORD = 16 * 1024;

function mac(key: Buffer, routeId: string, since: number, names: string): Buffer {
  return createHmac('sha256', key).update(`burrow.dev/holds v2\n${routeId}\n${since}\n${names}`).digest();
}

/**
 * The annotation value for `routeId` holding `hostnames`
 * ("a.example.com,b.example.com;SINCE;MAC"). When `current` already verifies
 * for the same names it is returned as it is: the route has held them since
 * its time, and the Service is not written again. Otherwise `issued`, the
 * record this agent made for the route last, is returned when it verifies for
 * the same names: a Service that does not show it yet (the watch trails the
 * write, or another installation wrote over it) gets the same record again,
 * not a new one on every pass.
 */
export function holdsRecord(
  key: Buffer,
  routeId: string,
  hostnames: readonly string[],
  now: number,
  current?: string,
  issued?: string,
): string {
  const names = [...hostnames].sort().join(',');
  for (const record of [current, issued])
    if (verifiedHolds(key, routeId, record).names.join(',') === names) return record!;
  const since = Math.floor(now);
  return `${names};${since};${mac(key, routeId, since, names).toString('base64url')}`;
}

/** The hostnames a record says `routeId` holds, and since when; none when it does not verify for that route. */
export function verifiedHolds(key: Buffer, routeId: string, record: string | undefined): Holds {
  if (!record || record.length > MAX_RECORD) return NO_HOLDS;
  const [names, sinceText, given, ...rest] = record.split(';');
  if (!names || !sinceText || given === undefined || rest.length > 0 || !/^\d{1,15}$/.test(sinceText))
    return NO_HOLDS;
  const since = Number(sinceText);
  const givenMac = Buffer.from(given, 'base64url');
  const expected = mac(key, routeId, since, names);
  if (givenMac.length !== expected.length || !timingSafeEqual(givenMac, expected)) return NO_HOLDS;
  return { names: names.split(','), since };
}
