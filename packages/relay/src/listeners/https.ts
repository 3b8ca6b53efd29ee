import {
  createSecureServer,
  type Http2SecureServer,
  Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Session,
} from 'node:http2';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { CertStore } from '../certs/store.js';
import {
  type ClientRequest,
  type ClientResponse,
  clientIp,
  type ForwardOptions,
  forwardRequest,
} from '../proxy/forward.js';
import { Http1Front, resumingAfter, takeConnectionHandler } from '../proxy/http1-front.js';
import type { Http1Pool } from '../proxy/http1-pool.js';
import { forwardUpgrade, refuseConnect } from '../proxy/upgrade.js';
import { answerClientErrors } from './client-errors.js';
import { headCheckInterval } from './http.js';
import { H2_SERVER_OPTIONS, manageSessions } from './http2-sessions.js';
import { oneAtATime } from './one-at-a-time.js';

export interface HttpsTerminatorOptions extends Omit<ForwardOptions, 'proto' | 'sniOf'> {
  certs: CertStore;
  /** Strict-Transport-Security max-age in seconds; undefined sends no HSTS header. */
  hstsMaxAge?: number;
  /** Time an HTTP/1.1 client has to send its request head, ms (slowloris bound). */
  headersTimeout: number;
  /** Idle time before a keep-alive HTTP/1.1 connection is closed, ms. */
  keepAliveTimeout: number;
  /** The relay's pool of HTTP/1.1 upstreams; without one, no fast path on this side either. */
  upstreams?: Http1Pool;
  /** Time a client has to finish the TLS handshake once its ClientHello is in, ms. Default 10 s. */
  handshakeTimeout?: number;
}

export interface HttpsTerminator {
  server: Http2SecureServer;
  /** Its HTTP/2 sessions open now. */
  sessions: ReadonlySet<ServerHttp2Session>;
  /** The HTTP/1.1 fast path in front of the server's own HTTP/1 handling, when it is on. */
  fast: Http1Front | undefined;
}

/**
 * Terminates TLS for routes the relay holds a certificate for, and routes the
 * HTTP inside exactly as the plain listener does: HTTP/1.x connections start
 * on the fast path (proxy/http1-connection.ts), everything else goes through
 * proxy/forward.ts. ALPN picks h2, http/1.1 or http/1.0 (see selectAlpn);
 * each h2 request becomes its own tunnel stream. It never listens: the TLS
 * listener hands it sockets after peeking at their ClientHello.
 */
export function createHttpsTerminator(opts: HttpsTerminatorOptions): HttpsTerminator {
  const forward: ForwardOptions = {
    ...opts,
    proto: 'https',
    sniOf: (req: ClientRequest) => socketSni(req.socket),
    ...(opts.hstsMaxAge !== undefined
      ? { responseHeaders: [['Strict-Transport-Security', `max-age=${opts.hstsMaxAge}`]] }
      : {}),
  };
  const server = createSecureServer({
    allowHTTP1: true,
    minVersion: 'TLSv1.2',
    // Node's default is 120 s: a client that sends its hello and stalls would hold the connection that long.
    handshakeTimeout: opts.handshakeTimeout ?? 10_000,
    ...H2_SERVER_OPTIONS,
    ALPNCallback: selectAlpn,
    SNICallback: (name, cb) => {
      const entry = opts.certs.find(sniName(name));
      if (entry) cb(null, entry.context);
      else cb(new Error(`no certificate for ${name}`));
    },
  });
  // The HTTP/1 side gets the plain listener's bounds: a deadline for each
  // request head, none for bodies (uploads and SSE stream without a cap).
  // Node enforces these from a periodic check it starts on 'listening'; this
  // server never listens (sockets are handed to it), so start the check here.
  Object.assign(server, {
    headersTimeout: opts.headersTimeout,
    requestTimeout: 0,
    keepAliveTimeout: opts.keepAliveTimeout,
    connectionsCheckingInterval: headCheckInterval(opts.headersTimeout),
  });
  server.emit('listening');
  const sessions = manageSessions(server, opts);
  const requests = oneAtATime((req: ClientRequest, res: ClientResponse) => {
    forwardRequest(forward, req, res).catch((err) => {
      opts.logger.error({ err }, 'request handling failed');
      res.destroy();
    });
  }, opts.logger);
  server.on('request', requests.handle);
  answerClientErrors(server, requests, opts);
  // HTTP/1.1 upgrades (WebSocket) on a terminated connection: same raw splice as on the plain listener.
  // CONNECT: an HTTP/2 one comes with its response (the compatibility layer
  // routes it here, not to 'request'), an HTTP/1.1 one with the socket.
  server.on('connect', (req: ClientRequest, second: Http2ServerResponse | Socket) => {
    if (req instanceof Http2ServerRequest) {
      forwardRequest(forward, req, second as Http2ServerResponse).catch(() => req.stream.destroy());
    } else {
      refuseConnect(forward, req, second as Socket).catch((err) => {
        opts.logger.error({ err }, 'CONNECT handling failed');
        (second as Socket).destroy();
      });
    }
  });
  server.on('upgrade', (req, socket: Socket, head: Buffer) => {
    forwardUpgrade(forward, req, socket, head).catch((err) => {
      opts.logger.error({ err }, 'upgrade handling failed');
      socket.destroy();
    });
  });
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
    opts.logger.info(
      { client: clientIp(socket.remoteAddress), reason: err.code ?? err.message },
      'tls handshake failed',
    );
  });
  // Node's handler takes each handshaken connection to its HTTP/2 or HTTP/1 side;
  // HTTP/1.x ones go to the fast path first, and reach it when they leave.
  const nodeConnection = takingHttp10ToHttp1(takeConnectionHandler<TLSSocket>(server, 'secureConnection'));
  if (!opts.upstreams) {
    server.on('secureConnection', nodeConnection);
    return { server, sessions, fast: undefined };
  }
  const fast = new Http1Front(
    {
      ...forward,
      keepAliveTimeout: opts.keepAliveTimeout,
      headersTimeout: opts.headersTimeout,
      serverName: socketSni,
    },
    opts.upstreams,
    resumingAfter((socket) => nodeConnection(socket as TLSSocket)),
  );
  server.on('secureConnection', (socket: TLSSocket) => {
    if (socket.alpnProtocol === 'h2') nodeConnection(socket);
    else fast.accept(socket);
  });
  return { server, sessions, fast };
}

/**
 * The ALPN protocols the terminator speaks, in its order of preference: the
 * server chooses (RFC 7301 §3.2). Node's own list for `allowHTTP1` stops at
 * http/1.1, so a client that offers only http/1.0 (`curl --http1.0`) failed
 * its handshake, though the HTTP/1 side serves a 1.0 request like any other.
 */
const ALPN_PROTOCOLS = ['h2', 'http/1.1', 'http/1.0'];

/**
 * The protocol for a client that offered ALPN (one that offers none is not
 * asked and gets HTTP/1.1). Undefined when it offered none of ours: Node then
 * ends the handshake with a fatal no_application_protocol alert, as RFC 7301
 * §3.2 says and nginx and Go do. Going on without ALPN instead would leave a
 * client that asked only for something else (spdy/3, an h2 draft) to guess
 * what it is talking to; the alert tells it at once, and the log says why.
 */
function selectAlpn({ protocols }: { protocols: string[] }): string | undefined {
  return ALPN_PROTOCOLS.find((p) => protocols.includes(p));
}

/**
 * Node's connection handler, taking http/1.0 connections to its HTTP/1 side.
 * It serves HTTP/1 only to a connection whose ALPN says http/1.1 or nothing
 * and takes any other for HTTP/2, so an http/1.0 one is shown to it as
 * http/1.1 for that decision; the socket keeps what was negotiated.
 */
function takingHttp10ToHttp1(handler: (socket: TLSSocket) => void): (socket: TLSSocket) => void {
  return (socket) => {
    if (socket.alpnProtocol !== 'http/1.0') {
      handler(socket);
      return;
    }
    socket.alpnProtocol = 'http/1.1';
    try {
      handler(socket);
    } finally {
      socket.alpnProtocol = 'http/1.0';
    }
  };
}

/** The SNI name a terminated connection was opened for, as routed; undefined without one. */
function socketSni(socket: unknown): string | undefined {
  const name = (socket as TLSSocket).servername;
  return typeof name === 'string' ? sniName(name) : undefined;
}

/**
 * An SNI name spelled as the ClientHello parser routed it: lower case, no
 * trailing dot. The parser already refused anything but a DNS name.
 */
function sniName(name: string): string {
  const lower = name.toLowerCase();
  return lower.endsWith('.') ? lower.slice(0, -1) : lower;
}
