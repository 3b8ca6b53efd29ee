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

/**
 * A key for holder records, from a secret every replica has: the holds key
 * (--holds-key-file), else the agent's token. Records made with the token's
 * key stop verifying when the token is rotated; the holds key is kept apart
 * so that they do not.
 */
export function holdsKey(secret: string): Buffer {
  return createHash('sha256').update('burrow.dev/holds key\n').update(secret).digest();
}

/** What a verified record says: the names its route holds, and since when (ms since the epoch). */
export interface Holds {
  names: string[];
  since: number;
  /** Made with the first of the keys it was checked with, the one new records are made with. */
  current: boolean;
}

const NO_HOLDS: Holds = { names: [], since: 0, current: false };
/** Largest record read; a Service's annotations are bounded by the API server anyway. */
const MAX_RECORD = 16 * 1024;

function mac(key: Buffer, routeId: string, since: number, names: string): Buffer {
  return createHmac('sha256', key).update(`burrow.dev/holds v2\n${routeId}\n${since}\n${names}`).digest();
}

function signed(key: Buffer, routeId: string, since: number, names: string): string {
  return `${names};${since};${mac(key, routeId, since, names).toString('base64url')}`;
}

/**
 * The annotation value for `routeId` holding `hostnames`
 * ("a.example.com,b.example.com;SINCE;MAC"), made with `keys[0]`. When
 * `current` already verifies for the same names it is returned as it is: the
 * route has held them since its time, and the Service is not written again.
 * Otherwise `issued`, the record this agent made for the route last, is
 * returned when it verifies for the same names: a Service that does not show
 * it yet (the watch trails the write, or another installation wrote over it)
 * gets the same record again, not a new one on every pass. A record that
 * verifies with another of `keys` only is made again with the first, from the
 * same time: the route keeps its place when the key changes.
 */
export function holdsRecord(
  keys: readonly Buffer[],
  routeId: string,
  hostnames: readonly string[],
  now: number,
  current?: string,
  issued?: string,
): string {
  const names = [...hostnames].sort().join(',');
  for (const record of [current, issued]) {
    const held = verifiedHolds(keys, routeId, record);
    if (held.names.join(',') !== names) continue;
    return held.current ? record! : signed(keys[0]!, routeId, held.since, names);
  }
  return signed(keys[0]!, routeId, Math.floor(now), names);
}

/**
 * The hostnames a record says `routeId` holds, and since when; none when it
 * verifies with none of `keys` for that route.
 */
export function verifiedHolds(keys: readonly Buffer[], routeId: string, record: string | undefined): Holds {
  if (!record || record.length > MAX_RECORD) return NO_HOLDS;
  const [names, sinceText, given, ...rest] = record.split(';');
  if (!names || !sinceText || given === undefined || rest.length > 0 || !/^\d{1,15}$/.test(sinceText))
    return NO_HOLDS;
  const since = Number(sinceText);
  const givenMac = Buffer.from(given, 'base64url');
  const signer = keys.findIndex((key) => {
    const expected = mac(key, routeId, since, names);
    return givenMac.length === expected.length && timingSafeEqual(givenMac, expected);
  });
  if (signer < 0) return NO_HOLDS;
  return { names: names.split(','), since, current: signer === 0 };
}
