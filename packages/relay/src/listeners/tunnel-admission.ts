import type { Server as HttpServer } from 'node:http';
import { Server as HttpsServer } from 'node:https';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';

/**
 * How long a connection to the tunnel endpoint may take over its TLS handshake,
 * and then over its upgrade request, ms. An agent sends both at once; Node's
 * defaults (120 s for the handshake, 60 s for the head) let anyone hold a file
 * descriptor for a minute or two per connection without a token.
 */
export const TUNNEL_HANDSHAKE_TIMEOUT = 10_000;

/**
 * Connections to the tunnel endpoint that have not sent their upgrade request
 * yet, at most, in all and from one source (sourceOf). The first stays within the file
 * descriptors the automatic connection limit keeps back (FD_HEADROOM), so
 * that no flood of silent connections takes the descriptors the public
 * listeners and the agents' tunnels need. An agent's connection is waiting for
 * a round trip or two, so even every replica of a cluster behind one address
 * reconnecting at once stays well under the second.
 */
export const MAX_WAITING = 512;
export const MAX_WAITING_PER_ADDRESS = 32;

/**
 * What a waiting connection counts against: its IPv4 address, or the /64 of
 * its IPv6 one. A single IPv6 host or site is given a /64 at least, whose
 * addresses cost nothing to use, so one per address would bound nothing.
 */
export function sourceOf(address: string): string {
  if (isIP(address) !== 6) return address;
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(address);
  if (mapped) return mapped[1]!;
  // Groups as written; an embedded IPv4 address (`64:ff9b::192.0.2.1`) is the last two.
  const groups = (part: string) =>
    part ? part.split(':').flatMap((g) => (g.includes('.') ? ['0', '0'] : [g])) : [];
  const [head = '', tail] = address.replace(/%.*$/, '').split('::');
  const before = groups(head);
  const after = tail === undefined ? [] : groups(tail);
  const all =
    tail === undefined ? before : [...before, ...Array(8 - before.length - after.length).fill('0'), ...after];
  return `${all
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}

/** The options for the tunnel endpoint's HTTP(S) server: its time limits. */
export const TUNNEL_SERVER_OPTIONS = {
  headersTimeout: TUNNEL_HANDSHAKE_TIMEOUT,
  requestTimeout: TUNNEL_HANDSHAKE_TIMEOUT,
  // How often Node checks those: the default (30 s) would add up to three times the limit.
  connectionsCheckingInterval: 1_000,
} as const;

/**
 * Closes each connection to `server` that arrives while MAX_WAITING (or
 * MAX_WAITING_PER_ADDRESS from its source, sourceOf) are waiting already, that is,
 * connected and not a tunnel yet; `onDrop` hears of each one. A connection
 * stops waiting when it closes, or when the endpoint tells `admitted` that
 * its upgrade became a tunnel (its token checked): a refused upgrade, or a
 * plain request, keeps its slot until the connection is gone.
 */
export function admitTunnelConnections(
  server: HttpServer | HttpsServer,
  onDrop: () => void,
  limits = { total: MAX_WAITING, perAddress: MAX_WAITING_PER_ADDRESS },
): { admitted(socket: Duplex): void; destroyWaiting(): void } {
  const waiting = new Map<Duplex, string>();
  const perAddress = new Map<string, number>();
  /** A TLS connection's socket as the upgrade sees it, to the TCP socket counted. */
  const tcpOf = new WeakMap<Duplex, Duplex>();
  const done = (socket: Duplex) => {
    const address = waiting.get(socket);
    if (address === undefined) return;
    waiting.delete(socket);
    const n = (perAddress.get(address) ?? 1) - 1;
    if (n > 0) perAddress.set(address, n);
    else perAddress.delete(address);
  };
  server.on('connection', (socket: Duplex & { remoteAddress?: string }) => {
    const address = sourceOf(socket.remoteAddress ?? '');
    const fromThere = perAddress.get(address) ?? 0;
    if (waiting.size >= limits.total || fromThere >= limits.perAddress) {
      socket.destroy();
      onDrop();
      return;
    }
    waiting.set(socket, address);
    perAddress.set(address, fromThere + 1);
    socket.once('close', () => done(socket));
  });
  if (server instanceof HttpsServer) {
    server.on('secureConnection', (tls: Duplex & { _parent?: Duplex }) => {
      // Node's TLS socket wraps the TCP one it was made from.
      if (tls._parent) tcpOf.set(tls, tls._parent);
    });
  }
  return {
    admitted(socket) {
      done(tcpOf.get(socket) ?? socket);
    },
    /** Closes the connections that are not tunnels (a drain: they have nothing to finish). */
    destroyWaiting() {
      for (const socket of [...waiting.keys()]) socket.destroy();
    },
  };
}
