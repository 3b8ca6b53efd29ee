import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';

/**
 * TCP keepalive for sockets that may carry a connection for hours (a public
 * TCP port, TLS passthrough, a WebSocket, a gRPC stream, and their backends):
 * the kernel probes a connection idle this long, ms, so a peer that vanished
 * without a FIN or RST (a laptop asleep behind NAT, a node that died) is found
 * and the stream it held freed, even with `--stream-idle-timeout 0`. Linux
 * then probes every 75 s and gives up after 9 unanswered (its defaults):
 * some 12 minutes in all.
 */
export const TCP_KEEPALIVE_DELAY = 60_000;

/** Options of net servers and connections for TCP keepalive (TCP_KEEPALIVE_DELAY). */
export const TCP_KEEPALIVE = { keepAlive: true, keepAliveInitialDelay: TCP_KEEPALIVE_DELAY } as const;

/**
 * Joins two duplexes that carry one connection (a client socket and a tunnel
 * stream, say): bytes flow both ways with backpressure, and each side's end is
 * passed on as the other's end, so a half-close travels end to end. Both sides
 * start flowing.
 *
 * It does what `a.pipe(b); b.pipe(a)` does here with a fraction of the memory:
 * a pipe adds nine listeners and three `once` wrappers per direction, about
 * 1 KB that a connection idle for hours keeps. Errors and teardown stay with
 * the caller, which listens for 'error' and 'close' on both sides anyway.
 * Bytes for a side that ended or closed on its own (a TLS socket ends its
 * writable side with its readable one) are dropped, and the other side keeps
 * flowing, so that it still reaches its end.
 */
export function splice(a: Duplex, b: Duplex): void {
  copy(a, b);
  copy(b, a);
  a.resume();
  b.resume();
}

function copy(from: Duplex, to: Duplex): void {
  let waiting = false;
  const flow = () => {
    if (!waiting) return;
    waiting = false;
    from.resume();
  };
  from.on('data', (chunk: Buffer) => {
    if (to.writableEnded || to.destroyed) return;
    if (!to.write(chunk) && !waiting) {
      waiting = true;
      from.pause();
    }
  });
  to.on('drain', flow);
  // A side that ends or closes while writes wait sends no 'drain'.
  to.on('close', flow);
  from.on('end', () => to.end());
}

/**
 * Keeps reading a socket whose peer closed it while bytes were still being
 * written to it. A peer that sends its answer, ends its side and closes (an
 * HTTP server refusing an upload with a 413, say) makes the next write fail
 * with EPIPE. Node destroys a socket whose write fails, and what the peer sent
 * before its end, still unread in the kernel, would go with it. Here that
 * write and every one after it are dropped instead, as no one is left to take
 * them, and the socket reads on to the peer's end.
 *
 * Linux reports EPIPE for a reset that comes after the peer's FIN. A reset
 * from a peer that had not ended (ECONNRESET) still fails the socket: that
 * connection was cut.
 */
export function dropWritesAfterPeerClose(socket: Socket): void {
  let closed = false;
  const settle =
    (callback: (error?: Error | null) => void) =>
    (error?: Error | null): void => {
      if ((error as NodeJS.ErrnoException | null | undefined)?.code !== 'EPIPE') return callback(error);
      closed = true;
      callback();
    };
  const write = socket._write;
  const writev = socket._writev;
  socket._write = (chunk, encoding, callback) =>
    closed ? callback() : write.call(socket, chunk, encoding, settle(callback));
  if (writev) {
    socket._writev = (chunks, callback) =>
      closed ? callback() : writev.call(socket, chunks, settle(callback));
  }
}

/**
 * Destroys a connection with a TCP reset where it can, so the peer learns at
 * once that it was cut, not ended (even after a half-close): a client whose
 * body ends with the connection (HTTP/1.0, or a response without a length)
 * cannot take the cut for the end, and a backend stops at once. A TLS socket
 * cannot send one (Node refuses resetAndDestroy on it and throws): it is
 * destroyed without close_notify, which tells a TLS peer the same.
 */
export function resetConnection(socket: Duplex | null | undefined): void {
  if (!socket || socket.destroyed) return;
  // After end() the kernel refuses the reset (EINVAL): the FIN is on its way anyway.
  if (socket instanceof Socket && !(socket instanceof TLSSocket) && !socket.writableEnded)
    socket.resetAndDestroy();
  else socket.destroy();
}
