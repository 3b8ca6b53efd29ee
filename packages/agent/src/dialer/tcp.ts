import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import {
  dropWritesAfterPeerClose,
  type Http1Open,
  type Logger,
  Reason,
  resetConnection,
  type Stream,
  splice,
  TCP_KEEPALIVE_DELAY,
  type TcpOpen,
} from '@burrow/shared';
import type { Route } from '../routes/source.js';
import { socketFailure, warnLimited } from './failure.js';
import { targetAddress } from './target.js';

export interface TcpServeOptions {
  /** Time allowed for the backend to accept the connection (and finish TLS for https targets), ms. */
  connectTimeout: number;
  log: Logger;
  /** Called once per failed backend connection with the wire reason name (metrics). */
  onFailure?: ((reason: string) => void) | undefined;
}

/**
 * Serves a byte stream by splicing it to one connection to the route's
 * target, in both directions. Two kinds of stream take this path:
 * - `tcp`: a TLS connection passed through by SNI (the first bytes are the
 *   client's ClientHello; the backend terminates TLS itself), or a connection
 *   to one of the relay's public TCP ports.
 * - `http1`: HTTP/1.1 requests the relay has parsed and rewritten, to an
 *   `http://` target over TCP or an `https://` one over TLS (verified unless
 *   the route says tlsInsecure). The relay frames the responses.
 *
 * Half-closes travel end to end; a failed connection resets the stream with
 * the reason the relay turns into a 502 or 504. A backend that ends its side
 * and closes while the client still sends (an early answer to an upload) has
 * not failed: all it sent goes out, then its end, and the client's bytes it no
 * longer takes are dropped. Never throws.
 */
export function serveTcpStream(
  stream: Stream,
  meta: TcpOpen | Http1Open,
  route: Route,
  { connectTimeout, log, onFailure }: TcpServeOptions,
): void {
  const { host, port, https, serverName } = targetAddress(route.target);
  const tls = meta.kind === 'http1' && https;
  const started = performance.now();
  let failed: string | undefined;
  stream.on('error', () => {}); // resets from the relay: 'close' cleans up
  // Client bytes wait in the stream (bounded by its window) until the backend accepts.
  stream.pause();
  const socket: Socket = tls
    ? tlsConnect({
        host,
        port,
        ...(serverName ? { servername: serverName } : {}),
        rejectUnauthorized: route.tlsInsecure !== true,
        ALPNProtocols: ['http/1.1'],
      })
    : connect({ host, port, allowHalfOpen: true });
  // Requests and responses go out whole as they are written: no Nagle delay on small ones.
  socket.setNoDelay(true);
  socket.setKeepAlive(true, TCP_KEEPALIVE_DELAY);
  const fail = (reason: Reason, message: string, code?: string) => {
    if (failed !== undefined || stream.destroyed) return;
    failed = Reason[reason] ?? String(reason);
    warnLimited(
      log,
      `${route.id} ${failed}`,
      { route: route.id, target: route.target, reason: failed, ...(code ? { code } : {}), error: message },
      'backend connection failed',
    );
    stream.reset(reason, message);
    onFailure?.(failed);
  };
  const timer = setTimeout(() => {
    socket.destroy();
    fail(Reason.ConnectTimeout, `backend did not accept a connection within ${connectTimeout} ms`);
  }, connectTimeout);
  socket.once(tls ? 'secureConnect' : 'connect', () => {
    clearTimeout(timer);
    dropWritesAfterPeerClose(socket);
    splice(socket, stream);
  });
  socket.on('error', (err: NodeJS.ErrnoException) => {
    clearTimeout(timer);
    if (err.code === 'ECONNREFUSED') fail(Reason.ConnectRefused, 'backend refused the connection', err.code);
    else
      fail(
        Reason.BackendError,
        `backend connection failed: ${socketFailure(err.code, err.message)}`,
        err.code,
      );
  });
  // 'close' comes once on both: `on` spares the wrapper `once` would keep per connection.
  socket.on('close', () => {
    // A backend that closed cleanly has ended the stream through the splice; anything else is a failure.
    if (!stream.writableEnded) fail(Reason.BackendError, 'backend closed the connection');
  });
  stream.on('close', () => {
    clearTimeout(timer);
    // Aborted: RST tells the backend at once, even after a half-close.
    if (stream.errored || !stream.writableFinished) resetConnection(socket);
    log.debug(
      {
        route: route.id,
        ...(meta.kind === 'http1'
          ? { http1: true }
          : meta.port !== undefined
            ? { port: meta.port }
            : { sni: meta.serverName, passthrough: true }),
        bytesIn: stream.bytesIn,
        bytesOut: stream.bytesOut,
        durationMs: Math.round(performance.now() - started),
        ...(failed ? { error: failed } : {}),
      },
      'stream done',
    );
  });
}
