/**
 * Which Service holds a contested hostname, recorded on the Service itself so
 * that every replica, and a replica that starts later, decides alike.
 *
 * The agent that writes back a Service's status also writes `burrow.dev/holds`:
 * the hostnames the Service's route holds and a MAC over them and the route id,
 * keyed from the agent's token. Anyone who may edit a Service can copy that
 * value, but not make one that verifies for another route: a copied record
 * names the wrong route id, and without the token no MAC can be made. So a
 * name stays with the Service that held it across restarts and rolling
 * updates, and a tenant annotating an older Service cannot take it.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/** The key for holder records, from the agent's token (every replica has the same). */
export function holdsKey(token: string): Buffer {
  return createHash('sha256').update('burrow.dev/holds key\n').update(token).digest();
}

function mac(key: Buffer, routeId: string, names: string): Buffer {
  return createHmac('sha256', key).update(`burrow.dev/holds v1\n${routeId}\n${names}`).digest();
}

/** The annotation value for `routeId` holding `hostnames` ("a.example.com,b.example.com;MAC"). */
export function holdsRecord(key: Buffer, routeId: string, hostnames: readonly string[]): string {
  const names = [...hostnames].sort().join(',');
  return `${names};${mac(key, routeId, names).toString('base64url')}`;
}

/** The hostnames a record says `routeId` holds; none when it does not verify for that route. */
export function verifiedHolds(key: Buffer, routeId: string, record: string | undefined): string[] {
  if (!record || record.length > 16 * 1024) return [];
  const cut = record.lastIndexOf(';');
  if (cut <= 0) return [];
  const names = record.slice(0, cut);
  const given = Buffer.from(record.slice(cut + 1), 'base64url');
  const expected = mac(key, routeId, names);
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return [];
  return names.split(',');
}
