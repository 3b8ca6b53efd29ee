import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { STATUS_CODES, validateHeaderName, validateHeaderValue } from 'node:http';
import { Http2ServerRequest, type Http2ServerResponse, constants as http2Constants } from 'node:http2';
import { type Readable, Transform, type TransformCallback } from 'node:stream';
import {
  FramedBodyReader,
  type HeaderPairs,
  type HttpOpen,
  InfoLines,
  type Logger,
  MAX_RESPONSE_HEAD,
  MessageReader,
  normalizeHost,
  pairsFromRaw,
  Reason,
  type ResponseHead,
  rawFromPairs,
  resetConnection,
  responseHeadSchema,
  type Stream,
  stripHopByHop,
  UpstreamTimeoutError,
} from '@burrow/shared';
import type { RouteTable } from '../routes/table.js';
import type { AgentConnection } from '../tunnel/agent-connection.js';
import {
  CLIENT_FORBIDDEN,
  cutCode,
  drainReset,
  failureFor,
  INVALID_RESPONSE_HEAD,
  type ProxyFailure,
  sendError,
  UploadStalledError,
} from './errors.js';
import { EVENT_STREAM } from './http1-parse.js';
import {
  BAD_FRAMING,
  CONNECT_UNSUPPORTED,
  HOST_MISMATCH,
  invalidRequest,
  isForwardingField,
} from './validate-request.js';

export interface ForwardOptions {
  table: RouteTable<AgentConnection>;
  logger: Logger;
  /** Scheme the client used, for X-Forwarded-Proto and Forwarded. */
  proto: 'http' | 'https';
  /** Time allowed for the backend's response head, ms. */
  responseHeadTimeout: number;
  /** Counters hook (metrics); called once per finished request. */
  onRequestDone?: (info: AccessInfo) => void;
  /**
   * On terminated TLS: the SNI name the connection was opened for. A request
   * whose Host belongs to another route answers 421, so a client that
   * coalesced connections (h2, RFC 9113 §9.1.1) retries on a new one.
   */
  sniOf?: (req: ClientRequest) => string | undefined;
  /** Headers added to every response (HSTS on terminated TLS). */
  responseHeaders?: HeaderPairs;
  /** Called for each stream opened to an agent, with the route hostname it serves (metrics). */
  onStreamOpen?: (route: string, stream: Stream) => void;
  /**
   * True once the relay is draining: HTTP/1 responses then say `Connection:
   * close` and end their connection, so clients stop reusing it.
   */
  draining?: () => boolean;
}

/** A request as parsed by Node's HTTP/1 parser or the HTTP/2 compatibility layer. */
export type ClientRequest = IncomingMessage | Http2ServerRequest;
export type ClientResponse = ServerResponse | Http2ServerResponse;

/** The request's authority: Host for HTTP/1, :authority (or Host) for HTTP/2. */
export function requestHost(req: ClientRequest): string | undefined {
  if (req instanceof Http2ServerRequest) return req.authority || req.headers.host;
  return req.headers.host;
}

export interface AccessInfo {
  host: string;
  /**
   * The route hostname (exact or wildcard pattern) the request matched, or ''
   * when it matched none: unlike `host`, bounded by what agents announced.
   */
  route: string;
  method: string;
  path: string;
  status: number;
  bytesIn: number;
  bytesOut: number;
  durationMs: number;
  client: string;
  error?: string;
}

const accessLogs = new WeakMap<Logger, InfoLines>();

/**
 * Where `logger`'s access lines go: the same destination and line shape, but
 * written by accessFields, with no redaction pass (an entry holds only the
 * fields of AccessInfo, none of them a secret), a write per event loop turn.
 */
function accessLog(logger: Logger): InfoLines {
  let log = accessLogs.get(logger);
  if (!log) {
    log = new InfoLines(logger, 'request');
    accessLogs.set(logger, log);
  }
  return log;
}

/** An access entry as JSON object members, in AccessInfo's order, then `extra`'s flags. */
function accessFields(info: AccessInfo, extra: Record<string, boolean> | undefined): string {
  const s = JSON.stringify;
  let fields =
    `"host":${s(info.host)},"route":${s(info.route)},"method":${s(info.method)},"path":${s(info.path)}` +
    `,"status":${info.status},"bytesIn":${info.bytesIn},"bytesOut":${info.bytesOut}` +
    `,"durationMs":${info.durationMs},"client":${s(info.client)}`;
  if (info.error !== undefined) fields += `,"error":${s(info.error)}`;
  if (extra) for (const [k, v] of Object.entries(extra)) fields += `,${s(k)}:${v}`;
  return fields;
}

/**
 * A finished request's access line, and the same entry to the hooks that
 * count it (metrics, activity). `extra` (h2, upgrade) goes to the log line only.
 */
export function recordAccess(opts: ForwardOptions, info: AccessInfo, extra?: Record<string, boolean>): void {
  const log = accessLog(opts.logger);
  if (log.enabled) log.write(accessFields(info, extra));
  opts.onRequestDone?.(info);
}

/**
 * Largest response head message taken from an agent: a head of
 * MAX_RESPONSE_HEAD bytes, which the agent accepts from a backend, with room
 * for its JSON encoding's quotes and escapes.
 */
const MAX_HEAD_MESSAGE = 2 * MAX_RESPONSE_HEAD;

/** Request headers as sent to the agent: hop-by-hop removed, forwarding headers set by the relay. */
export function forwardedHeaders(
  req: ClientRequest,
  proto: 'http' | 'https',
  upgrade: boolean,
  ip = clientIp(req.socket.remoteAddress),
): HeaderPairs {
  const h2 = req instanceof Http2ServerRequest;
  let pairs = stripHopByHop(pairsFromRaw(req.rawHeaders), upgrade).filter(([k]) => {
    const name = k.toLowerCase();
    // Client-supplied forwarding fields are dropped: the relay is the trust boundary.
    return !isForwardingField(name) && name !== 'host' && !k.startsWith(':');
  });
  const host = requestHost(req) ?? '';
  if (h2) {
    // The agent speaks HTTP/1.1 to the backend: :authority becomes Host, and
    // the cookie crumbs HTTP/2 allows (RFC 9113 §8.2.3) are joined again.
    const cookies = pairs.filter(([k]) => k.toLowerCase() === 'cookie').map(([, v]) => v);
    pairs = pairs.filter(([k]) => k.toLowerCase() !== 'cookie');
    if (cookies.length > 0) pairs.push(['Cookie', cookies.join('; ')]);
  }
  // The backend gets the Host the request was routed by, whatever the client
  // listed in Connection (`Connection: host` would otherwise remove it).
  pairs.unshift(['Host', host]);
  pairs.push(...forwardingFields(ip, host, proto));
  return pairs;
}

/** The forwarding fields the relay sets on every request, for client `ip` and the Host it sent. */
export function forwardingFields(ip: string, host: string, proto: 'http' | 'https'): HeaderPairs {
  const node = ip.includes(':') ? `"[${ip}]"` : ip;
  return [
    ['X-Forwarded-For', ip],
    ['X-Real-IP', ip],
    ['X-Forwarded-Proto', proto],
    ['X-Forwarded-Host', host],
    ['Forwarded', `for=${node};host=${quoteIfNeeded(host)};proto=${proto}`],
  ];
}

function quoteIfNeeded(v: string): string {
  return /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`;
}

export function clientIp(remote: string | undefined): string {
  if (!remote) return '';
  return remote.startsWith('::ffff:') && remote.includes('.') ? remote.slice(7) : remote;
}

/**
 * Reads the agent's response head; leaves the stream paused with the body's
 * first bytes in `rest`. The head must come within `timeoutMs` of the request
 * reaching the agent whole. With `upload` (the client's request body, piped
 * into the stream), the time counts from the end of the body, so an upload
 * slower than the timeout is not cut while the backend is still reading it;
 * an upload that stops, no byte for `timeoutMs`, fails with UploadStalledError.
 * A `timeoutMs` of 0 sets no deadline.
 */
export function readResponseHead(
  stream: Stream,
  timeoutMs: number,
  upload?: Readable,
): Promise<{ head: ResponseHead; rest: Buffer; headBytes: number }> {
  return new Promise((resolve, reject) => {
    const reader = new MessageReader(responseHeadSchema, MAX_HEAD_MESSAGE);
    let seen = 0;
    const uploading = upload !== undefined && !stream.writableFinished;
    // 0: no deadline (gRPC calls, which carry their own).
    const timer =
      timeoutMs <= 0
        ? undefined
        : setTimeout(
            () =>
              done(
                uploading && !stream.writableFinished
                  ? new UploadStalledError('the request body stopped arriving')
                  : new UpstreamTimeoutError('no response head in time'),
              ),
            timeoutMs,
          );
    const progress = () => timer?.refresh();
    if (uploading) {
      upload.on('data', progress);
      stream.once('finish', progress);
    }
    const done = (err: unknown, value?: { head: ResponseHead; rest: Buffer; headBytes: number }) => {
      clearTimeout(timer);
      upload?.off('data', progress);
      stream.off('finish', progress);
      stream.pause();
      stream.off('data', onData);
      stream.off('error', done);
      stream.off('end', onEnd);
      if (value) resolve(value);
      else reject(err);
    };
    const onData = (chunk: Buffer) => {
      try {
        seen += chunk.length;
        const [head] = reader.push(chunk, 1);
        if (head) {
          const rest = reader.rest();
          done(undefined, { head, rest, headBytes: seen - rest.length });
        }
      } catch (err) {
        done(err);
      }
    };
    const onEnd = () => done(new Error('agent ended the stream without a response'));
    stream.on('data', onData);
    stream.on('error', done);
    stream.on('end', onEnd);
  });
}

export type Routed =
  | { ok: true; conn: AgentConnection; routeId: string; host: string; route: string }
  | ({ ok: false; host: string; route: string } & ProxyFailure);

function refuse(host: string, route: string, status: number, code: string, message: string): Routed {
  return { ok: false, host, route, status, code, message };
}

/** Finds the agent connection for a request, or the failure to answer with. */
export function route(req: ClientRequest, opts: ForwardOptions): Routed {
  const table = opts.table;
  const host = normalizeHost(requestHost(req));
  // HTTP/1.1 CONNECT never gets here (Node hands it to 'connect'); HTTP/2's does.
  if (req.method === 'CONNECT') return { ok: false, host, route: '', ...CONNECT_UNSUPPORTED };
  // HTTP/2 frames its own messages; the smuggling shapes checked here are HTTP/1.1's. An HTTP/2
  // request that names its host twice, differently, is malformed (RFC 9113 §8.3.1): the relay
  // routes by :authority, and a backend might act on Host.
  const invalid =
    req instanceof Http2ServerRequest
      ? req.authority && req.headers.host !== undefined && normalizeHost(req.headers.host) !== host
        ? HOST_MISMATCH
        : undefined
      : invalidRequest(req, host);
  if (invalid) return { ok: false, host, route: '', ...invalid };
  if (!host) return refuse(host, '', 400, 'no_host', 'The request has no usable Host header.');
  const found = table.lookup(host);
  if (found.kind === 'none') {
    return refuse(host, '', 404, 'unknown_host', 'No service is exposed at this hostname.');
  }
  if (found.kind === 'offline') {
    return refuse(
      host,
      found.hostname,
      503,
      'agent_offline',
      'The agent serving this hostname is not connected.',
    );
  }
  const { binding } = found;
  const sni = opts.sniOf?.(req);
  if (sni !== undefined && sni !== host) {
    const first = table.lookup(sni);
    if (
      first.kind !== 'found' ||
      first.binding.routeId !== binding.routeId ||
      first.binding.target.subject !== binding.target.subject
    ) {
      return refuse(
        host,
        binding.hostname,
        421,
        'misdirected',
        'This connection was opened for another hostname; retry on a new connection.',
      );
    }
  }
  if (binding.mode === 'tls-passthrough') {
    // Only the backend holds this name's certificate: plain HTTP cannot reach it.
    return refuse(host, binding.hostname, 421, 'tls_only', 'This hostname is served over HTTPS only.');
  }
  if (binding.allowlist && !binding.allowlist.allows(req.socket.remoteAddress ?? '')) {
    const { status, code, message } = CLIENT_FORBIDDEN;
    return refuse(host, binding.hostname, status, code, message);
  }
  return { ok: true, conn: binding.target, routeId: binding.routeId, host, route: binding.hostname };
}

/**
 * Whether the request carries a body: HTTP/1 says so with Transfer-Encoding or a
 * Content-Length above 0 (validate-request.ts let only one of them through);
 * HTTP/2 with DATA after the headers.
 */
export function hasBody(req: ClientRequest): boolean {
  if (req instanceof Http2ServerRequest) return !req.stream.endAfterHeaders;
  return req.headers['transfer-encoding'] !== undefined || (req.headers['content-length'] ?? '0') !== '0';
}

/**
 * The OPEN metadata of an `http` stream. `trailers`: this relay reads the
 * response as records, with trailer fields (forwardRequest does; the upgrade
 * path, which passes the response on as bytes, does not).
 */
export function meta(
  req: ClientRequest,
  routeId: string,
  proto: 'http' | 'https',
  upgrade: boolean,
  body: boolean,
  trailers = false,
): HttpOpen {
  const ip = clientIp(req.socket.remoteAddress);
  return {
    kind: 'http',
    route: routeId,
    method: req.method ?? 'GET',
    path: originForm(req.url ?? '/'),
    headers: forwardedHeaders(req, proto, upgrade, ip),
    upgrade,
    // The agent frames the body from this: the framing headers stay behind as hop-by-hop.
    body,
    ...(trailers ? { trailers } : {}),
    client: { ip, port: req.socket.remotePort ?? 0 },
  };
}

/** The access entry of a request whose client left before its response ended. */
export const CLIENT_CLOSED = 'client_closed';
/** Status logged for a client that left before any response (nginx's convention). */
export const CLIENT_CLOSED_STATUS = 499;

/** Requests whose body is being forwarded: how each fails if the parser finds that body malformed. */
const bodyFailures = new WeakMap<ClientRequest, () => void>();

/**
 * Fails `req`, whose body Node's parser found malformed (a bad chunk size)
 * after the request had started: Node reports that to the server
 * ('clientError'), not to the request, whose body then never ends. The
 * tunnel stream is reset; the client gets a 400 unless its response has
 * started, and that response is cut. False when `req` is not a request whose
 * body is being forwarded.
 */
export function failMalformedBody(req: ClientRequest): boolean {
  const fail = bodyFailures.get(req);
  bodyFailures.delete(req);
  fail?.();
  return fail !== undefined;
}

/**
 * Whether a request is a gRPC call. Its server may send the response head only
 * with its first message, minutes into a watch, and a client stream may be
 * quiet as long as its caller likes; the call carries its own deadline
 * (`grpc-timeout`), which the client enforces. So neither waits on the
 * relay's response and upload deadlines.
 */
function isGrpc(req: ClientRequest): boolean {
  return /^application\/grpc/i.test(req.headers['content-type'] ?? '');
}

/**
 * A request target in origin form (RFC 9112 §3.2.1), as a proxy sends it on
 * and `http` metadata carries it: the absolute form (RFC 9112 §3.2.2) becomes
 * its path and query; `*` and what does not parse as a URL stay as they are.
 */
export function originForm(target: string): string {
  if (target.startsWith('/') || target === '*') return target;
  try {
    const url = new URL(target);
    return `${url.pathname}${url.search}`;
  } catch {
    return target;
  }
}

/** Attempts after the first for a bodiless request refused unprocessed. */
export const MAX_RETRIES = 2;

/** Failures that prove the agent never processed the request: the relay may send it again. */
export function retryable(err: unknown): boolean {
  const e = err as { code?: string; reason?: number };
  if (e?.code === 'BURROW_ERR_GOAWAY' || e?.code === 'BURROW_ERR_STREAM_REFUSED') return true;
  return e?.code === 'BURROW_ERR_STREAM_RESET' && e.reason === Reason.RefusedStream;
}

/**
 * Failures that prove no one processed the request, the backend included. A
 * backend's refusal is not retried by the relay: the agent has already sent a
 * request without a body again, and a backend in its own restart would get it
 * a few times more with no pause between.
 */
function unprocessed(err: unknown): boolean {
  const e = err as { code?: string; reason?: number };
  return (
    retryable(err) || (e?.code === 'BURROW_ERR_STREAM_RESET' && e.reason === Reason.BackendRefusedStream)
  );
}

/** Proxies one HTTP request through the tunnel: request body up, response head and body down. */
export async function forwardRequest(
  opts: ForwardOptions,
  req: ClientRequest,
  res: ClientResponse,
): Promise<void> {
  const started = performance.now();
  const h2 = req instanceof Http2ServerRequest;
  const r = route(req, opts);
  // A retry may land on another route binding; the access entry names the last one.
  let routed = r;
  let stream: Stream | undefined;
  let error: string | undefined;
  /** The status a gRPC call refused with REFUSED_STREAM stands for in the access log (`refuse`). */
  let refused: number | undefined;
  // Read now: on HTTP/2, req.socket no longer reaches the session once the stream has closed.
  const client = clientIp(req.socket.remoteAddress);
  res.once('close', () => {
    // The client left before the response finished: the backend request is cancelled too.
    // An HTTP/2 stream the client reset counts as finished to Node; its RST code tells.
    const cut =
      !res.writableFinished ||
      (h2 && ((res as Http2ServerResponse).stream.rstCode ?? 0) !== http2Constants.NGHTTP2_NO_ERROR);
    if (stream && cut) stream.reset(Reason.Cancel, 'client closed the connection');
    if (cut) error ??= CLIENT_CLOSED;
    const info: AccessInfo = {
      host: r.host,
      route: routed.route,
      method: req.method ?? '',
      path: req.url ?? '',
      // Nothing was answered: 499, as nginx logs it, not the 200 Node presets.
      status: res.headersSent ? res.statusCode : (refused ?? CLIENT_CLOSED_STATUS),
      bytesIn: stream?.bytesOut ?? 0,
      bytesOut: unframed ? unframed.bodyBytes : (stream?.bytesIn ?? 0) - headBytes,
      durationMs: Math.round((performance.now() - started) * 1000) / 1000,
      client,
      ...(error ? { error } : {}),
    };
    recordAccess(opts, info, h2 ? { h2: true, ...(refused ? { refused: true } : {}) } : undefined);
  });
  // Checked as each response head goes out: a drain may begin while the agent works.
  const closeIfDraining = () => {
    if (!h2 && opts.draining?.()) (res as ServerResponse).shouldKeepAlive = false;
  };
  const answerError = (status: number, message: string, host: string, code: string) => {
    closeIfDraining();
    return sendError(res, status, message, host, code, opts.responseHeaders);
  };
  /** Set when the request body turned out malformed (HTTP/1.1 chunked framing). */
  let malformed = false;
  /**
   * Answers a request whose tunnel stream failed before the response head. A
   * gRPC call over HTTP/2 that provably no one processed (`unprocessed`) gets its
   * stream reset with REFUSED_STREAM (RFC 9113 §8.7), which gRPC clients send
   * again by themselves (a transparent retry) where a 503 would end the call
   * UNAVAILABLE. Anything else gets the error page.
   */
  const answerFailure = (err: unknown) => {
    const f = malformed ? BAD_FRAMING : failureFor(err);
    error = f.code;
    if (h2 && unprocessed(err) && isGrpc(req) && !res.headersSent) {
      refused = f.status;
      (res as Http2ServerResponse).stream.close(http2Constants.NGHTTP2_REFUSED_STREAM);
      return;
    }
    return answerError(f.status, f.message, routed.host, f.code);
  };
  // A request with no body can be sent again: if the agent connection it went
  // to refused it unprocessed (GOAWAY during a rolling update), try another.
  const withBody = hasBody(req);
  const replayable = !withBody;
  let head: ResponseHead | undefined;
  let rest: Buffer = Buffer.alloc(0);
  /** Tunnel bytes of the response head message: not counted as response bytes. */
  let headBytes = 0;
  /** Reads the body records of a response with trailers (an HTTP/2 backend's). */
  let unframed: FramedBodyReader | undefined;
  if (h2) {
    // A client may reset a request in the same read as its HEADERS, thousands a
    // second ("rapid reset", CVE-2023-44487). Node reports the reset only after
    // this handler has started: one turn later it shows, and such a request
    // costs no tunnel stream, no work at the agent and no backend connection.
    await new Promise<void>((resolve) => setImmediate(resolve));
    const { stream: h2stream } = res as Http2ServerResponse;
    if (h2stream.destroyed || h2stream.closed) {
      req.resume();
      return;
    }
  }
  for (let attempt = 0; !head; attempt++) {
    if (!routed.ok) {
      error = routed.code;
      // Where a body framed so ends is unknown: nothing after it is a request (RFC 9112 §6.1).
      if (routed.code === BAD_FRAMING.code && !h2) (res as ServerResponse).shouldKeepAlive = false;
      else req.resume();
      return answerError(routed.status, routed.message, routed.host, routed.code);
    }
    let s: Stream;
    try {
      s = stream = routed.conn.openStream(meta(req, routed.routeId, opts.proto, false, withBody, true));
      opts.onStreamOpen?.(routed.route, s);
    } catch (err) {
      // No stream was opened, so none of the request has left: even one with a body goes to
      // another connection (an agent replica draining in a rolling update refuses new streams).
      if (attempt < MAX_RETRIES && retryable(err)) {
        routed = route(req, opts);
        continue;
      }
      req.resume();
      return answerFailure(err);
    }
    s.on('error', () => {}); // handled where it matters: before the head by readResponseHead, after by res
    if (replayable) {
      s.end();
      req.resume();
    } else if (h2) {
      // A client's RST_STREAM ends node:http2's request stream, and the abort is reported
      // one event-loop turn later (Node 20): the body's end is passed on two turns after
      // it, once a reset would have shown, so a cancelled upload (a gRPC client stream,
      // which has no length) never reaches the backend as a whole one.
      req.pipe(s, { end: false });
      req.once('end', () =>
        setImmediate(() =>
          setImmediate(() => {
            const h2req = req as Http2ServerRequest;
            if (!h2req.aborted && (h2req.stream.rstCode ?? 0) === 0) s.end();
          }),
        ),
      );
      req.on('error', () => s.reset(Reason.Cancel, 'client request failed'));
    } else {
      req.pipe(s);
      req.on('error', () => s.reset(Reason.Cancel, 'client request failed'));
      bodyFailures.set(req, () => {
        malformed = true;
        error = BAD_FRAMING.code;
        req.unpipe(s);
        s.reset(Reason.Cancel, 'malformed request body');
      });
    }
    try {
      ({ head, rest, headBytes } = await readResponseHead(
        s,
        isGrpc(req) ? 0 : opts.responseHeadTimeout,
        withBody ? req : undefined,
      ));
    } catch (err) {
      s.reset(Reason.Cancel, 'no usable response');
      if (replayable && attempt < MAX_RETRIES && retryable(err) && !req.socket.destroyed) {
        routed = route(req, opts);
        continue;
      }
      req.unpipe(s);
      // The rest of a stalled or malformed body will not come: the connection ends after the answer.
      if ((malformed || err instanceof UploadStalledError) && !h2) {
        (res as ServerResponse).shouldKeepAlive = false;
      } else req.resume();
      return answerFailure(err);
    }
  }
  const s = stream!;
  let length: number | undefined;
  try {
    if (head.status < 200 || head.status === 101)
      throw new Error(`status ${head.status} is not a final response`);
    length = declaredLength(head.headers);
    // A 204 never carries Content-Length (RFC 9110 §8.6): an HTTP/2 client would refuse the stream.
    const fields =
      head.status === 204
        ? stripHopByHop(head.headers).filter(([name]) => name.toLowerCase() !== 'content-length')
        : stripHopByHop(head.headers);
    let headers = [...fields, ...(opts.responseHeaders ?? [])];
    if (h2) {
      // node:http2 checks the fields only as it sends them: in end(), outside this try, for
      // the branch below, and in a writeHead that keeps them when it throws (so the error
      // page would fail on them too). Values with CR, LF or NUL it would not check at all.
      const checked = http1Fields(headers);
      const invalid = checked.dropped[0];
      if (invalid) throw new Error(`${invalid[0]}: ${invalid[1]}`);
      // What HTTP/1.1 allows and HTTP/2 does not does not fail the response: a field node:http2
      // takes once, repeated (an app and its middleware both set it), goes once with its values
      // joined, and connection-specific fields are left out.
      const { kept, dropped } = http2Fields(checked.kept);
      for (const [name, reason] of dropped)
        opts.logger.debug(
          { host: r.host, field: name.slice(0, 64), reason },
          'response field dropped for HTTP/2',
        );
      headers = kept;
    }
    if (h2 && head.endStream) {
      // Set, not written: end() then sends the head as one HEADERS frame that ends
      // the stream, as the backend did (writeHead would send it at once, alone).
      const h2res = res as Http2ServerResponse;
      h2res.statusCode = head.status;
      for (const [name, value] of Object.entries(headerObject(headers))) h2res.setHeader(name, value!);
    } else if (h2) {
      // HTTP/2 has no reason phrase, and takes headers as an object.
      (res as Http2ServerResponse).writeHead(head.status, headerObject(headers));
    } else {
      closeIfDraining();
      (res as ServerResponse).writeHead(
        head.status,
        head.statusText ?? STATUS_CODES[head.status] ?? '',
        rawFromPairs(headers),
      );
    }
  } catch (err) {
    const f = INVALID_RESPONSE_HEAD;
    error = f.code;
    opts.logger.warn({ host: r.host, reason: (err as Error).message }, 'agent sent an invalid response head');
    s.reset(Reason.BadMetadata, 'invalid response head');
    return answerError(f.status, f.message, r.host, f.code);
  }
  // Server-sent events never end by themselves: a drain ends them once they are quiet, as it
  // does raw streams, and the client reconnects (to a relay that is not stopping). Only
  // EventSource's GET: an event stream answering a POST (an LLM completion, an MCP answer)
  // ends by itself, and a client reading it with fetch would take a clean end for the whole.
  const eventStream =
    length === undefined &&
    req.method === 'GET' &&
    !head.endStream &&
    head.status !== 204 &&
    head.status !== 304 &&
    isEventStream(head.headers);
  if (eventStream) s.markRaw();
  // The body was cut (the backend failed mid-way): the client must not take it for complete.
  const cut = (err?: Error) => {
    if (eventStream && drainReset(err) === 'local') {
      res.end();
      return;
    }
    error ??= cutCode(err);
    // HTTP/2: a reset with an error code (a bare destroy() resets with NO_ERROR, which
    // a client may take for the end of the response).
    if (!h2) resetConnection((res as ServerResponse).socket);
    else if (!(res as Http2ServerResponse).stream.destroyed) {
      (res as Http2ServerResponse).stream.close(http2Constants.NGHTTP2_INTERNAL_ERROR);
    }
  };
  s.on('error', cut);
  if (head.endStream) {
    s.resume(); // to its FIN: nothing else may come
    res.end();
    return;
  }
  const broken = (reason: string) => {
    opts.logger.warn({ host: r.host, route: routed.route, reason }, 'agent broke its response framing');
    s.reset(Reason.BadMetadata, reason);
  };
  let source: Readable = s;
  if (head.trailers) {
    // Body records, then the trailer fields (an HTTP/2 backend's, such as gRPC's status).
    unframed = new FramedBodyReader((trailers) => addTrailers(res, h2, trailers, opts.logger, r.host));
    unframed.on('error', (err) => {
      broken(err.message);
      cut();
    });
    if (rest.byteLength > 0) unframed.write(rest);
    rest = Buffer.alloc(0);
    source = s.pipe(unframed);
  }
  // HEAD, 204 and 304 carry no body: Node drops whatever is written for them.
  const bodyless = req.method === 'HEAD' || head.status === 204 || head.status === 304;
  if (length === undefined || bodyless) {
    if (rest.byteLength > 0) (res as NodeJS.WritableStream).write(rest);
    source.pipe(res as NodeJS.WritableStream);
    return;
  }
  // The agent is held to its Content-Length. More bytes would reach an HTTP/1.1 client as
  // the start of the next response on its connection, which a front proxy may share with
  // other tenants; fewer would leave the client waiting for bytes the next response supplies.
  const socket = h2 ? undefined : (res as ServerResponse).socket;
  const body = new BodyLength(length, () => {
    // The declared body is whole: it goes out, the rest is dropped, and the connection ends
    // once it is written, so nothing else is read from it as a response.
    source.unpipe(body);
    broken('response body longer than its Content-Length');
    body.end();
    res.once('finish', () => socket?.end());
  });
  body.on('error', (err) => {
    broken(err.message);
    cut();
  });
  if (rest.byteLength > 0) body.write(rest);
  source.pipe(body).pipe(res as NodeJS.WritableStream);
}

/** Trailer fields that say how to frame or route the message: never taken from a trailer section. */
const NOT_TRAILERS = new Set(['content-length', 'host', 'content-encoding', 'content-range']);

/**
 * Adds the backend's trailer fields to the response; they go out with its
 * end (over HTTP/1.1 only on a chunked response, as Node sends them). A
 * field HTTP forbids there, or one the client's protocol cannot carry, is
 * dropped with a warning: node:http2 checks trailers only as it sends them,
 * where a throw would end the process.
 */
function addTrailers(
  res: ClientResponse,
  h2: boolean,
  trailers: HeaderPairs,
  logger: Logger,
  host: string,
): void {
  const drop = (name: string, reason: string) =>
    logger.warn({ host, field: name.slice(0, 64), reason }, 'trailer field dropped');
  const allowed: HeaderPairs = [];
  for (const [name, value] of stripHopByHop(trailers)) {
    if (NOT_TRAILERS.has(name.toLowerCase())) drop(name, 'not allowed in trailers');
    else allowed.push([name, value]);
  }
  const checked = http1Fields(allowed);
  const { kept, dropped } = h2 ? http2Fields(checked.kept) : { kept: checked.kept, dropped: [] };
  for (const [name, reason] of [...checked.dropped, ...dropped]) drop(name, reason);
  if (kept.length > 0) res.addTrailers(headerObject(kept));
}

/** Fields HTTP/2 forbids (RFC 9113 §8.2.2); node:http2 refuses to send them. */
const H2_CONNECTION_FIELDS = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
  'te',
]);

/** Fields node:http2 refuses to send more than once in a header block. */
const H2_SINGLE_VALUE = new Set([
  'access-control-allow-credentials',
  'access-control-max-age',
  'access-control-request-method',
  'age',
  'authorization',
  'content-encoding',
  'content-language',
  'content-length',
  'content-location',
  'content-md5',
  'content-range',
  'content-type',
  'date',
  'dnt',
  'etag',
  'expires',
  'from',
  'host',
  'if-match',
  'if-modified-since',
  'if-none-match',
  'if-range',
  'if-unmodified-since',
  'last-modified',
  'location',
  'max-forwards',
  'proxy-authorization',
  'range',
  'referer',
  'retry-after',
  'tk',
  'upgrade-insecure-requests',
  'user-agent',
  'x-content-type-options',
]);

type Sorted = { kept: HeaderPairs; dropped: Array<[name: string, reason: string]> };

/** The fields Node's HTTP/1 writer accepts, and why each other one is not. */
function http1Fields(pairs: HeaderPairs): Sorted {
  const out: Sorted = { kept: [], dropped: [] };
  for (const [name, value] of pairs) {
    try {
      validateHeaderName(name);
      validateHeaderValue(name, value);
      out.kept.push([name, value]);
    } catch (err) {
      out.dropped.push([name, (err as Error).message]);
    }
  }
  return out;
}

/**
 * Of fields http1Fields kept, those node:http2 sends, and why each other one
 * is not. A field it takes once only, repeated, is sent once with the values
 * joined by commas: what an HTTP/1.1 recipient reads it as (RFC 9110 §5.3),
 * `Content-Encoding: br` and `gzip` being `br, gzip`.
 */
function http2Fields(pairs: HeaderPairs): Sorted {
  const out: Sorted = { kept: [], dropped: [] };
  /** Where each single-value field went in `kept`. */
  const at = new Map<string, number>();
  const kept: HeaderPairs = [];
  for (const [name, value] of pairs) {
    const key = name.toLowerCase();
    if (key.startsWith(':')) out.dropped.push([name, 'a pseudo-field']);
    else if (H2_CONNECTION_FIELDS.has(key) && !(key === 'te' && value === 'trailers'))
      out.dropped.push([name, 'connection-specific, not allowed in HTTP/2']);
    else if (H2_SINGLE_VALUE.has(key) && at.has(key)) {
      const i = at.get(key)!;
      kept[i] = [kept[i]![0], `${kept[i]![1]}, ${value}`];
    } else {
      if (H2_SINGLE_VALUE.has(key)) at.set(key, kept.length);
      kept.push([name, value]);
    }
  }
  out.kept = kept;
  return out;
}

/**
 * The body length a response head declares (undefined if it has none). A
 * repeated or malformed Content-Length is refused: clients could frame such a
 * response differently from the relay.
 */
/** Whether the response is server-sent events (`Content-Type: text/event-stream`). */
function isEventStream(headers: HeaderPairs): boolean {
  for (const [name, value] of headers) {
    if (name.length === 12 && name.toLowerCase() === 'content-type') return EVENT_STREAM.test(value);
  }
  return false;
}

function declaredLength(headers: HeaderPairs): number | undefined {
  let length: number | undefined;
  for (const [name, value] of headers) {
    if (name.length !== 14 || name.toLowerCase() !== 'content-length') continue;
    if (length !== undefined) throw new Error('more than one Content-Length');
    if (!/^\d{1,15}$/.test(value)) throw new Error(`Content-Length ${JSON.stringify(value)} is not a length`);
    length = Number(value);
  }
  return length;
}

/**
 * Passes at most `length` bytes on: on more it passes the first `length`,
 * drops the rest and calls `onOverrun` once; an end short of `length` fails.
 */
class BodyLength extends Transform {
  #left: number;
  readonly #onOverrun: () => void;

  constructor(length: number, onOverrun: () => void) {
    super();
    this.#left = length;
    this.#onOverrun = onOverrun;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.#left < 0) return callback();
    if (chunk.byteLength > this.#left) {
      const whole = chunk.subarray(0, this.#left);
      this.#left = -1;
      callback(null, whole);
      this.#onOverrun();
      return;
    }
    this.#left -= chunk.byteLength;
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    callback(
      this.#left > 0 ? new Error(`response body ${this.#left} bytes short of its Content-Length`) : null,
    );
  }
}

/** Header pairs as an object for HTTP/2 (lower-case names; repeated names become arrays). */
function headerObject(pairs: HeaderPairs): OutgoingHttpHeaders {
  // No prototype: a field named `constructor` or `__proto__` is a field like any other.
  const out: Record<string, string | string[]> = Object.create(null);
  for (const [k, v] of pairs) {
    const name = k.toLowerCase();
    const prev = out[name];
    if (prev === undefined) out[name] = v;
    else out[name] = Array.isArray(prev) ? [...prev, v] : [prev, v];
  }
  return out;
}
