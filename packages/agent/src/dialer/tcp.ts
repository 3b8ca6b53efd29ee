import { connect, type Socket } from 'node:net';
import { type Logger, Reason, type Stream, splice, type TcpOpen } from '@burrow/shared';
import type { Route } from '../routes/source.js';
import { targetAddress } from './target.js';

export interface TcpServeOptions {
  /** Time allowed for the backend to accept the connection, ms. */
  connectTimeout: number;
  log: Logger;
  /** Called once per failed backend connection with the wire reason name (metrics). */
  onFailure?: ((reason: string) => void) | undefined;
}

/**
 * Serves a `tcp` stream (TLS passthrough): connects to the route's target and
 * splices the stream to it, byte for byte, in both directions. The first
 * bytes are the client's ClientHello; the backend terminates TLS itself.
 * Half-closes travel end to end. Never throws.
 */
export function serveTcpStream(
  stream: Stream,
  meta: TcpOpen,
  route: Route,
  { connectTimeout, log, onFailure }: TcpServeOptions,
): void {
  const { host, port, where } = targetAddress(route.target);
  const started = performance.now();
  let failed: string | undefined;
  stream.on('error', () => {}); // resets from the relay: 'close' cleans up
  // Client bytes wait in the stream (bounded by its window) until the backend accepts.
  stream.pause();
  const socket: Socket = connect({ host, port, allowHalfOpen: true });
  const fail = (reason: Reason, message: string, code?: string) => {
    if (failed !== undefined || stream.destroyed) return;
    failed = Reason[reason] ?? String(reason);
    log.warn(
      { route: route.id, target: route.target, reason: failed, ...(code ? { code } : {}), error: message },
      'backend connection failed',
    );
    stream.reset(reason, message);
    onFailure?.(failed);
  };
  const timer = setTimeout(() => {
    socket.destroy();
    fail(
      Reason.ConnectTimeout,
      `backend did not accept a connection to ${where} within ${connectTimeout} ms`,
    );
  }, connectTimeout);
  socket.once('connect', () => {
    clearTimeout(timer);
    splice(socket, stream);
  });
  socket.on('error', (err: NodeJS.ErrnoException) => {
    clearTimeout(timer);
    if (err.code === 'ECONNREFUSED')
      fail(Reason.ConnectRefused, `backend refused connection to ${where}`, err.code);
    else fail(Reason.BackendError, `backend connection failed: ${err.code ?? err.message}`, err.code);
  });
  // 'close' comes once on both: `on` spares the wrapper `once` would keep per connection.
  socket.on('close', () => {
    // A backend that closed cleanly has ended the stream through the splice; anything else is a failure.
    if (!stream.writableEnded) fail(Reason.BackendError, 'backend closed the connection');
  });
  stream.on('close', () => {
    clearTimeout(timer);
    // Aborted: RST tells the backend at once, even after a half-close.
    if (stream.errored || !stream.writableFinished) socket.resetAndDestroy();
    log.debug(
      {
        route: route.id,
        sni: meta.serverName,
        passthrough: true,
        bytesIn: stream.bytesIn,
        bytesOut: stream.bytesOut,
        durationMs: Math.round(performance.now() - started),
        ...(failed ? { error: failed } : {}),
      },
      'stream done',
    );
  });
}
