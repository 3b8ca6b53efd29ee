/**
 * Header handling shared by the relay (client side) and the agent (backend
 * side): hop-by-hop removal as RFC 9110 §7.6.1 requires of intermediaries.
 */

/**
 * Largest response head taken from a backend, bytes: the relay's HTTP/1.1
 * fast path and the agent's HTTP clients (whose default, 16 KiB, would refuse
 * a few large cookies that the fast path passes) apply the same limit.
 */
export const MAX_RESPONSE_HEAD = 256 * 1024;

/** Connection-specific fields that never cross a proxy. */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  // HTTP/1.1's upgrade to HTTP/2 carries it for the one connection (RFC 7540 §3.2.1).
  'http2-settings',
]);

export type HeaderPairs = Array<[string, string]>;

/** Turns Node's flat rawHeaders array into [name, value] pairs. */
export function pairsFromRaw(raw: readonly string[]): HeaderPairs {
  const out: HeaderPairs = [];
  for (let i = 0; i + 1 < raw.length; i += 2) out.push([raw[i]!, raw[i + 1]!]);
  return out;
}

/** Flattens pairs back to Node's raw form (accepted by writeHead and http.request). */
export function rawFromPairs(pairs: HeaderPairs): string[] {
  const out: string[] = [];
  for (const [k, v] of pairs) out.push(k, v);
  return out;
}

/**
 * Removes hop-by-hop fields and every field named in Connection. With
 * `keepUpgrade`, `Upgrade` and `Connection: upgrade` survive (the request is
 * being tunnelled as an upgrade end to end).
 */
export function stripHopByHop(pairs: HeaderPairs, keepUpgrade = false): HeaderPairs {
  const named = new Set<string>();
  for (const [k, v] of pairs) {
    if (k.toLowerCase() === 'connection') {
      for (const token of v.split(',')) named.add(token.trim().toLowerCase());
    }
  }
  const out: HeaderPairs = [];
  for (const pair of pairs) {
    const name = pair[0].toLowerCase();
    if (keepUpgrade && name === 'upgrade') {
      out.push(pair);
      continue;
    }
    if (HOP_BY_HOP.has(name) || named.has(name)) continue;
    out.push(pair);
  }
  if (keepUpgrade) out.push(['Connection', 'upgrade']);
  return out;
}
