import {
  type ClientRequest,
  request as httpRequest,
  type IncomingMessage,
  type RequestOptions,
} from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import {
  dropWritesAfterPeerClose,
  type HeaderPairs,
  type Http1Open,
  type HttpOpen,
  type Logger,
  MAX_RESPONSE_HEAD,
  pairsFromRaw,
  Reason,
  rawFromPairs,
  resetConnection,
  type Stream,
  splice,
  stripHopByHop,
  TCP_KEEPALIVE_DELAY,
  type TcpOpen,
  writeMessage,
} from '@burrow/shared';
import type { Dispatcher } from 'undici';
import type { Route } from '../routes/source.js';
import { isH2c } from '../routes/validate.js';
import { failExchange, logExchangeEnd, socketFailure, unanswered } from './failure.js';
import { type H2Context, H2Sessions, serveH2 } from './h2.js';
import { hasBody, headFrom, unsupportedCoding } from './head.js';
import { BACKEND_RESET, DEFAULT_CONNECT_TIMEOUT, type PoolOptions, TargetPool } from './pool.js';
import { type TargetAddress, targetAddress } from './target.js';
import { serveTcpStream, type TcpServeOptions } from './tcp.js';

/** Opens the backend side of a stream the relay opened for one of our routes. */
export interface Dialer {
  /** Serves one HTTP stream for `route` (already checked to be announced). Never throws. */
  serve(stream: Stream, meta: HttpOpen, route: Route): void;
  /** Serves one raw stream (TLS passthrough or a TCP port) for `route`: spliced to its target. Never throws. */
  serveTcp(stream: Stream, meta: TcpOpen, route: Route): void;
  /** Serves one `http1` upstream stream for `route`: spliced to a connection to its target. Never throws. */
  serveHttp1(stream: Stream, meta: Http1Open, route: Route): void;
  /** The route set changed: idle connections to targets no longer in it are closed. */
  retain(routes: readonly Route[]): void;
  /** Closes every pooled connection. */
  close(): void;
}

export interface DialerOptions {
  logger: Logger;
  /** Time allowed to establish a backend connection (TCP, and TLS for https targets), ms. Default 10 s. */
  connectTimeout?: number;
  pool?: PoolOptions;
  /** Called once per failed backend exchange or connection with the wire reason name (metrics). */
  onFailure?: (reason: string) => void;
  /**
   * How long an `http1` stream of a route that was withdrawn, or whose target
   * changed, may go on before it is reset, ms: the exchange in flight on it
   * finishes, no relay can send requests on it for good. Default 10 s.
   */
  withdrawGrace?: number;
}

/** Default of DialerOptions.withdrawGrace: above the relay's 4 s for idle upstreams. */
const WITHDRAW_GRACE = 10_000;

/** Methods a retry cannot make happen twice (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);
/** How a keep-alive socket the backend closed while we reused it shows up (node:http, undici). */
const STALE_SOCKET = new Set(['ECONNRESET', BACKEND_RESET, 'EPIPE', 'UND_ERR_SOCKET']);
/**
 * undici's socket errors for a backend that did answer, with something it
 * cannot read (an unsolicited 100 Continue, a response with no request): the
 * request was processed, and sending it again would process it twice.
 */
const ANSWERED = new Set(['bad response', 'bad upgrade']);

/**
 * The request body for undici, fed from the tunnel stream with backpressure.
 * undici destroys a body it stops reading (the backend failed or closed);
 * this one ends there and leaves the stream to us, so the failure is reported
 * with its own reason, and bytes the client still sends after a complete
 * response are drained instead of stalling the stream.
 */
/**
 * An error of the HTTP/1.1 parser that read the backend's response head
 * (undici's HTTPParserError, node:http's HPE_ codes), of its size limit, or a
 * length undici could not frame the body by (two Content-Length fields, or
 * one beside Transfer-Encoding): before any head was passed on, the backend
 * answered with something that cannot be.
 */
function unparsable(err: Error & { code?: string }): boolean {
  const code = err.code ?? '';
  return (
    err.name === 'HTTPParserError' ||
    code.startsWith('HPE_') ||
    code === 'UND_ERR_HEADERS_OVERFLOW' ||
    code === 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH'
  );
}

function requestBody(stream: Stream): Readable {
  const body = new Readable({ read: () => stream.resume() });
  const onData = (chunk: Buffer) => {
    if (!body.push(chunk)) stream.pause();
  };
  const onEnd = () => body.push(null);
  stream.on('data', onData);
  stream.once('end', onEnd);
  body.once('close', () => {
    stream.off('data', onData);
    stream.off('end', onEnd);
    if (!stream.readableEnded) stream.resume();
  });
  return body;
}

export function createDialer(options: DialerOptions): Dialer {
  return new BackendDialer(options);
}

class BackendDialer implements Dialer {
  readonly #log: Logger;
  readonly #connectTimeout: number;
  readonly #pool: TargetPool;
  readonly #h2: H2Context;
  readonly #onFailure: ((reason: string) => void) | undefined;
  /** Live `http1` streams and the route each was opened for. */
  readonly #upstreams = new Map<Stream, Route>();
  readonly #withdrawGrace: number;

  constructor(options: DialerOptions) {
    this.#onFailure = options.onFailure;
    this.#withdrawGrace = options.withdrawGrace ?? WITHDRAW_GRACE;
    this.#log = options.logger;
    this.#connectTimeout = options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT;
    this.#pool = new TargetPool({ connectTimeout: this.#connectTimeout, ...options.pool });
    this.#h2 = {
      sessions: new H2Sessions(this.#connectTimeout),
      connectTimeout: this.#connectTimeout,
      report: { log: this.#log, onFailure: this.#onFailure },
    };
  }

  serve(stream: Stream, meta: HttpOpen, route: Route): void {
    if (isH2c(route)) {
      serveH2(stream, meta, route, this.#h2);
      return;
    }
    new Exchange(stream, meta, route, this.#pool, this.#connectTimeout, this.#log, this.#onFailure).start();
  }

  serveTcp(stream: Stream, meta: TcpOpen, route: Route): void {
    serveTcpStream(stream, meta, route, this.#spliceOptions);
  }

  serveHttp1(stream: Stream, meta: Http1Open, route: Route): void {
    this.#upstreams.set(stream, route);
    stream.once('close', () => this.#upstreams.delete(stream));
    serveTcpStream(stream, meta, route, this.#spliceOptions);
  }

  get #spliceOptions(): TcpServeOptions {
    return { connectTimeout: this.#connectTimeout, log: this.#log, onFailure: this.#onFailure };
  }

  retain(routes: readonly Route[]): void {
    this.#pool.retain(new Set(routes.map((r) => TargetPool.key(r.target, r.tlsInsecure === true))));
    this.#h2.sessions.retain(new Set(routes.filter(isH2c).map((r) => r.target)));
    // An `http1` stream carries whatever requests the relay writes on it, checked against the
    // route only when it opened. The relay reuses none opened before an announcement; one that
    // went on sending on a withdrawn route would reach its backend for as long as it liked.
    const now = new Map(routes.map((r) => [r.id, r]));
    for (const [stream, route] of this.#upstreams) {
      const current = now.get(route.id);
      if (current && current.target === route.target && current.tlsInsecure === route.tlsInsecure) continue;
      this.#upstreams.delete(stream);
      const timer = setTimeout(
        () => stream.reset(Reason.RouteUnknown, `route "${route.id}" was withdrawn or changed`),
        this.#withdrawGrace,
      );
      timer.unref();
      stream.once('close', () => clearTimeout(timer));
    }
  }

  close(): void {
    this.#pool.destroy();
    this.#h2.sessions.destroy();
  }
}

/**
 * One request and its response between a tunnel stream and the backend. The
 * stream's data is the request body (FIN ends it); the response head goes
 * back as one length-prefixed message, then the body, then FIN. After a 101
 * the stream and the backend socket are spliced together.
 */
class Exchange {
  readonly #stream: Stream;
  #meta: HttpOpen;
  readonly #route: Route;
  readonly #pool: TargetPool;
  readonly #connectTimeout: number;
  readonly #log: Logger;
  readonly #started = performance.now();
  /** The target's address, parsed when first needed (node:http requests and error messages). */
  #address: TargetAddress | undefined;
  /** Cancels the undici request (set once it is dispatched). */
  #abort: ((err?: Error) => void) | undefined;
  #complete = false;
  #req: ClientRequest | undefined;
  #res: IncomingMessage | undefined;
  #upgraded: Socket | undefined;
  #status = 0;
  #headSent = false;
  #failed: string | undefined;
  #attempts = 0;
  readonly #onFailure: ((reason: string) => void) | undefined;

  constructor(
    stream: Stream,
    meta: HttpOpen,
    route: Route,
    pool: TargetPool,
    connectTimeout: number,
    log: Logger,
    onFailure?: (reason: string) => void,
  ) {
    this.#onFailure = onFailure;
    this.#stream = stream;
    this.#meta = meta;
    this.#route = route;
    this.#pool = pool;
    this.#connectTimeout = connectTimeout;
    this.#log = log;
  }

  get #target(): TargetAddress {
    this.#address ??= targetAddress(this.#route.target);
    return this.#address;
  }

  get #where(): string {
    return this.#target.where;
  }

  start(): void {
    const stream = this.#stream;
    // Errors here are resets from the relay (the client went away) or the session
    // closing; 'close' below cleans up after both.
    stream.on('error', () => {});
    stream.on('close', () => this.#onStreamClose()); // 'close' comes once; `on` costs less than `once`
    this.#send();
  }

  #send(): void {
    // undici sends only paths that start with '/' (or absolute URLs), so the
    // asterisk form (`OPTIONS *`) takes node:http too.
    if (this.#meta.upgrade || this.#meta.path === '*') this.#sendWithNodeHttp();
    else this.#dispatch();
  }

  /**
   * An ordinary request goes through undici's dispatcher: no request, response
   * or socket stream objects per request, raw header arrays, and a pool that
   * writes each request head in one system call.
   */
  #dispatch(): void {
    this.#attempts++;
    const stream = this.#stream;
    const meta = this.#meta;
    const withBody = hasBody(meta);
    // Without a body, bytes that arrive anyway are dropped: sent after a head that
    // did not announce them, a backend would read them as the next request.
    if (!withBody) stream.resume();
    const headers: string[] = [];
    for (const [k, v] of stripHopByHop(meta.headers)) {
      // The relay answered `Expect: 100-continue` already; undici refuses the field.
      if (k.length === 6 && k.toLowerCase() === 'expect') continue;
      headers.push(k, v);
    }
    const dispatcher = this.#pool.dispatcherFor(this.#route.target, this.#route.tlsInsecure === true);
    const { https, host } = this.#target;
    dispatcher.dispatch(
      {
        path: meta.path,
        method: meta.method,
        headers,
        // undici would name the TLS server after Host, and drop its pooled connection whenever
        // Host changes. One name per target instead; the pool's connector sends the target's
        // name, or none for an IP address.
        ...(https ? { servername: host } : {}),
        // With no Content-Length among the headers, undici sends the body chunked.
        body: withBody ? requestBody(stream) : null,
      },
      {
        onConnect: (abort: (err?: Error) => void) => {
          this.#abort = abort;
          // undici hands out abort only once the request has a connection: a
          // stream reset while it waited (for a connect, or a free pool slot)
          // had nothing to cancel then, so it is cancelled now.
          if (stream.destroyed) abort(new Error('the tunnel stream closed'));
        },
        onHeaders: (status: number, raw: Buffer[], resume: () => void, statusText: string) =>
          this.#onHeaders(status, raw, resume, statusText),
        onData: (chunk: Buffer) => stream.write(chunk),
        onComplete: () => {
          if (this.#complete) return; // ended with its head (204, 304, HEAD)
          this.#complete = true;
          stream.end();
        },
        onError: (err: Error & { code?: string }) => this.#onDispatchError(err, withBody),
      } as Dispatcher.DispatchHandler,
    );
  }

  #onHeaders(status: number, raw: Buffer[], resume: () => void, statusText: string): boolean {
    // 1xx informational responses (103 Early Hints) are not passed on; the final response follows.
    if (status < 200) return true;
    const stream = this.#stream;
    this.#status = status;
    const pairs: HeaderPairs = [];
    for (let i = 0; i + 1 < raw.length; i += 2)
      pairs.push([raw[i]!.toString('latin1'), raw[i + 1]!.toString('latin1')]);
    const head = unsupportedCoding(pairs) ?? headFrom(status, statusText, stripHopByHop(pairs));
    if (typeof head === 'string') {
      this.#fail(Reason.InvalidResponse, head);
      this.#abort?.(new Error(head));
      return false;
    }
    this.#headSent = true;
    writeMessage(stream, head);
    if (status === 204 || status === 304 || this.#meta.method === 'HEAD') {
      // No body follows, whatever Content-Length says (RFC 9110 §8.6 lets a 304
      // carry the representation's). undici checks that length against the
      // empty body for HEAD only and fails a 304: the response is complete now.
      this.#complete = true;
      stream.end();
      return true;
    }
    // undici pauses the backend socket when onData returns false (the stream's buffer is full).
    // 'drain' can come while undici is parsing another response (a write to that one's
    // stream let the session send this one's queued data), and undici's parser must not
    // be re-entered: resume once the current parse is over.
    stream.on('drain', () => process.nextTick(resume));
    return true;
  }

  #onDispatchError(err: Error & { code?: string }, withBody: boolean): void {
    if (this.#complete) return; // a bodiless response already went out whole
    const stream = this.#stream;
    if (stream.destroyed || this.#failed !== undefined) return; // we aborted it, or it failed already
    const code = err.code ?? '';
    if (this.#headSent) {
      this.#fail(
        Reason.BackendError,
        `backend closed the connection before the response was complete (${socketFailure(code, err.message)})`,
        code,
      );
      return;
    }
    if (unparsable(err)) return this.#failUnparsable(code, err.message);
    if (
      STALE_SOCKET.has(code) &&
      !ANSWERED.has(err.message) &&
      this.#attempts < 2 &&
      !withBody &&
      IDEMPOTENT.has(this.#meta.method)
    ) {
      // Most likely a keep-alive socket the backend closed as we reused it: nothing was processed.
      this.#logRetry(code);
      this.#dispatch();
      return;
    }
    this.#failUnanswered(code === 'UND_ERR_CONNECT_TIMEOUT', code, err.message);
  }

  /** The backend answered with a head its parser refused. */
  #failUnparsable(code: string, message: string): void {
    const why = code ? `${code}: ${message}` : message;
    this.#fail(Reason.InvalidResponse, `the backend's response head is invalid (${why})`, code);
  }

  #logRetry(code: string): void {
    this.#log.debug(
      { route: this.#route.id, target: this.#route.target, code },
      'retrying on a new connection',
    );
  }

  /** The backend gave no response: the connection timed out, was refused, or failed otherwise. */
  #failUnanswered(timedOut: boolean, code: string, message: string): void {
    this.#fail(...unanswered(timedOut, code, message, this.#connectTimeout));
  }

  /**
   * Upgrade requests (WebSocket and others) go through node:http, which hands
   * over the socket after a 101; so does `OPTIONS *`. Neither has a body.
   * An upgrade gets a connection of its own, never one from the pool nor back
   * into it: one the backend declined would otherwise serve the next request,
   * and a request that announced a body it never sent would make the backend
   * read that next request as the body.
   */
  #sendWithNodeHttp(): void {
    this.#attempts++;
    const stream = this.#stream;
    const meta = this.#meta;
    const { https, host, port, serverName } = this.#target;
    if (!meta.upgrade && hasBody(meta)) {
      this.#fail(Reason.BackendError, `a ${meta.method} ${meta.path} request with a body is not supported`);
      return;
    }
    // node:http would send the field and no body on a pooled connection, which the backend
    // would then read the next request from as that body.
    const framing = meta.headers.find(
      ([k, v]) => /^transfer-encoding$/i.test(k) || (/^content-length$/i.test(k) && v.trim() !== '0'),
    );
    if (!meta.upgrade && framing) {
      this.#fail(
        Reason.BadMetadata,
        `${meta.method} ${meta.path}: framing fields on a request without a body`,
      );
      return;
    }
    const insecure = this.#route.tlsInsecure === true;
    const options: RequestOptions & { rejectUnauthorized?: boolean } = {
      ...(meta.upgrade
        ? { agent: false, ...(https ? { rejectUnauthorized: !insecure } : {}) }
        : { agent: this.#pool.agentFor(this.#route.target, insecure) }),
      host,
      port,
      // node:https would take the TLS server name from Host; '' sends none (an IP target).
      ...(https ? { servername: serverName ?? '' } : {}),
      method: meta.method,
      path: meta.path,
      // The relay already removed hop-by-hop fields and set X-Forwarded-*; Host stays as the client sent it.
      headers: rawFromPairs(stripHopByHop(meta.headers, meta.upgrade)),
      setHost: false,
      maxHeaderSize: MAX_RESPONSE_HEAD,
    };
    const req = (https ? httpsRequest : httpRequest)(options);
    this.#req = req;

    let connected = false;
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      req.destroy(new Error(`no connection within ${this.#connectTimeout} ms`));
    }, this.#connectTimeout);
    const onConnected = () => {
      connected = true;
      clearTimeout(timer);
    };
    req.once('socket', (socket: Socket) => {
      // A pooled keep-alive socket is connected already; a new one is bounded by the timer.
      if (!socket.connecting) onConnected();
      else socket.once(https ? 'secureConnect' : 'connect', onConnected);
    });

    req.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      if (this.#req !== req || stream.destroyed) return; // superseded by a retry, or we aborted it
      const code = err.code ?? '';
      if (this.#headSent) {
        // The response is on its way or done: the backend stopped reading.
        if (this.#upgraded || this.#res?.complete) return;
        this.#fail(
          Reason.BackendError,
          `backend connection failed: ${socketFailure(code, err.message)}`,
          code,
        );
        return;
      }
      if (unparsable(err)) return this.#failUnparsable(code, err.message);
      if (
        req.reusedSocket &&
        STALE_SOCKET.has(code) &&
        this.#attempts < 2 &&
        stream.bytesIn === 0 &&
        IDEMPOTENT.has(meta.method)
      ) {
        // The backend closed an idle keep-alive socket as we reused it: nothing was processed.
        this.#logRetry(code);
        this.#sendWithNodeHttp();
        return;
      }
      this.#failUnanswered(timedOut || (!connected && code === 'ETIMEDOUT'), code, err.message);
    });

    req.on('response', (res) => {
      clearTimeout(timer);
      this.#onResponse(res);
    });
    req.on('upgrade', (res: IncomingMessage, socket: Socket, head: Buffer) => {
      clearTimeout(timer);
      this.#onUpgrade(res, socket, head);
    });
    // Before a 101 the relay sends nothing on an upgrade stream: the request has no body.
    if (!meta.upgrade) stream.resume();
    req.end();
  }

  #onResponse(res: IncomingMessage): void {
    const stream = this.#stream;
    this.#res = res;
    this.#status = res.statusCode ?? 0;
    const pairs = pairsFromRaw(res.rawHeaders);
    const head = unsupportedCoding(pairs) ?? headFrom(this.#status, res.statusMessage, stripHopByHop(pairs));
    if (typeof head === 'string') {
      this.#fail(Reason.InvalidResponse, head);
      return;
    }
    this.#headSent = true;
    writeMessage(stream, head);
    // An upgrade the backend declined: the relay sends no more request bytes.
    if (this.#meta.upgrade) stream.resume();
    res.on('error', () => {}); // reported by 'close'
    res.once('close', () => {
      if (!res.complete) {
        this.#fail(Reason.BackendError, 'backend closed the connection before the response was complete');
      }
    });
    res.pipe(stream);
  }

  #onUpgrade(res: IncomingMessage, socket: Socket, head: Buffer): void {
    const stream = this.#stream;
    this.#upgraded = socket;
    this.#headSent = true;
    this.#status = res.statusCode ?? 101;
    // The socket left the pool; no idle timeout applies to a tunnelled connection.
    socket.setTimeout(0);
    socket.setKeepAlive(true, TCP_KEEPALIVE_DELAY);
    // Half-close is end to end: a FIN from the backend must not close our sending side.
    (socket as Socket & { allowHalfOpen: boolean }).allowHalfOpen = true;
    const response = headFrom(
      this.#status,
      res.statusMessage,
      stripHopByHop(pairsFromRaw(res.rawHeaders), true),
    );
    if (typeof response === 'string') {
      socket.destroy();
      this.#fail(Reason.BackendError, response);
      return;
    }
    writeMessage(stream, response);
    // Raw bytes from here on: a drain closes it once quiet, rather than waiting for it to end.
    stream.markRaw();
    if (head.byteLength > 0) stream.write(head);
    socket.on('error', (err: NodeJS.ErrnoException) =>
      this.#fail(
        Reason.BackendError,
        `backend connection failed: ${socketFailure(err.code, err.message)}`,
        err.code,
      ),
    );
    socket.on('close', () => {
      // A socket that ended cleanly has already ended the stream (splice); anything else is a failure.
      if (!stream.writableEnded) this.#fail(Reason.BackendError, 'backend closed the upgraded connection');
    });
    // A backend that ends and closes while the client still sends has not failed:
    // all it sent, then its end, goes out, and the client's bytes that follow are dropped.
    dropWritesAfterPeerClose(socket);
    splice(socket, stream);
    // A WebSocket may stay open for hours: keep only what the spliced
    // connection needs, not the request object and its headers.
    this.#req = undefined;
    this.#meta = { ...this.#meta, headers: [] };
  }

  #fail(reason: Reason, message: string, code?: string): void {
    if (this.#failed !== undefined || this.#stream.destroyed) return;
    const report = { log: this.#log, onFailure: this.#onFailure };
    this.#failed = failExchange(this.#stream, report, this.#route, this.#meta.method, reason, message, code);
  }

  #onStreamClose(): void {
    const stream = this.#stream;
    // Reset by either side (the client went away, or we failed): the backend exchange stops too.
    // A stream that finished both ways leaves the backend socket to end on its own, so
    // bytes still queued on it are delivered.
    if (stream.errored || !stream.writableFinished) {
      if (!this.#complete) this.#abort?.(new Error('the tunnel stream closed'));
      this.#req?.destroy();
      this.#res?.destroy();
      // RST, not FIN: after a half-close a FIN says nothing new, and the backend
      // would keep the connection until it next writes.
      resetConnection(this.#upgraded);
    }
    logExchangeEnd(this.#log, this.#route, stream, {
      method: this.#meta.method,
      status: this.#status,
      started: this.#started,
      failed: this.#failed,
      kind: { upgrade: this.#meta.upgrade || undefined },
    });
  }
}
