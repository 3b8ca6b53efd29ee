import { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';

/**
 * Joins two duplexes that carry one connection (a client socket and a tunnel
 * stream, say): bytes flow both ways with backpressure, and each side's end is
 * passed on as the other's end, so a half-close travels end to end. Both sides
 * start flowing.
 *
 * It does what `a.pipe(b); b.pipe(a)` does here with a fraction of the memory:
 * a pipe adds nine listeners and three `once` wrappers per direction, about
 * 1 KB that a connection idle for hours keeps. Errors and teardown stay with
 * the caller, which listens for 'error' and 'close' on both sides anyway; a
 * write to a side already destroyed is dropped by that side.
 */
export function splice(a: Duplex, b: Duplex): void {
  copy(a, b);
  copy(b, a);
  a.resume();
  b.resume();
}

function copy(from: Duplex, to: Duplex): void {
  let waiting = false;
  from.on('data', (chunk: Buffer) => {
    if (!to.write(chunk) && !waiting) {
      waiting = true;
      from.pause();
    }
  });
  to.on('drain', () => {
    if (!waiting) return;
    waiting = false;
    from.resume();
  });
  from.on('end', () => to.end());
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
  if (socket instanceof Socket && !(socket instanceof TLSSocket)) socket.resetAndDestroy();
  else socket.destroy();
}
