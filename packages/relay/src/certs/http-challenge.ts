import type { ClientRequest, ClientResponse } from '../proxy/forward.js';

/** Where ACME HTTP-01 validation looks (RFC 8555 §8.3). */
export const CHALLENGE_PREFIX = '/.well-known/acme-challenge/';
/** Tokens are base64url (RFC 8555 §8.1); anything else is not ours. */
const TOKEN = /^[A-Za-z0-9_-]{1,256}$/;

/**
 * Serves a pending HTTP-01 key authorization on the plain HTTP listener,
 * whatever the Host (the CA asks by the name being validated, which routes to
 * an agent otherwise). Returns false when the request is not a challenge.
 */
export function serveHttpChallenge(
  req: ClientRequest,
  res: ClientResponse,
  keyAuthorization: (token: string) => string | undefined,
): boolean {
  const url = req.url ?? '';
  if (!url.startsWith(CHALLENGE_PREFIX)) return false;
  const token = url.slice(CHALLENGE_PREFIX.length);
  const answer = TOKEN.test(token) ? keyAuthorization(token) : undefined;
  // A token the relay did not issue is routed like any other request: the
  // backend may run its own ACME client.
  if (answer === undefined) return false;
  req.resume();
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(answer) });
  res.end(answer);
  return true;
}
