import type { Http2SecureServer, Http2Server } from 'node:http2';

/**
 * Requests one HTTP/2 connection may have in progress at once. Each holds a
 * tunnel stream; without a bound, one client could take every stream an
 * agent's connection allows and shut out the other clients of its routes.
 * nginx allows 128, Envoy and HAProxy about 100.
 */
export const MAX_H2_STREAMS = 100;

/**
 * Node gives HTTP/2 sessions no deadlines, so a client could hold a session
 * open without ever completing a request. A session with no open stream gets
 * `headersTimeout` before its first request and `keepAliveTimeout` after its
 * last one; then it is closed with GOAWAY.
 */
export function boundSessions(
  server: Http2Server | Http2SecureServer,
  headersTimeout: number,
  keepAliveTimeout: number,
): void {
  server.on('session', (session) => {
    let open = 0;
    let served = false;
    const arm = () => session.setTimeout(served ? keepAliveTimeout : headersTimeout);
    arm();
    session.on('stream', (stream) => {
      open++;
      served = true;
      session.setTimeout(0);
      stream.once('close', () => {
        if (--open === 0 && !session.destroyed) arm();
      });
    });
    session.on('timeout', () => {
      if (open === 0 && !session.closed) session.close();
    });
  });
}
