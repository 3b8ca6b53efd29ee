import type { EventEmitter } from 'node:events';
import type { Socket } from 'node:net';
import { type Handoff, Http1Connection, type Http1Options } from './http1-connection.js';
import type { Http1Pool } from './http1-pool.js';

/**
 * The fast path in front of one of the relay's Node HTTP servers (ADR 006):
 * every connection it is given starts on an Http1Connection, which hands it
 * to `handoff` (the server's own connection handler) at the first request it
 * does not carry. Keeps the connections a drain has to reach; the upstream
 * pool is the relay's, shared by its listeners.
 */
export class Http1Front {
  readonly #connections = new Set<Http1Connection>();
  readonly #pool: Http1Pool;
  readonly #opts: Http1Options;
  readonly #handoff: Handoff;
  readonly #gone = (conn: Http1Connection) => this.#connections.delete(conn);

  constructor(opts: Http1Options, pool: Http1Pool, handoff: Handoff) {
    this.#opts = opts;
    this.#pool = pool;
    this.#handoff = handoff;
  }

  /** Serves a new client connection from its first byte. */
  accept(socket: Socket): void {
    this.#connections.add(new Http1Connection(socket, this.#opts, this.#pool, this.#handoff, this.#gone));
  }

  /** Closes the connections between requests and the idle upstreams (a drain); busy ones end after their response. */
  closeIdle(): void {
    for (const conn of this.#connections) conn.closeIfIdle();
    this.#pool.closeIdle();
  }

  /** Destroys every connection still on the fast path. */
  destroyAll(): void {
    for (const conn of this.#connections) conn.destroy();
  }
}

/**
 * Takes a Node server's own handler for new connections (`connection` on
 * node:http, `secureConnection` on node:http2) off the server and returns it,
 * bound: the way into Node's parser for connections the fast path hands over.
 */
export function takeConnectionHandler<S extends Socket>(
  server: EventEmitter,
  event: 'connection' | 'secureConnection',
): (socket: S) => void {
  const [handler] = server.listeners(event) as Array<(socket: S) => void>;
  if (!handler) throw new Error(`a Node server without its ${event} handler`);
  server.removeListener(event, handler);
  return (socket) => handler.call(server, socket);
}

/**
 * A connection handler for sockets the fast path hands over paused (see
 * Http1Connection): Node's HTTP/1 parser reads through 'data' events, which
 * a paused socket holds back until it is resumed.
 */
export function resumingAfter<S extends Socket>(handler: (socket: S) => void): (socket: S) => void {
  return (socket) => {
    handler(socket);
    socket.resume();
  };
}
