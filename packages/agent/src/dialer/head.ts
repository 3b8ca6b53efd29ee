/**
 * What every kind of backend exchange shares: whether the request carries a
 * body, and the response head as the relay accepts it.
 */
import type { HttpOpen, ResponseHead } from '@burrow/shared';

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
