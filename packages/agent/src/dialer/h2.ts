/**
 * Requests to `h2c://` targets: backends that speak HTTP/2 without TLS, as
 * gRPC servers do. Each tunnel stream becomes one HTTP/2 stream on one of the
 * sessions to that target (H2Sessions). The response body goes back framed
 * as records (shared framed-body.ts) so that its trailer fields follow it; a
 * response that ended with its head says so (`endStream`), and the relay
 * answers it the same way (a gRPC "trailers-only" response).
 */
import {
  type ClientHttp2Session,
  type ClientHttp2Stream,
  type ClientSessionRequestOptions,
  connect,
  constants,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
} from 'node:http2';
import { addAbortSignal, PassThrough } from 'node:stream';
import {
  type HeaderPairs,
  type HttpOpen,
  Reason,
  type Stream,
  stripHopByHop,
  TCP_KEEPALIVE,
  writeBodyRecord,
  writeMessage,
  writeTrailersRecord,
} from '@burrow/shared';
import type { Route } from '../routes/source.js';
import { type FailureReport, failExchange, logExchangeEnd, socketFailure, unanswered } from './failure.js';
import { hasBody, headFrom } from './head.js';
import { targetAddress } from './target.js';

/** A session with no stream open for this long is closed, ms. */
const IDLE_SESSION = 30_000;
/** The error a session that did not connect in time is destroyed with. */
const CONNECT_TIMEOUT = 'BURROW_CONNECT_TIMEOUT';
/** What node:http2 throws when a session can take no new stream: it is going away, or gone. */
const GONE = new Set(['ERR_HTTP2_GOAWAY_SESSION', 'ERR_HTTP2_INVALID_SESSION']);
/** Request fields HTTP/2 forbids or carries otherwise (RFC 9113 §8.2.2). */
const NOT_SENT = new Set(['host', 'expect', 'http2-settings']);

/** Sessions per target at most; past it, the least loaded takes the request. */
const MAX_SESSIONS = 64;

/** A session to one target, and how many streams it carries. */
export class H2Session {
  readonly session: ClientHttp2Session;
  /** Streams open on it, and those reserved by H2Sessions.session() and not opened yet. */
  active = 0;
  /** Whether the backend's SETTINGS have arrived, so its stream limit is known. */
  settled = false;
  /** Settles with the backend's first SETTINGS; fails if the session ends before them. */
  readonly ready: Promise<void>;

  constructor(session: ClientHttp2Session) {
    this.session = session;
    let failure: Error | undefined;
    session.on('error', (err) => {
      failure = err; // a failed session also fails each of its streams, which report it
    });
    this.ready = new Promise((resolve, reject) => {
      session.once('remoteSettings', () => {
        this.settled = true;
        resolve();
      });
      session.once('close', () => reject(failure ?? new Error('the backend closed the connection')));
    });
    this.ready.catch(() => {}); // a waiter reports it
  }

  /** Whether new streams may still go on it (it is not closing or gone). */
  get usable(): boolean {
    return !this.session.closed && !this.session.destroyed;
  }

  /** Whether it takes another stream now (SETTINGS_MAX_CONCURRENT_STREAMS). */
  get hasRoom(): boolean {
    return (
      this.settled && this.usable && this.active < (this.session.remoteSettings.maxConcurrentStreams ?? 100)
    );
  }

  /**
   * Opens a stream on the slot H2Sessions.session() reserved. Throws what
   * node:http2 throws (fields it refuses, a session that is going away); the
   * slot is free again then.
   */
  request(headers: OutgoingHttpHeaders, options: ClientSessionRequestOptions): ClientHttp2Stream {
    let req: ClientHttp2Stream;
    try {
      req = this.session.request(headers, options);
    } catch (err) {
      this.active--;
      throw err;
    }
    req.once('close', () => this.active--);
    return req;
  }

  /** Frees a reserved slot that will not be used (the client left meanwhile). */
  release(): void {
    this.active--;
  }
}

/**
 * HTTP/2 sessions to `h2c://` targets, opened when needed. A stream past the
 * backend's SETTINGS_MAX_CONCURRENT_STREAMS would be refused by the backend
 * (before its SETTINGS arrive) or wait in node:http2 behind streams that may
 * last for hours, so each request takes a slot on a session whose limit is
 * known and has room, and a new session opens when none has.
 */
export class H2Sessions {
  readonly #sessions = new Map<string, H2Session[]>();
  readonly #connectTimeout: number;

  constructor(connectTimeout: number) {
    this.#connectTimeout = connectTimeout;
  }

  /**
   * A session to `target` with a slot reserved for one stream (open it with
   * `request`, or give it back with `release`); fails as its connection does.
   * The slot is taken in the same turn as the pick, so requests that waited
   * for one session's SETTINGS do not all land on it.
   */
  async session(target: string): Promise<H2Session> {
    for (;;) {
      const entry = this.#pick(target);
      if (entry.settled) {
        entry.active++;
        return entry;
      }
      await entry.ready;
    }
  }

  /** Closes the sessions of targets not in `keep`; their streams in flight finish first. */
  retain(keep: ReadonlySet<string>): void {
    for (const [target, entries] of this.#sessions) {
      if (keep.has(target)) continue;
      this.#sessions.delete(target);
      for (const e of entries) e.session.close();
    }
  }

  destroy(): void {
    for (const entries of this.#sessions.values()) for (const e of entries) e.session.destroy();
    this.#sessions.clear();
  }

  /** One with room, else one still connecting (to wait on), else a new one; the least loaded past the cap. */
  #pick(target: string): H2Session {
    const entries = this.#sessions.get(target) ?? [];
    const usable = entries.filter((e) => e.usable);
    const pick =
      usable.find((e) => e.hasRoom) ??
      usable.find((e) => !e.settled) ??
      (usable.length >= MAX_SESSIONS ? usable.reduce((a, b) => (b.active < a.active ? b : a)) : undefined);
    if (pick) return pick;
    const entry = this.#open(target);
    entries.push(entry);
    this.#sessions.set(target, entries);
    return entry;
  }

  #open(target: string): H2Session {
    const session = connect(`http://${targetAddress(target).where}`, {
      settings: { enablePush: false },
      ...TCP_KEEPALIVE, // a stream may wait for hours (a gRPC watch) on a backend that died silently
    });
    const entry = new H2Session(session);
    const timer = setTimeout(() => {
      const err = Object.assign(new Error(`no HTTP/2 connection within ${this.#connectTimeout} ms`), {
        code: CONNECT_TIMEOUT,
      });
      session.destroy(err);
    }, this.#connectTimeout);
    // Connected is not enough: a backend that never speaks HTTP/2 would hold every request.
    session.once('remoteSettings', () => clearTimeout(timer));
    session.once('close', () => {
      clearTimeout(timer);
      this.#forget(target, entry);
    });
    // No new streams on a session the backend is leaving; those in flight finish there.
    session.once('goaway', () => this.#forget(target, entry));
    session.setTimeout(IDLE_SESSION, () => {
      this.#forget(target, entry);
      session.close();
    });
    return entry;
  }

  #forget(target: string, entry: H2Session): void {
    const entries = this.#sessions.get(target);
    const at = entries?.indexOf(entry) ?? -1;
    if (at < 0) return;
    entries!.splice(at, 1);
    if (entries!.length === 0) this.#sessions.delete(target);
  }
}

/**
 * Resets a request stream with CANCEL. close(NGHTTP2_CANCEL) would end the
 * request first (END_STREAM, then the RST): a backend could take a cancelled
 * upload, a gRPC client stream say, for a whole one and act on it. Destroying
 * the stream with Node's own AbortError resets it with CANCEL and nothing
 * before; that error type is not exported, so it is taken from a stream the
 * public API aborts.
 */
function cancel(req: ClientHttp2Stream | undefined): void {
  if (!req || req.destroyed) return;
  const probe = new PassThrough();
  probe.on('error', () => {});
  addAbortSignal(AbortSignal.abort(), probe);
  req.destroy(probe.errored ?? undefined);
}

/** What every h2c exchange of a dialer shares. */
export interface H2Context {
  sessions: H2Sessions;
  /** Time allowed for a new session's connection and the backend's SETTINGS, ms. */
  connectTimeout: number;
  report: FailureReport;
}

/** Serves one `http` stream for an `h2c://` route. Never throws. */
export function serveH2(stream: Stream, meta: HttpOpen, route: Route, context: H2Context): void {
  new H2Exchange(stream, meta, route, context).start();
}

/** Request fields as HTTP/2 takes them: pseudo-fields first, names in lower case, repeats as arrays. */
function requestHeaders(meta: HttpOpen): OutgoingHttpHeaders {
  // No prototype: a field named `constructor` or `__proto__` is a field like any other.
  const out: OutgoingHttpHeaders = Object.create(null);
  Object.assign(out, {
    ':method': meta.method,
    ':path': meta.path, // origin form: the relay sends no other
    ':scheme': 'http',
  });
  for (const [k, v] of stripHopByHop(meta.headers)) {
    const name = k.toLowerCase();
    if (name === 'host') out[':authority'] ??= v;
    if (NOT_SENT.has(name) || name.startsWith(':')) continue;
    const prev = out[name];
    if (prev === undefined) out[name] = v;
    else out[name] = Array.isArray(prev) ? [...prev, v] : [String(prev), v];
  }
  // The relay passes trailers on, so the backend may send them (gRPC servers require this).
  out.te = 'trailers';
  return out;
}

/** Fields of an HTTP/2 header block as pairs, pseudo-fields left out. */
function pairsOf(headers: IncomingHttpHeaders): HeaderPairs {
  const pairs: HeaderPairs = [];
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith(':') || value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) pairs.push([name, v]);
    else pairs.push([name, value]);
  }
  return pairs;
}

class H2Exchange {
  readonly #stream: Stream;
  readonly #meta: HttpOpen;
  readonly #route: Route;
  readonly #sessions: H2Sessions;
  readonly #connectTimeout: number;
  readonly #report: FailureReport;
  readonly #started = performance.now();
  #req: ClientHttp2Stream | undefined;
  #status = 0;
  #headSent = false;
  #complete = false;
  #trailers: HeaderPairs = [];
  /** The relay reads the body as records, so trailer fields can follow it (`trailers` in the metadata). */
  readonly #framed: boolean;
  #failed: string | undefined;
  #attempts = 0;

  constructor(stream: Stream, meta: HttpOpen, route: Route, { sessions, connectTimeout, report }: H2Context) {
    this.#stream = stream;
    this.#meta = meta;
    this.#framed = meta.trailers === true;
    this.#route = route;
    this.#sessions = sessions;
    this.#connectTimeout = connectTimeout;
    this.#report = report;
  }

  start(): void {
    const stream = this.#stream;
    stream.on('error', () => {}); // resets from the relay, or the session closing; 'close' cleans up
    stream.on('close', () => this.#onStreamClose());
    stream.on('drain', () => this.#req?.resume());
    if (this.#meta.upgrade) {
      this.#refuseUpgrade();
      return;
    }
    if (!hasBody(this.#meta)) stream.resume();
    this.#send();
  }

  /** HTTP/2 has no Upgrade (WebSocket over it is a CONNECT the relay does not make): a 501 says so. */
  #refuseUpgrade(): void {
    const body = Buffer.from(
      'this service speaks HTTP/2 (h2c): an Upgrade request (WebSocket) cannot reach it\n',
    );
    this.#status = 501;
    this.#headSent = this.#complete = true;
    writeMessage(this.#stream, {
      status: 501,
      headers: [
        ['content-type', 'text/plain; charset=utf-8'],
        ['content-length', String(body.byteLength)],
      ],
    });
    this.#stream.end(body);
  }

  #send(): void {
    this.#attempts++;
    this.#req = undefined;
    const withBody = hasBody(this.#meta);
    this.#sessions.session(this.#route.target).then(
      (session) => this.#sendOn(session, withBody),
      (err: NodeJS.ErrnoException) => this.#onError(undefined, err),
    );
  }

  #sendOn(session: H2Session, withBody: boolean): void {
    const stream = this.#stream;
    if (stream.destroyed) {
      session.release(); // the client left while the session connected
      return;
    }
    let req: ClientHttp2Stream;
    try {
      req = session.request(requestHeaders(this.#meta), { endStream: !withBody });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      // Nothing was sent: a session that went away meanwhile leaves the request to another.
      if (GONE.has(e.code ?? '') && this.#attempts < 2) this.#send();
      // Fields HTTP/2 refuses (a repeated single-value field, a character it forbids).
      else this.#fail(Reason.BackendError, `request not sendable over HTTP/2: ${e.message}`, e.code);
      return;
    }
    this.#req = req;
    req.on('response', (headers, flags) => this.#onResponse(headers, flags));
    const framed = this.#framed;
    req.on('data', (chunk: Buffer) => {
      if (!(framed ? writeBodyRecord(stream, chunk) : stream.write(chunk))) req.pause();
    });
    req.on('trailers', (headers) => {
      this.#trailers = pairsOf(headers);
    });
    req.on('end', () => this.#onEnd(req));
    req.on('error', (err: NodeJS.ErrnoException) => this.#onError(req, err));
    req.on('close', () => {
      if (withBody) {
        stream.unpipe(req);
        // What the client still sends has nowhere to go: dropped, so the stream is not stalled.
        if (!stream.readableEnded) stream.resume();
      }
      if (this.#req !== req || this.#complete) return;
      const code = req.rstCode ?? 0;
      if (this.#headSent) {
        this.#fail(
          Reason.BackendError,
          `backend reset the stream before the response was complete (${code})`,
        );
      } else if (code === constants.NGHTTP2_REFUSED_STREAM && !withBody && this.#attempts < 2) {
        this.#send(); // refused unprocessed (RFC 9113 §8.7): safe to send again
      } else if (code === constants.NGHTTP2_REFUSED_STREAM) {
        // The body went to the refused stream: the relay, or the client, sends it again.
        this.#fail(Reason.BackendRefusedStream, 'backend refused the stream before processing it');
      } else {
        this.#fail(Reason.BackendError, `backend reset the stream without a response (${code})`);
      }
    });
    if (withBody) stream.pipe(req);
  }

  #onResponse(headers: IncomingHttpHeaders, flags: number): void {
    const stream = this.#stream;
    this.#status = Number(headers[':status']);
    const head = headFrom(this.#status, undefined, stripHopByHop(pairsOf(headers)));
    if (typeof head === 'string') {
      this.#fail(Reason.InvalidResponse, head);
      return;
    }
    this.#headSent = true;
    if (flags & constants.NGHTTP2_FLAG_END_STREAM) {
      this.#complete = true;
      writeMessage(stream, this.#framed ? { ...head, endStream: true } : head);
      stream.end();
      return;
    }
    writeMessage(stream, this.#framed ? { ...head, trailers: true } : head);
  }

  #onEnd(req: ClientHttp2Stream): void {
    if (this.#complete || !this.#headSent) return;
    // node:http2 ends the response stream also when the backend reset it, or its
    // connection dropped, part way: that is a cut response, not a whole one.
    const code = req.rstCode ?? constants.NGHTTP2_NO_ERROR;
    if (code !== constants.NGHTTP2_NO_ERROR) {
      this.#fail(Reason.BackendError, `backend reset the stream before the response was complete (${code})`);
      return;
    }
    this.#complete = true;
    const trailers = stripHopByHop(this.#trailers);
    if (trailers.length > 0 && !this.#framed) {
      this.#report.log.debug(
        { route: this.#route.id, fields: trailers.length },
        'trailer fields dropped: the relay passes the body on as bytes',
      );
    } else if (trailers.length > 0) {
      try {
        writeTrailersRecord(this.#stream, trailers);
      } catch (err) {
        this.#fail(Reason.BackendError, (err as Error).message);
        return;
      }
    }
    this.#stream.end();
  }

  /** `req` failed, or (undefined) no session to the backend could be had. */
  #onError(req: ClientHttp2Stream | undefined, err: NodeJS.ErrnoException): void {
    if (this.#req !== req || this.#complete || this.#stream.destroyed) return;
    // A stream cancelled because its session failed carries the session's error as its cause.
    const cause = (err.cause as NodeJS.ErrnoException | undefined) ?? err;
    const code = cause.code ?? '';
    // A reset by the backend: 'close' follows, with the code, and decides.
    if (req && code === 'ERR_HTTP2_STREAM_ERROR') return;
    if (this.#headSent) {
      this.#fail(
        Reason.BackendError,
        `backend connection failed: ${socketFailure(code, cause.message)}`,
        code,
      );
      return;
    }
    const [reason, message, logged] = unanswered(
      code === CONNECT_TIMEOUT,
      code,
      cause.message,
      this.#connectTimeout,
    );
    this.#fail(reason, message, logged);
  }

  #fail(reason: Reason, message: string, code?: string): void {
    if (this.#failed !== undefined || this.#stream.destroyed) return;
    this.#failed = failExchange(
      this.#stream,
      this.#report,
      this.#route,
      this.#meta.method,
      reason,
      message,
      code,
    );
    cancel(this.#req);
  }

  #onStreamClose(): void {
    const stream = this.#stream;
    // The client went away, or we failed: the backend's stream is cancelled too.
    if (!this.#complete || stream.errored) cancel(this.#req);
    logExchangeEnd(this.#report.log, this.#route, stream, {
      method: this.#meta.method,
      status: this.#status,
      started: this.#started,
      failed: this.#failed,
      kind: { h2c: true },
    });
  }
}
