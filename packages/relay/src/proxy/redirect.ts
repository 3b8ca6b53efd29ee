import { normalizeHost } from '@burrow/shared';
import { type ClientRequest, type ClientResponse, originForm, requestHost } from './forward.js';

/**
 * Answers a plain-HTTP request with a redirect to the same URL over HTTPS.
 * GET and HEAD get 301 (cacheable, what browsers expect); other methods get
 * 308 so the method and body survive the redirect.
 */
export function redirectToHttps(req: ClientRequest, res: ClientResponse, httpsPort: number): void {
  const host = normalizeHost(requestHost(req));
  const port = httpsPort === 443 ? '' : `:${httpsPort}`;
  const path = originForm(req.url ?? '/');
  const location = `https://${host}${port}${path.startsWith('/') ? path : '/'}`;
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
