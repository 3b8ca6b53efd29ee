import { Http2ServerRequest, type ServerHttp2Session } from 'node:http2';
import type { Server, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { ClientRequest, ClientResponse } from '../proxy/forward.js';
import { createHttpsTerminator, type HttpsTerminatorOptions } from './https.js';
import { createTlsListener, type TlsListenerOptions } from './tls.js';

export type TlsFrontOptions = HttpsTerminatorOptions & Omit<TlsListenerOptions, 'terminator'>;

/**
 * The relay's public TLS side: the SNI listener, the terminating HTTP server
 * behind it, and what a drain needs to know about both: open sockets, h2
 * sessions, and which HTTP/1 connections are between requests.
 */
export class TlsFront {
  /** The listener to bind to the public TLS address. */
  readonly server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #sessions = new Set<ServerHttp2Session>();
  /** Terminated HTTP/1 connections and how many requests each has in progress. */
  readonly #h1 = new Map<TLSSocket, number>();
  #draining = false;
  #allClosed: (() => void) | undefined;

  constructor(opts: TlsFrontOptions) {
    const terminator = createHttpsTerminator(opts);
    this.server = createTlsListener({ ...opts, terminator });
    this.server.on('connection', (socket: Socket) => {
      this.#sockets.add(socket);
      socket.once('close', () => {
        this.#sockets.delete(socket);
        if (this.#sockets.size === 0) this.#allClosed?.();
      });
    });
    terminator.on('session', (session) => {
      this.#sessions.add(session);
      session.once('close', () => this.#sessions.delete(session));
    });
    terminator.on('secureConnection', (socket: TLSSocket) => {
      if (socket.alpnProtocol === 'h2') return;
      this.#h1.set(socket, 0);
      socket.once('close', () => this.#h1.delete(socket));
    });
    terminator.on('request', (req: ClientRequest, res: ClientResponse) => {
      if (req instanceof Http2ServerRequest) return;
      const socket = req.socket as TLSSocket;
      const active = this.#h1.get(socket);
      if (active === undefined) return;
      this.#h1.set(socket, active + 1);
      res.once('close', () => {
        const left = (this.#h1.get(socket) ?? 1) - 1;
        if (!this.#h1.has(socket)) return;
        this.#h1.set(socket, left);
        // Draining: a connection goes as soon as it is between requests.
        if (this.#draining && left === 0) socket.end();
      });
    });
    // An upgraded connection (WebSocket) is the tunnel's now: the drain leaves it to its stream.
    terminator.on('upgrade', (req: ClientRequest) => this.#h1.delete(req.socket as TLSSocket));
  }

  /**
   * Stops accepting connections; h2 clients get GOAWAY and HTTP/1 connections
   * between requests are closed, so new requests go to a new connection while
   * open ones finish. Resolves when the listener has closed (its connections
   * may still be open).
   */
  stopAccepting(): Promise<void> {
    this.#draining = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const session of this.#sessions) session.close();
    this.#endIdle();
    return closed;
  }

  /**
   * For the end of a drain, when no tunnel stream is left: ends the HTTP/1
   * connections still open (after whatever they are sending) and resolves once
   * every connection has closed. destroyAll() bounds the wait.
   */
  settle(): Promise<void> {
    this.#endIdle();
    if (this.#sockets.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.#allClosed = resolve;
    });
  }

  /** Closes every connection that is still open (the drain's deadline). */
  destroyAll(): void {
    for (const socket of this.#sockets) socket.destroy();
  }

  #endIdle(): void {
    for (const [socket, active] of this.#h1) if (active === 0) socket.end();
  }
}
