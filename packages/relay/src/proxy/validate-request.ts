import type { IncomingMessage } from 'node:http';
import { normalizeHost } from '@burrow/shared';
import type { ProxyFailure } from './errors.js';

/** Largest request head (request line and headers) the relay forwards, bytes. */
export const MAX_REQUEST_HEAD = 16 * 1024;
/** Most request headers the relay forwards. */
export const MAX_REQUEST_HEADERS = 500;

/**
 * Node's parser checks the head size per batch of headers, so many small
 * headers can add up past maxHeaderSize, and past maxHeadersCount it drops
 * the rest silently. Neither may pass on: a dropped header changes the request.
 */
function headTooLarge(req: IncomingMessage): boolean {
  if (req.rawHeaders.length / 2 >= MAX_REQUEST_HEADERS) return true;
  let size = (req.method?.length ?? 0) + (req.url?.length ?? 0) + 12;
  for (const field of req.rawHeaders) size += field.length + 2;
  return size > MAX_REQUEST_HEAD;
}

/**
 * Requests that name their host twice, differently, are refused: the relay
 * routes by one name and the backend might act on the other (RFC 9112 §3.2:
 * more than one Host is a 400; an absolute-form target overrides Host).
 */
function ambiguousTarget(req: IncomingMessage, host: string): { code: string; message: string } | undefined {
  let hosts = 0;
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    if (req.rawHeaders[i]!.toLowerCase() === 'host') hosts++;
  }
  if (hosts > 1) return { code: 'multiple_hosts', message: 'The request has more than one Host header.' };
  const target = req.url ?? '';
  if (!target.startsWith('/') && target !== '*' && req.method !== 'CONNECT') {
    let authority = '';
    try {
      authority = normalizeHost(new URL(target).host);
    } catch {}
    if (authority !== host)
      return {
        code: 'host_mismatch',
        message: 'The request target names a different host than the Host header.',
      };
  }
  return undefined;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/**
 * Node's parser hands over a request as soon as its head is read and may only
 * find its framing invalid in the body (a Transfer-Encoding not ending in
 * chunked, a name with a space before the colon). Such a request must not
 * start at a backend: refuse anything but one plain framing (RFC 9112 §6.1).
 */
function ambiguousFraming(req: IncomingMessage): { code: string; message: string } | undefined {
  const bad = { code: 'bad_framing', message: 'The request body framing is invalid or ambiguous.' };
  let te: string | undefined;
  for (let i = 0; i < req.rawHeaders.length; i += 2) {
    const name = req.rawHeaders[i]!;
    if (!TOKEN.test(name)) return bad;
    if (name.toLowerCase() === 'transfer-encoding') {
      if (te !== undefined) return bad;
      te = req.rawHeaders[i + 1]!;
    }
  }
  if (te === undefined) return undefined;
  if (te.trim().toLowerCase() !== 'chunked' || req.headers['content-length'] !== undefined) return bad;
  return undefined;
}

/**
 * Checks a parsed request before it may go to an agent: what Node's parser
 * lets through but a backend could read differently from the relay.
 */
export function invalidRequest(req: IncomingMessage, host: string): ProxyFailure | undefined {
  if (headTooLarge(req)) {
    return { status: 431, code: 'head_too_large', message: 'The request headers are too large.' };
  }
  const ambiguous = ambiguousTarget(req, host) ?? ambiguousFraming(req);
  return ambiguous ? { status: 400, ...ambiguous } : undefined;
}
