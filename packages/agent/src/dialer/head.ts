/**
 * What every kind of backend exchange shares: whether the request carries a
 * body, and the response head as the relay accepts it.
 */
import type { HeaderPairs, HttpOpen, ResponseHead } from '@burrow/shared';

/** Methods without a body unless the request says otherwise (as node:http assumes). */
const BODILESS = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS', 'TRACE']);

/** Whether DATA on the stream is a request body (see `body` in docs/protocol.md §11). */
export function hasBody(meta: HttpOpen): boolean {
  if (meta.body !== undefined) return meta.body;
  // From a relay that predates the field:
  const length = meta.headers.find(([k]) => k.toLowerCase() === 'content-length')?.[1];
  return length !== undefined ? length.trim() !== '0' : !BODILESS.has(meta.method);
}

/** Largest statusText the response head schema accepts. */
const MAX_STATUS_TEXT = 512;

/** Header count the response head schema accepts. */
const MAX_HEADERS = 512;

/** The response head for the relay, or why the backend's cannot pass. */
export function headFrom(
  status: number,
  statusText: string | undefined,
  pairs: Array<[string, string]>,
): ResponseHead | string {
  if (pairs.length > MAX_HEADERS)
    return `backend sent ${pairs.length} response headers; at most ${MAX_HEADERS} pass`;
  return {
    status,
    ...(statusText ? { statusText: statusText.slice(0, MAX_STATUS_TEXT) } : {}),
    headers: pairs,
  };
}

/**
 * The one Transfer-Encoding passed on: `chunked`, once (RFC 9112 §6.1), with
 * no tab after it. The HTTP/1.1 parser that read the response takes `chunked`
 * followed by a tab for an unknown coding and reads the body up to the
 * connection's close: the chunk framing would reach the client as content.
 */
const CHUNKED_ONLY = /^[ \t]*chunked *$/i;

/**
 * Why a response with these fields (as the backend sent them, hop-by-hop ones
 * included) cannot be passed on, or undefined. HTTP/1.1 clients on the agent's
 * side undo `chunked` only: any other transfer coding (gzip, say) would reach
 * the client as bytes it takes for the content, its marking stripped as
 * hop-by-hop. Every Transfer-Encoding line counts: codings may be split over
 * several (RFC 9110 §5.3).
 */
export function unsupportedCoding(pairs: HeaderPairs): string | undefined {
  let codings: string | undefined;
  for (const [name, value] of pairs) {
    if (name.length === 17 && name.toLowerCase() === 'transfer-encoding')
      codings = codings === undefined ? value : `${codings}, ${value}`;
  }
  if (codings === undefined) return undefined;
  return CHUNKED_ONLY.test(codings)
    ? undefined
    : `the backend sent Transfer-Encoding "${codings}"; only chunked, once, can be passed on`;
}
