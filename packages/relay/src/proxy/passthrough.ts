import type { Socket } from 'node:net';
import { type Logger, Reason, resetConnection, type Stream, splice } from '@burrow/shared';
import type { AgentConnection } from '../tunnel/agent-connection.js';
import { clientIp } from './forward.js';

/**
 * How long a client connection whose stream has ended may take to read what
 * is left for it, ms. One that reads nothing is let go after that.
 */
const FLUSH_TIMEOUT = 60_000;

/** Where a raw connection came in: a TLS connection by its SNI name, or a public TCP port. */
export type RawEntry = { serverName: string } | { port: number };

/**
 * Splices a client connection to a `tcp` stream on the agent that serves it:
 * a TLS connection passed through by SNI (the relay replays the ClientHello
 * it peeked at, `first`, never holds a key for the name and never decrypts),
 * or a connection to a public TCP port. Bytes are copied both ways untouched;
 * half-closes travel end to end (FIN ↔ stream FIN). One log line per
 * connection, when it ends.
 */
export function forwardRaw(
  logger: Logger,
  socket: Socket,
  first: Buffer | undefined,
  binding: { target: AgentConnection; routeId: string },
  entry: RawEntry,
): void {
  const started = performance.now();
  const client = clientIp(socket.remoteAddress);
  const where = 'serverName' in entry ? { sni: entry.serverName, passthrough: true } : { port: entry.port };
  const what = 'serverName' in entry ? 'tls connection' : 'tcp connection';
  let stream: Stream;
  try {
    stream = binding.target.openStream({
      kind: 'tcp',
      route: binding.routeId,
      ...entry,
      client: { ip: client, port: socket.remotePort ?? 0 },
    });
  } catch (err) {
    logger.info(
      { ...where, client, error: (err as { code?: string }).code ?? 'open_failed' },
      `${what} refused`,
    );
    socket.destroy();
    return;
  }
  // Raw bytes with no end in sight: a drain closes it once quiet, rather than waiting for it.
  stream.markRaw();
  let failure: string | undefined;
  // The client may half-close (a TLS close_notify sent, or a TCP FIN, the answer still coming).
  socket.allowHalfOpen = true;
  // Bytes go on as they come: a chatty protocol's small writes are not held back (Nagle).
  socket.setNoDelay(true);
  socket.on('error', (err: NodeJS.ErrnoException) => {
    failure ??= `client: ${err.code ?? err.message}`;
    if (!stream.destroyed) stream.reset(Reason.Cancel, 'client connection failed');
  });
  stream.on('error', (err: Error & { reason?: number }) => {
    failure ??= `agent: ${err.reason !== undefined ? (Reason[err.reason] ?? err.reason) : err.message}`;
    // A reset, not a FIN: a client that takes a FIN for the end of the data (or a TLS client
    // that tolerates a missing close_notify) would take a cut connection for a complete one.
    resetConnection(socket);
  });
  // 'close' comes once: `on` spares the wrapper `once` would keep per connection.
  socket.on('close', () => {
    if (!stream.destroyed && !(stream.writableFinished && stream.readableEnded)) {
      stream.reset(Reason.Cancel, 'client closed the connection');
    }
  });
  stream.on('close', () => {
    logger.info(
      {
        ...where,
        route: binding.routeId,
        client,
        bytesIn: stream.bytesOut,
        bytesOut: stream.bytesIn,
        durationMs: Math.round(performance.now() - started),
        ...(failure ? { error: failure } : {}),
      },
      what,
    );
    if (socket.destroyed) return;
    if (socket.writableFinished) socket.destroy();
    // The rest is still on its way to a client that may never read it: it gets a while, not for ever.
    else socket.setTimeout(FLUSH_TIMEOUT, () => socket.destroy());
  });
  if (first) stream.write(first);
  splice(socket, stream);
}
