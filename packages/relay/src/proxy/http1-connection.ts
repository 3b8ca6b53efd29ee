import type { Socket } from 'node:net';
import { MAX_RESPONSE_HEAD, Reason, resetConnection, UpstreamTimeoutError } from '@burrow/shared';
import type { Binding } from '../routes/table.js';
import type { AgentConnection } from '../tunnel/agent-connection.js';
import {
  CLIENT_FORBIDDEN,
  closingResponse,
  cutCode,
  drainReset,
  failureFor,
  HEAD_TIMEOUT,
  INVALID_RESPONSE_HEAD,
  type ProxyFailure,
  rawErrorResponse,
  UploadStalledError,
} from './errors.js';
import {
  type AccessInfo,
  CLIENT_CLOSED,
  CLIENT_CLOSED_STATUS,
  clientIp,
  type ForwardOptions,
  forwardingFields,
  MAX_RETRIES,
  recordAccess,
  retryable,
} from './forward.js';
import {
  ChunkedEnd,
  type Framing,
  HeadBytes,
  INCOMPLETE,
  OTHER,
  parseRequestHead,
  parseResponseHead,
  type RequestHead,
} from './http1-parse.js';
import type { Http1Pool, Upstream, UpstreamUser } from './http1-pool.js';
import { MAX_REQUEST_HEAD, MAX_REQUEST_HEADERS } from './validate-request.js';

export interface Http1Options extends ForwardOptions {
  /** Idle time before a keep-alive client connection is closed, ms. */
  keepAliveTimeout: number;
  /** Time allowed for a client to send a request head, ms. */
  headersTimeout: number;
  /** Whether the listener answers this request itself (ACME, redirects): such requests take Node's parser. */
  intercepts?: (host: string, target: string) => boolean;
  /**
   * On terminated TLS: the SNI name the connection was opened for. Requests
   * for any other host take Node's parser, which answers 421 where the
   * routes differ (see ForwardOptions.sniOf).
   */
  serverName?: (socket: Socket) => string | undefined;
}

const CRLF = Buffer.from('\r\n');
const LAST_CHUNK = Buffer.from('0\r\n\r\n');
const CONTINUE = Buffer.from('HTTP/1.1 100 Continue\r\n\r\n');
/** A backend that closed its connection before a response: answered as the agent reports a failed exchange. */
const BACKEND_CLOSED = { code: 'BURROW_ERR_STREAM_RESET', reason: Reason.BackendError };
/** Methods a retry cannot make happen twice (RFC 9110 §9.2.2). */
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']);

/**
 * The lines that end every response head on a connection: Connection (and
 * Keep-Alive), then the listener's own fields (HSTS on terminated TLS).
 */
interface ResponseTails {
  keepAlive: string;
  close: string;
}

const tails = new WeakMap<Http1Options, ResponseTails>();

/** The response tails of a listener, built once per listener (its options never change). */
function responseTails(opts: Http1Options): ResponseTails {
  let t = tails.get(opts);
  if (!t) {
    let extra = '';
    for (const [k, v] of opts.responseHeaders ?? []) extra += `${k}: ${v}\r\n`;
    t = {
      keepAlive: `Connection: keep-alive\r\nKeep-Alive: timeout=${Math.floor(opts.keepAliveTimeout / 1000)}\r\n${extra}`,
      close: `Connection: close\r\n${extra}`,
    };
    tails.set(opts, t);
  }
  return t;
}

/** One request on its way through an upstream, and its response. */
interface Exchange {
  readonly head: RequestHead;
  readonly binding: Binding<AgentConnection>;
  readonly started: number;
  /** The request as sent to the agent, kept while a retry may send it again. */
  readonly sent: Buffer | undefined;
  attempts: number;
  /** Request body bytes still to come from the client. */
  bodyLeft: number;
  bytesIn: number;
  bytesOut: number;
  /** Status sent to the client; 0 before the response head. */
  status: number;
  /** The response is server-sent events, which a drain may end (see #drainEnds). */
  eventStream: boolean;
  /** The client connection ends after this response. */
  close: boolean;
  error?: string;
}

/**
 * Takes a connection the fast path does not carry: `socket` is paused, and
 * `unread` (the bytes read from it and not consumed, unshifted back onto it)
 * is there to look at; reading `socket` here would disturb its flow state.
 * `fresh`: no request was read from the connection before, so `unread`
 * starts with its first byte.
 */
export type Handoff = (socket: Socket, unread: Buffer, fresh: boolean) => void;

const EMPTY = Buffer.alloc(0);

/**
 * Whether a response is an event stream a drain may end as complete once it is
 * quiet: server-sent events with no length, answering a GET (EventSource's
 * only method; it reconnects). One answering a POST (an LLM completion, an MCP
 * Streamable HTTP answer) ends by itself, and a client reading it with fetch
 * takes a clean end for the whole answer: it is waited for as any response.
 */
function endlessEvents(method: string, eventStream: boolean, framing: string): boolean {
  return eventStream && method === 'GET' && (framing === 'chunked' || framing === 'close');
}

/**
 * The relay's fast path for plain HTTP/1.1 (ADR 006), one client connection.
 * Each exchange borrows an upstream from the pool (http1-pool.ts): an `http1`
 * tunnel stream the agent has spliced to a kept-alive backend connection.
 * The relay parses the request head (http1-parse.ts), rewrites it (Host as
 * sent, forwarding fields set, hop-by-hop fields removed) and sends it with
 * its body as bytes; it reads the backend's response head and the body's
 * framing to know where the response ends, passes the bytes on, and gives
 * the upstream back. No Node HTTP machinery, no stream per request and no
 * JSON on the way.
 *
 * Anything outside the narrow shape the fast path carries (another method or
 * version, a chunked upload, Upgrade, an Expect other than 100-continue, an unknown host, a refused
 * client, a draining relay, an agent without `http1`) goes to Node's parser
 * and the general path at the next request boundary, with the bytes already
 * read: `handoff` is called with the socket paused, those bytes unshifted
 * (and given to it, to look at without reading), and starts reading it.
 */
export class Http1Connection {
  readonly #socket: Socket;
  readonly #opts: Http1Options;
  readonly #handoff: Handoff;
  readonly #onGone: (conn: Http1Connection) => void;
  readonly #client: string;
  readonly #serverName: string | undefined;
  /** Client bytes read but not yet consumed (a partial or pipelined request head). */
  #pending: Buffer | undefined;
  #ex: Exchange | undefined;
  /** The upstream lent to the exchange in flight. */
  #up: Upstream | undefined;
  readonly #pool: Http1Pool;
  readonly #user: UpstreamUser = {
    data: (chunk) => this.#responseData(chunk),
    ended: () => this.#streamEnd(),
    failed: (err) => this.#streamFailed(err),
    drained: () => this.#resumeClient(),
  };
  /** Response bytes before the whole head has arrived. */
  readonly #head = new HeadBytes(MAX_RESPONSE_HEAD);
  /** How the current response's body ends; undefined until its head is read. */
  #framing: Framing | undefined;
  /** Response body bytes still to come (`length` framing). */
  #bodyLeft = 0;
  #chunks: ChunkedEnd | undefined;
  /** The backend said it closes its connection after this response. */
  #backendCloses = false;
  /** Bounds a partial request head (headersTimeout). */
  #headTimer: NodeJS.Timeout | undefined;
  /** Bounds the wait for a response head (responseHeadTimeout). */
  #responseTimer: NodeJS.Timeout | undefined;
  /** Client reading paused for a full tunnel stream (request body) or a pipelined request. */
  #clientPaused = false;
  /** Upstream reading paused for a client that does not take the response as fast. */
  #streamPaused = false;
  /** A pipelined request waits for the client to take the responses before it. */
  #awaitingDrain = false;
  /** Closing or handed over: nothing more is read or started here. */
  #gone = false;
  /** A request was read from the connection. */
  #used = false;

  readonly #onData = (chunk: Buffer) => this.#clientData(chunk);
  readonly #onEnd = () => this.#clientEnd();
  readonly #onError = () => {}; // 'close' follows
  readonly #onClose = () => this.#clientClose();
  readonly #onDrain = () => {
    if (this.#streamPaused) {
      this.#streamPaused = false;
      this.#up?.stream.resume();
    }
    if (this.#awaitingDrain) {
      this.#awaitingDrain = false;
      this.#next();
    }
  };
  /**
   * The socket's idle timeout (keepAliveTimeout) ends a connection between
   * requests or one that is closing; while a request is in flight or a head
   * is arriving, other bounds apply (and the socket's timer re-arms with the
   * next byte either way).
   */
  readonly #onTimeout = () => {
    // A client that pipelined requests and reads nothing for as long is let go too.
    if (this.#gone || this.#awaitingDrain || (!this.#ex && !this.#pending)) this.#socket.destroy();
  };
  /** What this connection listens to on its socket, until it closes or is handed over. */
  readonly #listeners: ReadonlyArray<[string, (chunk: Buffer) => void]> = [
    ['data', this.#onData],
    ['end', this.#onEnd],
    ['error', this.#onError],
    ['close', this.#onClose],
    ['drain', this.#onDrain],
    ['timeout', this.#onTimeout],
  ];
  readonly #tails: ResponseTails;

  constructor(
    socket: Socket,
    opts: Http1Options,
    pool: Http1Pool,
    handoff: Handoff,
    onGone: (conn: Http1Connection) => void,
  ) {
    this.#socket = socket;
    this.#opts = opts;
    this.#pool = pool;
    this.#handoff = handoff;
    this.#onGone = onGone;
    this.#client = clientIp(socket.remoteAddress);
    this.#serverName = opts.serverName?.(socket);
    this.#tails = responseTails(opts);
    for (const [event, listener] of this.#listeners) socket.on(event, listener);
    socket.setTimeout(opts.keepAliveTimeout);
  }

  /**
   * Closes the connection if it is between requests, nothing in flight and
   * nothing half-read (a drain); one in flight ends after its response.
   */
  closeIfIdle(): void {
    if (this.#ex === undefined && this.#pending === undefined) this.#socket.destroy();
  }

  destroy(): void {
    this.#socket.destroy();
  }

  #clientData(chunk: Buffer): void {
    if (this.#gone) return; // closing: what the client still sends is not read
    const ex = this.#ex;
    if (ex && ex.bodyLeft > 0) {
      const n = Math.min(ex.bodyLeft, chunk.length);
      ex.bodyLeft -= n;
      ex.bytesIn += n;
      this.#sendUp(n === chunk.length ? chunk : chunk.subarray(0, n));
      if (ex.bodyLeft > 0) this.#responseTimer?.refresh();
      else if (ex.status === 0) this.#awaitResponse();
      if (n === chunk.length) return;
      chunk = chunk.subarray(n);
    }
    this.#pending = this.#pending ? Buffer.concat([this.#pending, chunk]) : chunk;
    if (ex) {
      // A pipelined request waits for the response before it; so does reading past a head's worth.
      if (this.#pending.length > MAX_REQUEST_HEAD) this.#pauseClient();
      return;
    }
    this.#next();
  }

  /** Starts the requests waiting in `#pending`, one at a time, or hands the connection over. */
  #next(): void {
    while (!this.#ex && this.#pending && !this.#gone) {
      // A client that pipelines requests and reads no responses gets no more answers buffered
      // for it than one response's worth: the next request starts once the socket drains.
      if (this.#socket.writableNeedDrain) {
        this.#awaitingDrain = true;
        this.#pauseClient();
        return;
      }
      const head = parseRequestHead(this.#pending, MAX_REQUEST_HEAD, MAX_REQUEST_HEADERS);
      if (head === INCOMPLETE) {
        this.#headTimer ??= setTimeout(() => this.#headTimeout(), this.#opts.headersTimeout);
        break;
      }
      clearTimeout(this.#headTimer);
      this.#headTimer = undefined;
      const binding = head === OTHER ? undefined : this.#route(head);
      if (!binding || !this.#start(head as RequestHead, binding)) {
        this.#giveUp();
        return;
      }
    }
    if (!this.#ex && !this.#gone) this.#resumeClient();
  }

  /** The agent connection for a request the fast path may carry, or undefined for Node's parser. */
  #route(head: RequestHead): Binding<AgentConnection> | undefined {
    const opts = this.#opts;
    if (opts.draining?.() || opts.intercepts?.(head.host, head.target)) return undefined;
    if (this.#serverName !== undefined && this.#serverName !== head.host) return undefined;
    const found = opts.table.lookup(head.host);
    if (found.kind !== 'found') return undefined;
    const b = found.binding;
    if (!b.http1 || !b.target.servesHttp1) return undefined;
    if (this.#forbidden(b)) return undefined;
    return b;
  }

  /** Whether the route's allowlist leaves this client out. */
  #forbidden(b: Binding<AgentConnection>): boolean {
    return b.allowlist !== undefined && !b.allowlist.allows(this.#socket.remoteAddress ?? '');
  }

  /** Sends the request at the head of `#pending`; false when no stream could be opened. */
  #start(head: RequestHead, binding: Binding<AgentConnection>): boolean {
    const opts = this.#opts;
    const fields = forwardingFields(this.#client, head.hostField, opts.proto);
    let text = `${head.method} ${head.target} HTTP/1.1\r\nHost: ${head.hostField}\r\n${head.fields}`;
    for (const [k, v] of fields) text += `${k}: ${v}\r\n`;
    const sent = Buffer.from(`${text}\r\n`, 'latin1');
    if (!this.#acquire(binding)) return false;
    this.#used = true;
    const pending = this.#pending!;
    const bodyNow = Math.min(head.length, pending.length - head.end);
    const ex: Exchange = {
      head,
      binding,
      started: performance.now(),
      sent: head.length === 0 ? sent : undefined,
      attempts: 0,
      bodyLeft: head.length - bodyNow,
      bytesIn: bodyNow,
      bytesOut: 0,
      status: 0,
      close: head.close,
      eventStream: false,
    };
    this.#ex = ex;
    const rest = head.end + bodyNow;
    this.#pending = rest < pending.length ? pending.subarray(rest) : undefined;
    // The relay answers Expect itself, at once, as Node's server does on the general path.
    if (head.expectContinue) this.#socket.write(CONTINUE);
    this.#sendUp(bodyNow > 0 ? Buffer.concat([sent, pending.subarray(head.end, rest)]) : sent);
    // The backend has until the response timeout after the whole request reached it, however
    // long the upload takes; an upload that stops for as long is cut.
    if (ex.bodyLeft === 0) this.#awaitResponse();
    else this.#responseTimer = setTimeout(() => this.#uploadStalled(ex), opts.responseHeadTimeout);
    if (this.#pending) this.#pauseClient();
    return true;
  }

  #awaitResponse(): void {
    clearTimeout(this.#responseTimer);
    this.#responseTimer = setTimeout(() => this.#noResponse(), this.#opts.responseHeadTimeout);
  }

  #uploadStalled(ex: Exchange): void {
    if (this.#ex !== ex) return;
    this.#failed(ex, new UploadStalledError('the request body stopped arriving'), 'upload stalled');
  }

  /** Borrows an upstream for `binding`'s route; false when none could be opened. */
  #acquire(binding: Binding<AgentConnection>): boolean {
    try {
      this.#up = this.#pool.acquire(binding, this.#user);
      return true;
    } catch {
      return false; // GOAWAY, stream limit: the general path answers (and retries elsewhere)
    }
  }

  /**
   * Gives the upstream back: to the pool after a whole exchange, closed when
   * it is spent, reset when the exchange on it was cut (`reset`).
   */
  #letGo(reset: boolean): void {
    // Whatever part of a response it sent goes with it: none of it may reach the next exchange's.
    this.#head.clear();
    this.#framing = undefined;
    this.#chunks = undefined;
    const up = this.#up;
    if (!up) return;
    this.#up = undefined;
    this.#streamPaused = false;
    if (reset || up.spent) this.#pool.discard(up, reset);
    else this.#pool.release(up);
  }

  #sendUp(bytes: Buffer): void {
    if (!this.#up!.stream.write(bytes)) this.#pauseClient();
  }

  #pauseClient(): void {
    if (this.#clientPaused) return;
    this.#clientPaused = true;
    this.#socket.pause();
  }

  #resumeClient(): void {
    if (!this.#clientPaused) return;
    // A pipelined request stays parked until the response before it is done.
    if (this.#ex && this.#ex.bodyLeft === 0 && this.#pending) return;
    this.#clientPaused = false;
    this.#socket.resume();
  }

  #responseData(chunk: Buffer): void {
    const ex = this.#ex!;
    if (this.#framing !== undefined) {
      this.#body(ex, chunk);
      return;
    }
    const bytes = this.#head.add(chunk);
    if (bytes === INCOMPLETE) return;
    // The head and the body that came with it leave in one system call.
    const socket = this.#socket;
    socket.cork();
    this.#readHead(ex, bytes);
    socket.uncork();
  }

  /** Reads the response head that `bytes` (all of it, or a reason it is bad) begins with. */
  #readHead(ex: Exchange, bytes: Buffer | string): void {
    for (let buf = bytes; ; ) {
      if (typeof buf === 'string') {
        this.#badHead(ex, buf);
        return;
      }
      const head = parseResponseHead(buf, ex.head.method, MAX_RESPONSE_HEAD);
      if (head === INCOMPLETE) return; // never: HeadBytes hands on a head with its blank line
      // A 101 cannot answer a request that asked for no upgrade.
      if (typeof head === 'string' || head.status === 101) {
        this.#badHead(ex, typeof head === 'string' ? head : 'status 101 without an upgrade request');
        return;
      }
      const rest = head.end < buf.length ? buf.subarray(head.end) : undefined;
      if (head.status < 200) {
        // 1xx informational responses are not passed on.
        const next = rest && this.#head.add(rest);
        if (next === undefined || next === INCOMPLETE) return;
        buf = next;
        continue;
      }
      clearTimeout(this.#responseTimer);
      ex.status = head.status;
      // A client still sending a body the backend no longer waits for gets its answer, then a close.
      ex.close ||= ex.bodyLeft > 0 || this.#opts.draining?.() === true;
      this.#framing = head.framing;
      this.#bodyLeft = head.length;
      this.#backendCloses = head.close;
      if (head.framing === 'chunked') this.#chunks = new ChunkedEnd();
      if (endlessEvents(ex.head.method, head.eventStream, head.framing)) {
        // An event stream never ends by itself: a drain ends it once it is quiet (#drainEnds),
        // and its upstream is not kept for another exchange.
        ex.eventStream = true;
        this.#up!.spent = true;
        this.#up!.stream.markRaw();
      }
      const tail = ex.close ? this.#tails.close : this.#tails.keepAlive;
      this.#write(Buffer.from(`${head.head}${tail}\r\n`, 'latin1'));
      if (head.framing === 'none' || (head.framing === 'length' && head.length === 0))
        this.#complete(ex, rest);
      else if (rest) this.#body(ex, rest);
      return;
    }
  }

  #badHead(ex: Exchange, reason: string): void {
    this.#opts.logger.warn({ host: ex.head.host, reason }, 'backend sent an invalid response head');
    this.#answerError(ex, INVALID_RESPONSE_HEAD);
  }

  #body(ex: Exchange, chunk: Buffer): void {
    switch (this.#framing) {
      case 'length': {
        const n = Math.min(this.#bodyLeft, chunk.length);
        this.#bodyLeft -= n;
        ex.bytesOut += n;
        this.#write(n === chunk.length ? chunk : chunk.subarray(0, n));
        if (this.#bodyLeft === 0) this.#complete(ex, n < chunk.length ? chunk.subarray(n) : undefined);
        return;
      }
      case 'chunked': {
        let end: number;
        try {
          end = this.#chunks!.scan(chunk);
        } catch (err) {
          this.#cut(ex, `backend sent a malformed chunked body: ${(err as Error).message}`, 'backend_error');
          return;
        }
        const part = end === -1 || end === chunk.length ? chunk : chunk.subarray(0, end);
        ex.bytesOut += part.length;
        this.#write(part);
        if (end !== -1) this.#complete(ex, end < chunk.length ? chunk.subarray(end) : undefined);
        return;
      }
      default: {
        // Framing 'close': everything until the backend's FIN, sent on as chunks.
        ex.bytesOut += chunk.length;
        const socket = this.#socket;
        socket.cork();
        socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
        socket.write(chunk);
        this.#write(CRLF);
        socket.uncork();
      }
    }
  }

  #write(bytes: Buffer): void {
    if (!this.#socket.write(bytes) && !this.#streamPaused && this.#up) {
      this.#streamPaused = true;
      this.#up.stream.pause();
    }
  }

  /** The response is whole: the access entry, then the next request (or the close). */
  #complete(ex: Exchange, extra: Buffer | undefined): void {
    this.#ex = undefined;
    clearTimeout(this.#responseTimer);
    // Bytes after the response, or a body the client never finished: the upstream is done.
    const broken = extra !== undefined || ex.bodyLeft > 0;
    if (this.#up && (broken || this.#backendCloses)) this.#up.spent = true;
    this.#record(ex);
    this.#letGo(broken);
    // Once a drain has begun, a connection ends with its current response.
    if (ex.close || this.#opts.draining?.() === true) {
      this.#finish();
      return;
    }
    this.#next();
  }

  #record(ex: Exchange): void {
    const info: AccessInfo = {
      host: ex.head.host,
      route: ex.binding.hostname,
      method: ex.head.method,
      path: ex.head.target,
      status: ex.status || CLIENT_CLOSED_STATUS,
      bytesIn: ex.bytesIn,
      bytesOut: ex.bytesOut,
      durationMs: Math.round((performance.now() - ex.started) * 1000) / 1000,
      client: this.#client,
      ...(ex.error ? { error: ex.error } : {}),
    };
    recordAccess(this.#opts, info);
  }

  /** The agent ended the stream: the backend closed its connection. */
  #streamEnd(): void {
    const ex = this.#ex!;
    if (this.#framing === 'close') {
      this.#socket.write(LAST_CHUNK);
      this.#complete(ex, undefined);
      return;
    }
    // Before any response, on a kept-alive backend connection: most likely one it closed as we reused it.
    if (ex.status === 0 && this.#retry(ex, this.#up!.reused)) return;
    this.#failed(ex, BACKEND_CLOSED, 'the backend closed the connection mid-response');
  }

  #streamFailed(err: Error): void {
    const ex = this.#ex!;
    if (this.#drainEnds(ex, err)) return;
    const stale = this.#up!.reused && (err as { reason?: number }).reason === Reason.BackendError;
    if (ex.status === 0 && this.#retry(ex, stale || retryable(err))) return;
    // A drain deadline's reset (the relay's own, or the agent's) is said as such.
    this.#failed(ex, err, cutCode(err) === 'drain_timeout' ? err.message : `agent: ${err.message}`);
  }

  /**
   * Ends an event stream that the relay's drain reset (quiet, or at the
   * drain timeout) with a well-formed last chunk, when its bytes so far end
   * at a chunk boundary: the client takes it for the end of the response and
   * reconnects, as EventSource does, where a cut would count as an error.
   */
  #drainEnds(ex: Exchange, err: Error): boolean {
    if (!ex.eventStream || drainReset(err) !== 'local') return false;
    if (this.#framing === 'chunked' ? !this.#chunks!.atBoundary : this.#framing !== 'close') return false;
    this.#socket.write(LAST_CHUNK);
    this.#complete(ex, undefined);
    return true;
  }

  /**
   * Sends a request that never reached a backend again on a new stream: the
   * agent refused it unprocessed (GOAWAY), or the backend closed a kept-alive
   * connection as it arrived. Only idempotent requests without a body.
   */
  #retry(ex: Exchange, allowed: boolean): boolean {
    if (!allowed || !ex.sent || ex.attempts >= MAX_RETRIES || !IDEMPOTENT.has(ex.head.method)) return false;
    if (!this.#head.empty) return false; // part of a response came
    ex.attempts++;
    this.#letGo(true);
    // Routed afresh, with every check of the first attempt: the name may now be served by a
    // connection whose route has an allowlist this client is outside of, or in another mode.
    const binding = this.#route(ex.head);
    if (!binding) {
      const found = this.#opts.table.lookup(ex.head.host);
      if (found.kind !== 'found' || !this.#forbidden(found.binding)) return false;
      this.#answerError(ex, CLIENT_FORBIDDEN);
      return true;
    }
    if (!this.#acquire(binding)) return false;
    this.#sendUp(ex.sent);
    return true;
  }

  /** The stream failed: an error page if nothing was answered yet, a cut connection otherwise. */
  #failed(ex: Exchange, err: unknown, cut: string): void {
    if (ex.status === 0) this.#answerError(ex, failureFor(err));
    else this.#cut(ex, cut, cutCode(err));
  }

  /** Answers the exchange with an error page (before any response byte) and drops the stream. */
  #answerError(ex: Exchange, { status, message, code }: ProxyFailure): void {
    clearTimeout(this.#responseTimer);
    ex.error = code;
    ex.status = status;
    ex.close ||= ex.bodyLeft > 0 || this.#opts.draining?.() === true;
    this.#letGo(true);
    this.#socket.write(
      rawErrorResponse(
        status,
        message,
        ex.head.host,
        code,
        ex.close ? this.#tails.close : this.#tails.keepAlive,
        ex.head.method === 'HEAD',
      ),
    );
    this.#complete(ex, undefined);
  }

  /** The response was cut after its head: the client must not take what it got for the whole. */
  #cut(ex: Exchange, reason: string, code: string): void {
    ex.error = code;
    this.#opts.logger.info({ host: ex.head.host, reason }, 'response cut short');
    this.#ex = undefined;
    this.#record(ex);
    this.#letGo(true);
    this.#gone = true;
    resetConnection(this.#socket);
  }

  #noResponse(): void {
    const ex = this.#ex;
    // Only a request still waiting for its response head.
    if (!ex) return;
    if (ex.status !== 0) return;
    this.#answerError(ex, failureFor(new UpstreamTimeoutError('no response head in time')));
  }

  #headTimeout(): void {
    this.#headTimer = undefined;
    if (this.#ex || this.#gone) return;
    this.#opts.logger.info(
      { code: 'ERR_HTTP_REQUEST_TIMEOUT', client: this.#client },
      'bad request from client',
    );
    this.#gone = true;
    this.#socket.end(closingResponse(HEAD_TIMEOUT));
  }

  /**
   * The client sent FIN. As Node's HTTP server does, that ends the connection:
   * a request in flight counts as abandoned ('close' cancels it at the agent).
   */
  #clientEnd(): void {
    this.#finish();
  }

  /** Ends the client connection after what was written; a request still in flight is abandoned. */
  #finish(): void {
    this.#gone = true;
    this.#letGo(true);
    // A client that never closes its side is not waited for: #onTimeout destroys it.
    this.#socket.end();
  }

  #clientClose(): void {
    clearTimeout(this.#headTimer);
    clearTimeout(this.#responseTimer);
    const ex = this.#ex;
    if (ex) {
      // The client left before its response was whole: the backend request is cancelled too.
      this.#ex = undefined;
      ex.error = CLIENT_CLOSED;
      if (ex.status === 0) ex.status = CLIENT_CLOSED_STATUS;
      this.#record(ex);
    }
    this.#letGo(true);
    this.#gone = true;
    this.#onGone(this);
  }

  /** Gives the connection to Node's parser, with the bytes read and not yet consumed. */
  #giveUp(): void {
    const socket = this.#socket;
    this.#gone = true;
    clearTimeout(this.#headTimer);
    for (const [event, listener] of this.#listeners) socket.off(event, listener);
    // Paused, so no byte is emitted before the next reader is in place.
    socket.pause();
    socket.setTimeout(0);
    this.#onGone(this);
    if (this.#pending) {
      if (socket.readableEnded) {
        // The client half-closed after pipelining it: too late to hand the bytes over.
        socket.end();
        return;
      }
    }
    const unread = this.#pending ?? EMPTY;
    this.#pending = undefined;
    if (unread.byteLength > 0) socket.unshift(unread);
    this.#handoff(socket, unread, !this.#used);
  }
}
