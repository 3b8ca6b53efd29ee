import { ConfigError } from '@burrow/shared';

/**
 * A URL as it may appear in an error or a log line: no user name or password,
 * no query or fragment (where a token might have been put), at most 200
 * characters.
 */
export function shownUrl(text: string): string {
  try {
    const url = new URL(text);
    if (!url.username && !url.password && !url.search && !url.hash) return text.slice(0, 200);
    const credentials = url.username || url.password ? '…@' : '';
    return `${url.protocol}//${credentials}${url.host}${url.pathname}${url.search || url.hash ? '?…' : ''}`.slice(
      0,
      200,
    );
  } catch {
    // Not a URL: whatever stands between "//" and "@" may still be a password.
    return text
      .replace(/\/\/.*@/, '//…@')
      .replace(/[?#].*$/, '?…')
      .slice(0, 200);
  }
}

/**
 * Checks the relay's tunnel URL (`what` names it in the error: "--relay", or
 * "relay URL" for the library): ws:// or wss://, a host, and nothing that
 * holds a secret. The token goes in the Authorization header, never the URL,
 * where the relay's and any proxy's access logs would keep it.
 */
export function checkRelayUrl(text: string, what = 'relay URL'): void {
  const must = `${what} must be ws://HOST:PORT or wss://HOST:PORT`;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(`${must} (got "${shownUrl(text)}")`);
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:') {
    const hint = url.protocol === 'https:' ? ' (use wss://)' : url.protocol === 'http:' ? ' (use ws://)' : '';
    throw new ConfigError(`${must}${hint} (got "${shownUrl(text)}")`);
  }
  if (!url.hostname) throw new ConfigError(`${must} (got "${shownUrl(text)}": no host)`);
  if (url.username || url.password)
    throw new ConfigError(`${what} must not contain credentials: the token goes in --token-file`);
  if (url.search || url.hash)
    throw new ConfigError(`${what} must not have a query or fragment (got "${shownUrl(text)}")`);
}
