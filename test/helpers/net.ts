import { once } from 'node:events';
import { type AddressInfo, createServer, type Socket } from 'node:net';
import type { Teardownable } from './relay.js';

/** A port on 127.0.0.1 that was free a moment ago: bound, then closed, so nothing listens on it. */
export async function freePort(): Promise<number> {
  const s = createServer();
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/**
 * A raw TCP backend on 127.0.0.1 (half-open allowed, as passthrough and
 * upgrade targets need); each connection goes to `handler`. Closed with its
 * connections at teardown. Resolves with its port.
 */
export async function tcpBackend(t: Teardownable, handler: (socket: Socket) => void): Promise<number> {
  const sockets = new Set<Socket>();
  const server = createServer({ allowHalfOpen: true }, (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => {});
    handler(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return (server.address() as AddressInfo).port;
}
