import type { IncomingMessage } from 'node:http';
import { normalizeHost } from '@burrow/shared';
import type { ProxyFailure } from './errors.js';

/** Largest request head (request line and headers) the relay forwards, bytes. */
export const MAX_REQUEST_HEAD = 16 * 1024;
/** Most request headers the relay forwards. */
export const MAX_REQUEST_HEADERS = 500;

/**
 * Fields that say who the client is, or how it connected, as a proxy would.
 * A client's own are dropped, whatever the path: the relay is the trust
 * boundary, and sets the first five itself. The others are what some
 * frameworks read instead (Rack takes `X-Forwarded-Ssl: on` for HTTPS, Rails
 * reads Client-IP, Spring and Symfony build URLs on X-Forwarded-Prefix).
 */
export const FORWARDING_FIELDS: readonly string[] = [
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'forwarded',
  'x-real-ip',
  'x-forwarded-port',
  'x-forwarded-ssl',
  'x-forwarded-scheme',
  'x-forwarded-protocol',
  'x-forwarded-prefix',
  'x-url-scheme',
  'front-end-https',
  'x-client-ip',
  'client-ip',
  'x-cluster-client-ip',
  'true-client-ip',
];
const FORWARDING = new Set(FORWARDING_FIELDS);

/**
 * Whether `lower`, a lower-case field name, is one of FORWARDING_FIELDS, also
 * spelled with underscores: CGI-style servers (Rack, PHP, WSGI) read
 * `X_Real_IP` as HTTP_X_REAL_IP, the same variable as X-Real-IP.
 */
export function isForwardingField(lower: string): boolean {
  return FORWARDING.has(lower) || (lower.includes('_') && FORWARDING.has(lower.replaceAll('_', '-')));
}

/** A header field name (RFC 9110 §5.6.2 token). */
export const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

export const HEAD_TOO_LARGE: Readonly<ProxyFailure> = {
  status: 431,
  code: 'head_too_large',
  message: 'The request headers are too large.',
};
const MULTIPLE_HOSTS: ProxyFailure = {
  status: 400,
  code: 'multiple_hosts',
  message: 'The request has more than one Host header.',
};
export const HOST_MISMATCH: Readonly<ProxyFailure> = {
  status: 400,
  code: 'host_mismatch',
  message: 'The request target names a different host than the Host header.',
};
/** `*` as the target of anything but OPTIONS (RFC 9112 §3.2.4), which a backend might take for a path. */
const ASTERISK_NOT_OPTIONS: Readonly<ProxyFailure> = {
  status: 400,
  code: 'malformed_request',
  message: 'Only an OPTIONS request may have * as its target.',
};
/** CONNECT (HTTP/1.1, or HTTP/2's RFC 9113 §8.5): asks for a tunnel to any address. */
export const CONNECT_UNSUPPORTED: ProxyFailure = {
  status: 501,
  code: 'connect_method',
  message: 'CONNECT is not supported: this relay serves its hostnames, it is not a forward proxy.',
};
/** Also the answer to a chunked body the parser finds malformed once the request has started. */
export const BAD_FRAMING: Readonly<ProxyFailure> = {
  status: 400,
  code: 'bad_framing',
  message: 'The request body framing is invalid or ambiguous.',
};

/**
 * Checks a parsed request before it may go to an agent: what Node's parser
 * lets through but a backend could read differently from the relay. One pass
 * over the raw headers (this runs for every request):
 * - Size. Node's parser checks the head size per batch of headers, so many
 *   small headers can add up past maxHeaderSize, and past maxHeadersCount it
 *   drops the rest silently. Neither may pass on: a dropped header changes
 *   the request.
 * - Host. A request that names its host twice, differently, is refused: the
 *   relay routes by one name and the backend might act on the other (RFC 9112
 *   §3.2: more than one Host is a 400; an absolute-form target overrides Host).
 * - Framing. Node hands a request over as soon as its head is read and may
 *   only find its framing invalid in the body (a Transfer-Encoding not ending
 *   in chunked, a name with a space before the colon). Such a request must not
 *   start at a backend: anything but one plain framing is refused (RFC 9112 §6.1).
 */
export function invalidRequest(req: IncomingMessage, host: string): ProxyFailure | undefined {
  const raw = req.rawHeaders;
  if (raw.length / 2 >= MAX_REQUEST_HEADERS) return HEAD_TOO_LARGE;
  let size = (req.method?.length ?? 0) + (req.url?.length ?? 0) + 12;
  let hosts = 0;
  let badFraming = false;
  let te: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    size += name.length + value.length + 4;
    if (!TOKEN.test(name)) badFraming = true;
    // Only names of the right length are worth lower-casing.
    if (name.length === 4 && name.toLowerCase() === 'host') hosts++;
    else if (name.length === 17 && name.toLowerCase() === 'transfer-encoding') {
      if (te !== undefined) badFraming = true;
      te = value;
    }
  }
  if (size > MAX_REQUEST_HEAD) return HEAD_TOO_LARGE;
  if (hosts > 1) return MULTIPLE_HOSTS;
  const target = req.url ?? '';
  if (target === '*' && req.method !== 'OPTIONS') return ASTERISK_NOT_OPTIONS;
  // Without Host there is nothing to compare: the router refuses it as no_host (RFC 9112 §3.2).
  if (hosts === 1 && !target.startsWith('/') && target !== '*' && req.method !== 'CONNECT') {
    let authority = '';
    try {
      authority = normalizeHost(new URL(target).host);
    } catch {}
    if (authority !== host) return HOST_MISMATCH;
  }
  if (badFraming) return BAD_FRAMING;
  // Node has taken the spaces and tabs around the value; String.prototype.trim would take more
  // ("\xa0chunked" is not chunked to llhttp, which would then wait for a body it cannot frame).
  if (te !== undefined && (te.toLowerCase() !== 'chunked' || req.headers['content-length'] !== undefined))
    return BAD_FRAMING;
  return undefined;
}
