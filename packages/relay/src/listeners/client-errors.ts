import type { EventEmitter } from 'node:events';
import type { ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '@burrow/shared';
import { closingResponse, HEAD_TIMEOUT, MALFORMED_REQUEST } from '../proxy/errors.js';
import { failMalformedBody } from '../proxy/forward.js';
import { HEAD_TOO_LARGE } from '../proxy/validate-request.js';
import type { RequestQueue } from './one-at-a-time.js';

/**
 * Answers the parse errors Node's HTTP/1 parser reports on `server`'s
 * connections ('clientError'): the plain listener's, and the HTTP/1 side of
 * the TLS terminator's. Without a handler Node writes its own 400 at once,
 * even while an earlier request is in flight, so the client takes it for
 * that request's answer. Here a request in flight gets its response first, or
 * fails itself when the bad bytes are in its body; `requests` is the
 * server's queue, whose waiting requests never start.
 */
export function answerClientErrors(
  server: EventEmitter,
  requests: Pick<RequestQueue<unknown, unknown>, 'stop'>,
  opts: { logger: Logger; headersTimeout: number },
): void {
  // Node reports a connection's parse error again with each chunk that follows; it is answered once.
  const refused = new WeakSet<Socket>();
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    // The TLS terminator's server reports failed handshakes here too (Node's
    // Http2SecureServer passes 'tlsClientError' on): with no HTTP parser on the
    // connection there is no HTTP to answer in, and it closes, as Node's default does.
    if (!(socket as Socket & { parser?: unknown }).parser) return void socket.destroy();
    if (refused.has(socket)) {
      // Reported again (more bytes, or the head deadline) once the answer is out: nothing more to wait for.
      if (socket.writableFinished) socket.destroy();
      return;
    }
    refused.add(socket);
    // Malformed requests (smuggling shapes, oversized heads, slow heads) get a
    // status line when the socket is still writable, and never reach an agent.
    const failure =
      err.code === 'HPE_HEADER_OVERFLOW'
        ? HEAD_TOO_LARGE
        : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? HEAD_TIMEOUT
          : MALFORMED_REQUEST;
    opts.logger.info({ code: err.code, client: socket.remoteAddress }, 'bad request from client');
    const answer = () => {
      if (socket.destroyed || socket.writableEnded) return;
      if (!socket.writable) return void socket.destroy();
      socket.end(closingResponse(failure));
      // A client that never closes its side does not keep the connection.
      socket.setTimeout(opts.headersTimeout, () => socket.destroy());
    };
    // Requests parsed before the bad bytes and still waiting never start: they reached no backend.
    const dropped = requests.stop(socket);
    // A response in flight for an earlier request goes out whole first: the
    // error answer must not land in the middle of its body.
    const inFlight = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (!inFlight) return answer();
    // The bad bytes are in the body of the request in progress: it fails now, with its own 400,
    // instead of waiting for the rest of a body that will not come.
    if (!inFlight.req.complete && failMalformedBody(inFlight.req)) return;
    // Bytes after a request that closes the connection are ignored (RFC 9112 §9.6): its response, then the close.
    if (err.code === 'HPE_CLOSED_CONNECTION') return;
    // With requests dropped, a 400 would read as the answer to the first of them:
    // the connection just closes after the response, and the client retries them.
    inFlight.once('close', dropped > 0 ? () => socket.end() : answer);
  });
}
