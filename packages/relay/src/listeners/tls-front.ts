import { Server as HttpServer } from 'node:http';
import type { Http2SecureServer, ServerHttp2Session } from 'node:http2';
import type { Server, Socket } from 'node:net';
import type { Http1Front } from '../proxy/http1-front.js';
import { createHttpsTerminator, type HttpsTerminatorOptions } from './https.js';
import { createTlsListener, type TlsListenerOptions } from './tls.js';

export type TlsFrontOptions = HttpsTerminatorOptions & Omit<TlsListenerOptions, 'terminator'>;

/**
 * The relay's public TLS side: the SNI listener, the terminating HTTP server
 * behind it, and what a drain needs to know about both (open sockets, h2
 * sessions, HTTP/1 connections between requests).
 */
export class TlsFront {
  /** The listener to bind to the public TLS address. */
  readonly server: Server;
  readonly #terminator: Http2SecureServer;
  readonly #fast: Http1Front | undefined;
  readonly #sockets = new Set<Socket>();
  readonly #sessions: ReadonlySet<ServerHttp2Session>;
  readonly #awaitingHello = new Set<{ drain(): void }>();
  #allClosed: (() => void) | undefined;

  constructor(opts: TlsFrontOptions) {
    // The hello's deadline covers the rest of the handshake too.
    const { server, sessions, fast } = createHttpsTerminator({
      ...opts,
      handshakeTimeout: opts.helloTimeout,
    });
    this.#terminator = server;
    this.#sessions = sessions;
    this.#fast = fast;
    this.server = createTlsListener({
      ...opts,
      terminator: this.#terminator,
      awaitingHello: this.#awaitingHello,
    });
    this.server.on('connection', (socket: Socket) => {
      this.#sockets.add(socket);
      socket.once('close', () => {
        this.#sockets.delete(socket);
        if (this.#sockets.size === 0) this.#allClosed?.();
      });
    });
  }

  /**
   * Stops accepting connections; h2 clients get GOAWAY and HTTP/1 connections
   * between requests are closed, so new requests go to a new connection while
   * open ones finish. Resolves when the listener has closed (its connections
   * may still be open).
   */
  stopAccepting(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const session of this.#sessions) session.close();
    // A client that has not sent its ClientHello yet would otherwise hold the drain until its timeout.
    for (const reader of [...this.#awaitingHello]) reader.drain();
    this.closeIdleConnections();
    return closed;
  }

  /**
   * Closes the terminated HTTP/1 connections that are between requests: those
   * on the fast path, and those Node's parser holds. Node tracks the latter on
   * the terminator as on a plain HTTP server (https.ts starts that tracking),
   * so the plain server's method serves here too; upgraded connections are
   * not among them.
   */
  closeIdleConnections(): void {
    this.#fast?.closeIdle();
    HttpServer.prototype.closeIdleConnections.call(this.#terminator as unknown as HttpServer);
  }

  /**
   * For the end of a drain, when no tunnel stream is left: resolves once every
   * connection has closed (responses in flight end theirs with `Connection:
   * close`). destroyAll() bounds the wait.
   */
  settle(): Promise<void> {
    this.closeIdleConnections();
    if (this.#sockets.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      this.#allClosed = resolve;
    });
  }

  /** Closes every connection that is still open (the drain's deadline). */
  destroyAll(): void {
    for (const socket of this.#sockets) socket.destroy();
  }
}
