import type { ServerHttp2Session } from 'node:http2';
import type { Server, Socket } from 'node:net';
import { createHttpsTerminator, type HttpsTerminatorOptions } from './https.js';
import { createTlsListener, type TlsListenerOptions } from './tls.js';

export type TlsFrontOptions = HttpsTerminatorOptions & Omit<TlsListenerOptions, 'terminator'>;

/**
 * The relay's public TLS side: the SNI listener, the terminating HTTP server
 * behind it, and what a drain needs to know about both (open sockets, h2
 * sessions).
 */
export class TlsFront {
  /** The listener to bind to the public TLS address. */
  readonly server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #sessions = new Set<ServerHttp2Session>();

  constructor(opts: TlsFrontOptions) {
    const terminator = createHttpsTerminator(opts);
    this.server = createTlsListener({ ...opts, terminator });
    this.server.on('connection', (socket: Socket) => {
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
    });
    terminator.on('session', (session) => {
      this.#sessions.add(session);
      session.once('close', () => this.#sessions.delete(session));
    });
  }

  /**
   * Stops accepting connections; h2 clients get GOAWAY, so their open streams
   * finish and new requests go to a new connection. Resolves when the listener
   * has closed (its connections may still be open).
   */
  stopAccepting(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const session of this.#sessions) session.close();
    return closed;
  }

  /** Closes every connection that is still open (end of a drain). */
  destroyAll(): void {
    for (const socket of this.#sockets) socket.destroy();
  }
}
