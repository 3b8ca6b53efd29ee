import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import {
  createServer as createHttp2Server,
  type Http2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Session,
} from 'node:http2';
import type { Socket } from 'node:net';
import { normalizeHost, TCP_KEEPALIVE } from '@burrow/shared';
import {
  type ClientRequest,
  type ClientResponse,
  clientIp,
  type ForwardOptions,
  forwardRequest,
  recordAccess,
  requestHost,
} from '../proxy/forward.js';
import { Http1Front, resumingAfter, takeConnectionHandler } from '../proxy/http1-front.js';
import type { Http1Pool } from '../proxy/http1-pool.js';
import { forwardUpgrade, refuseConnect } from '../proxy/upgrade.js';
import { MAX_REQUEST_HEAD, MAX_REQUEST_HEADERS } from '../proxy/validate-request.js';
import { answerClientErrors } from './client-errors.js';
import { H2_SERVER_OPTIONS, manageSessions } from './http2-sessions.js';
import { oneAtATime } from './one-at-a-time.js';

export interface HttpListenerOptions extends ForwardOptions {
  /** Time allowed for a client to send the request head, ms (slowloris bound). */
  headersTimeout: number;
  /** Idle time before a keep-alive client connection is closed, ms. */
  keepAliveTimeout: number;
  /** Answers a request itself (ACME challenge, HTTPS redirect) instead of forwarding it; true when it did. */
  intercept?: (req: ClientRequest, res: ClientResponse) => boolean;
  /** Whether `intercept` may answer a request for this host and target (such requests skip the fast path). */
  intercepts?: (host: string, target: string) => boolean;
  /** The relay's pool of HTTP/1.1 upstreams; without one, no fast path: Node's parser reads every request. */
  upstreams?: Http1Pool;
}

/**
 * How often Node checks request-head deadlines (its default is 30 s, which
 * would let a slow client outlive a short headersTimeout by that much): a
 * quarter of the deadline, so it holds within 25 %, between 50 ms and 1 s.
 */
export function headCheckInterval(headersTimeout: number): number {
  return Math.max(50, Math.min(1_000, Math.floor(headersTimeout / 4)));
}

/**
 * Whether `opts.intercept` answered the request itself (an HTTPS redirect, an
 * ACME challenge). Such an answer gets its access line and counts in the
 * metrics like any other, with no route.
 */
function intercepted(opts: HttpListenerOptions, req: ClientRequest, res: ClientResponse): boolean {
  const started = performance.now();
  if (!opts.intercept?.(req, res)) return false;
  res.once('finish', () =>
    recordAccess(opts, {
      host: normalizeHost(requestHost(req)),
      route: '',
      method: req.method ?? '',
      path: req.url ?? '',
      status: res.statusCode,
      bytesIn: 0,
      bytesOut: Number(res.getHeader('content-length')) || 0,
      durationMs: Math.round((performance.now() - started) * 1000) / 1000,
      client: clientIp(req.socket.remoteAddress),
    }),
  );
  return true;
}

/**
 * The public HTTP listener. Each request is routed by its own Host, so a
 * keep-alive connection may switch hostnames. Every connection starts on the
 * fast path (Http1Connection), which carries plain HTTP/1.1 requests to
 * agents that serve `http1` streams; at the first request it does not carry,
 * it hands the connection to Node's parser and the general path below, for
 * the rest of the connection's life.
 */
export function createHttpListener(opts: HttpListenerOptions): Server {
  const server = createServer({
    // Bodies stream without a size or time cap (uploads, SSE, downloads); only
    // the head has a deadline.
    requestTimeout: 0,
    headersTimeout: opts.headersTimeout,
    connectionsCheckingInterval: headCheckInterval(opts.headersTimeout),
    keepAliveTimeout: opts.keepAliveTimeout,
    maxHeaderSize: MAX_REQUEST_HEAD,
    // A request without Host is refused by the router, with its code (no_host), not by Node's bare 400.
    requireHostHeader: false,
    ...TCP_KEEPALIVE,
  });
  server.maxHeadersCount = MAX_REQUEST_HEADERS;
  const requests = oneAtATime((req: IncomingMessage, res: ServerResponse) => {
    if (intercepted(opts, req, res)) return;
    forwardRequest(opts, req, res).catch((err) => {
      opts.logger.error({ err }, 'request handling failed');
      res.destroy();
    });
  }, opts.logger);
  server.on('request', requests.handle);
  server.on('connect', (req, socket: Socket) => {
    refuseConnect(opts, req, socket).catch((err) => {
      opts.logger.error({ err }, 'CONNECT handling failed');
      socket.destroy();
    });
  });
  server.on('upgrade', (req, socket, head) => {
    forwardUpgrade(opts, req, socket, head).catch((err) => {
      opts.logger.error({ err }, 'upgrade handling failed');
      socket.destroy();
    });
  });
  answerClientErrors(server, requests, opts);
  if (!opts.upstreams) return server;
  // Node's own connection handler stays the way into its parser; the fast path goes
  // first, and hands over what it does not carry: HTTP/1 to Node's parser, and
  // HTTP/2 with prior knowledge to the h2c server.
  const nodeConnection = resumingAfter(takeConnectionHandler(server, 'connection'));
  const h2c = createH2cServer(opts);
  const fast = new Http1Front(opts, opts.upstreams, (socket, unread, fresh) => {
    // The preface opens a connection (RFC 9113 §3.4); after a request, Node's parser refuses it.
    if (!fresh || !unread.subarray(0, PREFACE.byteLength).equals(PREFACE)) {
      nodeConnection(socket);
      return;
    }
    // node:http2 ends a session when its socket closes; one that stays half-open after the
    // client's FIN (node:http's default) would keep every stream of a client that left.
    socket.allowHalfOpen = false;
    h2c.server.emit('connection', socket);
  });
  server.on('connection', (socket: Socket) => fast.accept(socket));
  // Drains reach every kind of connection; h2c clients get GOAWAY.
  const closeIdle = server.closeIdleConnections.bind(server);
  const closeAll = server.closeAllConnections.bind(server);
  server.closeIdleConnections = () => {
    closeIdle();
    fast.closeIdle();
    for (const session of h2c.sessions) session.close();
  };
  server.closeAllConnections = () => {
    closeAll();
    fast.destroyAll();
    for (const session of h2c.sessions) session.destroy();
  };
  return server;
}

/**
 * How every HTTP/2 connection starts (RFC 9113 §3.4), up to the blank line
 * the fast path waits for before it gives a connection up: all of it is in
 * the bytes handed over.
 */
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\n');

/**
 * HTTP/2 over plain TCP with prior knowledge (RFC 9113 §3.3), as gRPC
 * clients speak it without TLS. Connections come from the fast path, which
 * sees the preface where a request line would be; node:http2 takes the bytes
 * already read from the paused socket. Requests go through the general path
 * like any other, after the same redirect to HTTPS for names served over TLS.
 */
function createH2cServer(opts: HttpListenerOptions): {
  server: Http2Server;
  sessions: ReadonlySet<ServerHttp2Session>;
} {
  const server = createHttp2Server(H2_SERVER_OPTIONS);
  const sessions = manageSessions(server, opts);
  const forward = (req: Http2ServerRequest, res: Http2ServerResponse) => {
    if (intercepted(opts, req, res)) return;
    forwardRequest(opts, req, res).catch((err) => {
      opts.logger.error({ err }, 'request handling failed');
      res.destroy();
    });
  };
  server.on('request', forward);
  // The compatibility layer routes an HTTP/2 CONNECT here, with its response; forwardRequest refuses it.
  server.on('connect', forward);
  return { server, sessions };
}
