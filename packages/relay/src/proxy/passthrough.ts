import type { Socket } from 'node:net';
import { type Logger, Reason, resetConnection, type Stream, splice } from '@burrow/shared';
import type { Binding } from '../routes/table.js';
import type { AgentConnection } from '../tunnel/agent-connection.js';
import { clientIp } from './forward.js';

/**
 * Splices a client's TLS connection to a `tcp` stream on the agent that serves
 * the SNI name. The relay replays the ClientHello it peeked at and then copies
 * bytes both ways; it never holds a key for the name and never decrypts.
 * Half-closes travel end to end (FIN ↔ stream FIN).
 */
export function forwardPassthrough(
  logger: Logger,
  socket: Socket,
  hello: Buffer,
  binding: Binding<AgentConnection>,
  serverName: string,
): void {
  const started = performance.now();
  const client = clientIp(socket.remoteAddress);
  let stream: Stream;
  try {
    stream = binding.target.openStream({
      kind: 'tcp',
      route: binding.routeId,
      serverName,
      client: { ip: client, port: socket.remotePort ?? 0 },
    });
  } catch (err) {
    logger.info(
      { sni: serverName, client, passthrough: true, error: (err as { code?: string }).code ?? 'open_failed' },
      'tls connection refused',
    );
    socket.destroy();
    return;
  }
  let failure: string | undefined;
  // The client may half-close (its close_notify sent, response still coming).
  socket.allowHalfOpen = true;
  socket.on('error', (err: NodeJS.ErrnoException) => {
    failure ??= `client: ${err.code ?? err.message}`;
    if (!stream.destroyed) stream.reset(Reason.Cancel, 'client connection failed');
  });
  stream.on('error', (err: Error & { reason?: number }) => {
    failure ??= `agent: ${err.reason !== undefined ? (Reason[err.reason] ?? err.reason) : err.message}`;
    // A reset, not a FIN: a TLS client that tolerates a missing close_notify would take a
    // cut connection for a complete one.
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
        sni: serverName,
        route: binding.routeId,
        client,
        passthrough: true,
        bytesIn: stream.bytesOut,
        bytesOut: stream.bytesIn,
        durationMs: Math.round(performance.now() - started),
        ...(failure ? { error: failure } : {}),
      },
      'tls connection',
    );
    if (!socket.destroyed && socket.writableFinished) socket.destroy();
  });
  stream.write(hello);
  splice(socket, stream);
}
