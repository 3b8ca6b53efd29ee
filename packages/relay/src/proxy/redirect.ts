import { normalizeHost } from '@burrow/shared';
import { type ClientRequest, type ClientResponse, requestHost } from './forward.js';

/**
 * Answers a plain-HTTP request with a redirect to the same URL over HTTPS.
 * GET and HEAD get 301 (cacheable, what browsers expect); other methods get
 * 308 so the method and body survive the redirect.
 */
export function redirectToHttps(req: ClientRequest, res: ClientResponse, httpsPort: number): void {
  const host = normalizeHost(requestHost(req));
  const port = httpsPort === 443 ? '' : `:${httpsPort}`;
  const location = `https://${host}${port}${originForm(req.url)}`;
  const status = req.method === 'GET' || req.method === 'HEAD' ? 301 : 308;
  req.resume();
  res.writeHead(status, {
    location,
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(`${location}\n`),
  });
  if (req.method === 'HEAD') res.end();
  else res.end(`${location}\n`);
}

/** The path and query of a request target, also from the absolute form (RFC 9112 §3.2.2). */
function originForm(target: string | undefined): string {
  if (!target || target === '*') return '/';
  if (target.startsWith('/')) return target;
  try {
    const url = new URL(target);
    return `${url.pathname}${url.search}`;
  } catch {
    return '/';
  }
}
