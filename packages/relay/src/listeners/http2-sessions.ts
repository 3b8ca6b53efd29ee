import type { Http2SecureServer, Http2Server, ServerHttp2Session } from 'node:http2';
import { type Logger, MAX_RESPONSE_HEAD } from '@burrow/shared';
import { MAX_REQUEST_HEADERS } from '../proxy/validate-request.js';

/**
 * Requests one HTTP/2 connection may have in progress at once. Each holds a
 * tunnel stream and, at the agent, one of the connections its pool keeps to
 * the target (256 at most); without a bound (Node's default is 2³² − 1), one
 * client could take every stream an agent's connection allows, or every
 * backend connection of a target, and shut out the other clients of its
 * routes. 100 is the least RFC 9113 §6.5.2 recommends, so clients expect it;
 * HAProxy and Envoy's edge-proxy guidance use 100, nginx 128, Go 250.
 */
export const MAX_H2_STREAMS = 100;

/**
 * Options both HTTP/2 servers (TLS and h2c) take: the stream bound above, and
 * room for the response heads backends may send (node:http2 refuses a header
 * block over 64 KB by default, and closes the client's whole connection). A
 * head of MAX_RESPONSE_HEAD bytes as HTTP/1.1 counts them is checked against
 * a bound of its size plus 12 bytes a field, and the relay adds a few fields:
 * twice the head leaves room for all of that.
 */
export const H2_SERVER_OPTIONS = {
  settings: { maxConcurrentStreams: MAX_H2_STREAMS },
  maxSendHeaderBlockLength: 2 * MAX_RESPONSE_HEAD,
  // As many request fields as HTTP/1.1 clients may send, and the pseudo-fields: Node's default
  // (128) reset a request with more with ENHANCE_YOUR_CALM, where HTTP/1.1 got it through.
  maxHeaderListPairs: MAX_REQUEST_HEADERS + 8,
} as const;

/**
 * What the relay does with every HTTP/2 session of `server`, TLS or not.
 * Node gives sessions no deadlines, so a client could hold one open without
 * ever completing a request: a session with no open stream gets
 * `headersTimeout` before its first request and `keepAliveTimeout` after its
 * last one, then it is closed with GOAWAY. Session errors are logged at debug.
 * Returns the sessions open now, for a drain to send GOAWAY to.
 */
export function manageSessions(
  server: Http2Server | Http2SecureServer,
  {
    headersTimeout,
    keepAliveTimeout,
    logger,
  }: { headersTimeout: number; keepAliveTimeout: number; logger: Logger },
): ReadonlySet<ServerHttp2Session> {
  const sessions = new Set<ServerHttp2Session>();
  server.on('sessionError', (err: Error) => {
    logger.debug({ reason: err.message }, 'http2 session error');
  });
  server.on('session', (session) => {
    sessions.add(session);
    session.once('close', () => sessions.delete(session));
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
  return sessions;
}
