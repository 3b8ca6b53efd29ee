import { createServer, type Server, type Socket } from 'node:net';
import { type Logger, TCP_KEEPALIVE } from '@burrow/shared';
import type { CertStore } from '../certs/store.js';
import { clientIp } from '../proxy/forward.js';
import { forwardRaw } from '../proxy/passthrough.js';
import type { RouteTable } from '../routes/table.js';
import { type ClientHello, HelloRecords, MAX_HELLO_BYTES } from '../tls/client-hello.js';
import type { AgentConnection } from '../tunnel/agent-connection.js';

/** Something that takes over a socket whose first bytes were put back (a TLS server). */
export interface SocketHandler {
  emit(event: 'connection', socket: Socket): boolean;
}

export interface TlsListenerOptions {
  table: RouteTable<AgentConnection>;
  certs: CertStore;
  logger: Logger;
  /** Terminates TLS and serves HTTP for names the relay holds a certificate for. */
  terminator: SocketHandler;
  /** Answers TLS-ALPN-01 validation handshakes (`acme-tls/1`), when ACME is on. */
  acmeAlpn?: { handles(serverName: string): boolean; server: SocketHandler };
  /** Time a client has to send its whole ClientHello, ms. */
  helloTimeout: number;
  /** Connections still waiting for their ClientHello, for a drain to close (see TlsFront). */
  awaitingHello?: Set<{ drain(): void }>;
}

/** ALPN protocol of ACME TLS-ALPN-01 validation (RFC 8737). */
export const ACME_TLS_ALPN = 'acme-tls/1';
/** A fatal TLS alert record, unrecognized_name (RFC 6066 §3): the polite way to say "not here". */
const ALERT_UNRECOGNIZED_NAME = Buffer.from([0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x70]);

/**
 * The public TLS listener. It reads the ClientHello without terminating,
 * routes by SNI and then either passes the connection through to the agent
 * untouched (tls-passthrough routes), or puts the bytes back and hands the
 * socket to the terminator. No SNI, an unknown name, a name without a
 * certificate, garbage or a client too slow to say hello: the connection is
 * closed with one log line.
 */
export function createTlsListener(opts: TlsListenerOptions): Server {
  const server = createServer({ pauseOnConnect: false, ...TCP_KEEPALIVE });
  server.on('connection', (socket) => new HelloReader(opts, socket));
  return server;
}

class HelloReader {
  readonly #opts: TlsListenerOptions;
  readonly #socket: Socket;
  readonly #timer: NodeJS.Timeout;
  readonly #onData = (chunk: Buffer) => this.#data(chunk);
  readonly #onEnd = () => this.#refuse('client closed before its ClientHello ended');
  readonly #onClose = () => this.#refuse('connection lost before the ClientHello');
  /** The bytes read so far are `#buffer[0, #size)`; it grows by doubling, so each byte is copied O(1) times. */
  #buffer: Buffer | undefined;
  #size = 0;
  readonly #records = new HelloRecords();
  #done = false;

  constructor(opts: TlsListenerOptions, socket: Socket) {
    this.#opts = opts;
    this.#socket = socket;
    socket.on('error', () => {}); // reported through 'close' below or by the next owner
    socket.on('data', this.#onData);
    socket.once('end', this.#onEnd);
    socket.once('close', this.#onClose);
    opts.awaitingHello?.add(this);
    this.#timer = setTimeout(
      () => this.#refuse(`no complete ClientHello within ${opts.helloTimeout} ms`),
      opts.helloTimeout,
    );
  }

  #data(chunk: Buffer): void {
    if (this.#done) return;
    const data = this.#append(chunk);
    const result = this.#records.read(data);
    if (result.status === 'incomplete') {
      if (this.#size > MAX_HELLO_BYTES) this.#refuse('ClientHello too large');
      return;
    }
    if (result.status === 'invalid') {
      this.#refuse(`not a TLS ClientHello: ${result.reason}`);
      return;
    }
    this.#route(result.hello, data);
  }

  /**
   * Every byte read so far. A client may send its hello a byte at a time:
   * joining all the pieces again on each read would cost time quadratic in
   * their number, and memory far beyond the hello's size.
   */
  #append(chunk: Buffer): Buffer {
    const size = this.#size + chunk.length;
    let buffer = this.#buffer;
    if (buffer === undefined) {
      // Most hellos come whole in the first read: no copy. The chunk is never written to:
      // it is exactly full, so the next read moves to a buffer of this reader's own.
      this.#size = size;
      this.#buffer = chunk;
      return chunk;
    }
    if (size > buffer.length) {
      const grown = Buffer.allocUnsafe(Math.max(size, Math.min(2 * buffer.length, MAX_HELLO_BYTES), 512));
      buffer.copy(grown, 0, 0, this.#size);
      buffer = grown;
    }
    chunk.copy(buffer, this.#size);
    this.#buffer = buffer;
    this.#size = size;
    return buffer.subarray(0, size);
  }

  /** The relay drains: a connection that has not said hello yet has nothing in flight. */
  drain(): void {
    this.#refuse('the relay is shutting down');
  }

  /** Stops reading and takes the socket out of this reader's hands. */
  #release(): void {
    this.#done = true;
    this.#opts.awaitingHello?.delete(this);
    clearTimeout(this.#timer);
    this.#socket.off('data', this.#onData);
    this.#socket.pause();
    // Only this reader's listeners: others (connection tracking) stay.
    this.#socket.off('end', this.#onEnd);
    this.#socket.off('close', this.#onClose);
  }

  #refuse(reason: string, sni?: string, alert = false): void {
    if (this.#done) return;
    this.#release();
    const socket = this.#socket;
    this.#opts.logger.info(
      { client: clientIp(socket.remoteAddress), ...(sni ? { sni } : {}), reason },
      'tls connection refused',
    );
    if (alert && socket.writable) socket.end(ALERT_UNRECOGNIZED_NAME);
    else socket.end();
    // A client that never reads must not hold the socket open.
    setTimeout(() => socket.destroy(), 1_000).unref();
  }

  #handOver(target: SocketHandler, data: Buffer): void {
    this.#release();
    // The next owner reads the hello from the socket's buffer, as if it had never been read.
    this.#socket.unshift(data);
    target.emit('connection', this.#socket);
  }

  #route(hello: ClientHello, data: Buffer): void {
    const name = hello.serverName;
    const acme = this.#opts.acmeAlpn;
    if (name && acme && hello.alpn.includes(ACME_TLS_ALPN) && acme.handles(name)) {
      this.#handOver(acme.server, data);
      return;
    }
    if (!name) {
      this.#refuse('the client sent no SNI name', undefined, true);
      return;
    }
    const found = this.#opts.table.lookup(name);
    if (found.kind === 'found' && found.binding.mode === 'tls-passthrough') {
      const { binding } = found;
      if (binding.allowlist && !binding.allowlist.allows(this.#socket.remoteAddress ?? '')) {
        this.#refuse('client address not in the route allowlist', name, true);
        return;
      }
      this.#release();
      forwardRaw(this.#opts.logger, this.#socket, data, binding, { serverName: name });
      return;
    }
    if (found.kind === 'none') {
      this.#refuse('no route for this name', name, true);
      return;
    }
    // Only the backend may hold a passthrough name's keys: while its agent is
    // away the relay refuses, never terminates with a certificate of its own.
    if (found.kind === 'offline' && found.mode === 'tls-passthrough') {
      this.#refuse('the agent serving this passthrough name is not connected', name, true);
      return;
    }
    // An HTTP route (or one whose agent is away: the 503 page needs TLS too).
    if (!this.#opts.certs.find(name)) {
      this.#refuse('no certificate for this name (yet)', name, true);
      return;
    }
    this.#handOver(this.#opts.terminator, data);
  }
}
