import type { IncomingMessage, ServerResponse } from 'node:http';
import { STATUS_CODES, validateHeaderName, validateHeaderValue } from 'node:http';
import type { Duplex } from 'node:stream';
import {
  type HeaderPairs,
  type HttpOpen,
  type Logger,
  MessageReader,
  normalizeHost,
  pairsFromRaw,
  Reason,
  type ResponseHead,
  rawFromPairs,
  responseHeadSchema,
  type Stream,
  stripHopByHop,
  UpstreamTimeoutError,
} from '@burrow/shared';
import type { RouteTable } from '../routes/table.js';
import type { AgentConnection } from '../tunnel/agent-connection.js';
import { failureFor, type ProxyFailure, sendError, sendRawError } from './errors.js';
import { invalidRequest } from './validate-request.js';

export interface ForwardOptions {
  table: RouteTable<AgentConnection>;
  logger: Logger;
  /** Scheme the client used, for X-Forwarded-Proto and Forwarded. */
  proto: 'http' | 'https';
  /** Time allowed for the backend's response head, ms. */
  responseHeadTimeout: number;
  /** Counters hook (metrics); called once per finished request. */
  onRequestDone?: (info: AccessInfo) => void;
  /** Called for each stream opened to an agent, with the route hostname it serves (metrics). */
  onStreamOpen?: (route: string, stream: Stream) => void;
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

/** Largest response head accepted from an agent. */
const MAX_HEAD = 256 * 1024;
/** Client-supplied forwarding headers are replaced: the relay is the trust boundary. */
const FORWARDING = new Set([
  'x-forwarded-for',
  'x-forwarded-proto',
  'x-forwarded-host',
  'x-forwarded-port',
  'forwarded',
]);

/** Request headers as sent to the agent: hop-by-hop removed, forwarding headers set by the relay. */
export function forwardedHeaders(
  req: IncomingMessage,
  proto: 'http' | 'https',
  upgrade: boolean,
): HeaderPairs {
  const pairs = stripHopByHop(pairsFromRaw(req.rawHeaders), upgrade).filter(
    ([k]) => !FORWARDING.has(k.toLowerCase()),
  );
  const ip = clientIp(req.socket.remoteAddress);
  const host = req.headers.host ?? '';
  const node = ip.includes(':') ? `"[${ip}]"` : ip;
  pairs.push(
    ['X-Forwarded-For', ip],
    ['X-Forwarded-Proto', proto],
    ['X-Forwarded-Host', host],
    ['Forwarded', `for=${node};host=${quoteIfNeeded(host)};proto=${proto}`],
  );
  return pairs;
}

function quoteIfNeeded(v: string): string {
  return /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(v) ? v : `"${v.replace(/["\\]/g, '\\$&')}"`;
}

export function clientIp(remote: string | undefined): string {
  if (!remote) return '';
  return remote.startsWith('::ffff:') && remote.includes('.') ? remote.slice(7) : remote;
}

/** Reads the agent's response head; leaves the stream paused with the body's first bytes in `rest`. */
export function readResponseHead(
  stream: Stream,
  timeoutMs: number,
): Promise<{ head: ResponseHead; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const reader = new MessageReader(responseHeadSchema, MAX_HEAD);
    const timer = setTimeout(() => done(new UpstreamTimeoutError('no response head in time')), timeoutMs);
    const done = (err: unknown, value?: { head: ResponseHead; rest: Buffer }) => {
      clearTimeout(timer);
      stream.pause();
      stream.off('data', onData);
      stream.off('error', done);
      stream.off('end', onEnd);
      if (value) resolve(value);
      else reject(err);
    };
    const onData = (chunk: Buffer) => {
      try {
        const [head] = reader.push(chunk, 1);
        if (head) done(undefined, { head, rest: reader.rest() });
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

type Routed =
  | { ok: true; conn: AgentConnection; routeId: string; host: string; route: string }
  | ({ ok: false; host: string; route: string } & ProxyFailure);

/** Finds the agent connection for a request, or the failure to answer with. */
function route(req: IncomingMessage, table: RouteTable<AgentConnection>): Routed {
  const host = normalizeHost(req.headers.host);
  const invalid = invalidRequest(req, host);
  if (invalid) return { ok: false, host, route: '', ...invalid };
  if (!host)
    return {
      ok: false,
      host,
      route: '',
      status: 400,
      code: 'no_host',
      message: 'The request has no usable Host header.',
    };
  const found = table.lookup(host);
  if (found.kind === 'none') {
    return {
      ok: false,
      host,
      route: '',
      status: 404,
      code: 'unknown_host',
      message: 'No service is exposed at this hostname.',
    };
  }
  if (found.kind === 'offline') {
    return {
      ok: false,
      host,
      route: found.hostname,
      status: 503,
      code: 'agent_offline',
      message: 'The agent serving this hostname is not connected.',
    };
  }
  const { binding } = found;
  if (binding.allowlist && !binding.allowlist.allows(req.socket.remoteAddress ?? '')) {
    return {
      ok: false,
      host,
      route: binding.hostname,
      status: 403,
      code: 'client_forbidden',
      message: 'Your address is not allowed to reach this service.',
    };
  }
  return { ok: true, conn: binding.target, routeId: binding.routeId, host, route: binding.hostname };
}

function meta(req: IncomingMessage, routeId: string, proto: 'http' | 'https', upgrade: boolean): HttpOpen {
  return {
    kind: 'http',
    route: routeId,
    method: req.method ?? 'GET',
    path: req.url ?? '/',
    headers: forwardedHeaders(req, proto, upgrade),
    upgrade,
    client: { ip: clientIp(req.socket.remoteAddress), port: req.socket.remotePort ?? 0 },
  };
}

/** Attempts after the first for a bodiless request refused unprocessed. */
const MAX_RETRIES = 2;

/** Failures that prove the agent never processed the request. */
function retryable(err: unknown): boolean {
  const e = err as { code?: string; reason?: number };
  if (e?.code === 'BURROW_ERR_GOAWAY' || e?.code === 'BURROW_ERR_STREAM_REFUSED') return true;
  return e?.code === 'BURROW_ERR_STREAM_RESET' && e.reason === Reason.RefusedStream;
}

/** Proxies one HTTP request through the tunnel: request body up, response head and body down. */
export async function forwardRequest(
  opts: ForwardOptions,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const started = performance.now();
  const r = route(req, opts.table);
  // A retry may land on another route binding; the access entry names the last one.
  let routed = r;
  let stream: Stream | undefined;
  let error: string | undefined;
  res.once('close', () => {
    // The client left before the response finished: the backend request is cancelled too.
    if (stream && !res.writableFinished) stream.reset(Reason.Cancel, 'client closed the connection');
    const info: AccessInfo = {
      host: r.host,
      route: routed.route,
      method: req.method ?? '',
      path: req.url ?? '',
      status: res.statusCode,
      bytesIn: stream?.bytesOut ?? 0,
      bytesOut: stream?.bytesIn ?? 0,
      durationMs: Math.round((performance.now() - started) * 1000) / 1000,
      client: clientIp(req.socket.remoteAddress),
      ...(error ? { error } : {}),
    };
    opts.logger.info(info, 'request');
    opts.onRequestDone?.(info);
  });
  // A request with no body can be sent again: if the agent connection it went
  // to refused it unprocessed (GOAWAY during a rolling update), try another.
  const replayable = !req.headers['transfer-encoding'] && (req.headers['content-length'] ?? '0') === '0';
  let head: ResponseHead | undefined;
  let rest: Buffer = Buffer.alloc(0);
  for (let attempt = 0; !head; attempt++) {
    if (!routed.ok) {
      error = routed.code;
      req.resume();
      return sendError(res, routed.status, routed.message, routed.host, routed.code);
    }
    let s: Stream;
    try {
      s = stream = routed.conn.openHttpStream(meta(req, routed.routeId, opts.proto, false));
      opts.onStreamOpen?.(routed.route, s);
    } catch (err) {
      if (replayable && attempt < MAX_RETRIES && retryable(err)) {
        routed = route(req, opts.table);
        continue;
      }
      const f = failureFor(err);
      error = f.code;
      req.resume();
      return sendError(res, f.status, f.message, routed.host, f.code);
    }
    s.on('error', () => {}); // handled where it matters: before the head by readResponseHead, after by res
    if (replayable) {
      s.end();
      req.resume();
    } else {
      req.pipe(s);
      req.on('error', () => s.reset(Reason.Cancel, 'client request failed'));
    }
    try {
      ({ head, rest } = await readResponseHead(s, opts.responseHeadTimeout));
    } catch (err) {
      s.reset(Reason.Cancel, 'no usable response');
      if (replayable && attempt < MAX_RETRIES && retryable(err) && !res.destroyed) {
        routed = route(req, opts.table);
        continue;
      }
      const f = failureFor(err);
      error = f.code;
      req.unpipe(s);
      req.resume();
      return sendError(res, f.status, f.message, routed.host, f.code);
    }
  }
  const s = stream!;
  try {
    if (head.status < 200 || head.status === 101)
      throw new Error(`status ${head.status} is not a final response`);
    res.writeHead(
      head.status,
      head.statusText ?? STATUS_CODES[head.status] ?? '',
      rawFromPairs(stripHopByHop(head.headers)),
    );
  } catch (err) {
    error = 'invalid_response_head';
    opts.logger.warn({ host: r.host, reason: (err as Error).message }, 'agent sent an invalid response head');
    s.reset(Reason.BadMetadata, 'invalid response head');
    return sendError(res, 502, 'The backend sent an invalid response.', r.host, 'invalid_response_head');
  }
  if (rest.byteLength > 0) res.write(rest);
  s.on('error', () => res.destroy());
  s.pipe(res);
}

/** Proxies an Upgrade request (WebSocket and others): after a 101, bytes flow raw both ways. */
export async function forwardUpgrade(
  opts: ForwardOptions,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
): Promise<void> {
  const started = performance.now();
  socket.on('error', () => {});
  const r = route(req, opts.table);
  const log = (status: number, error?: string, s?: Stream) => {
    const info: AccessInfo = {
      host: r.host,
      route: r.route,
      method: req.method ?? '',
      path: req.url ?? '',
      status,
      bytesIn: s?.bytesOut ?? 0,
      bytesOut: s?.bytesIn ?? 0,
      durationMs: Math.round(performance.now() - started),
      client: clientIp(req.socket.remoteAddress),
      ...(error ? { error } : {}),
    };
    opts.logger.info({ ...info, upgrade: true }, 'request');
    opts.onRequestDone?.(info);
  };
  if (!r.ok) {
    log(r.status, r.code);
    return sendRawError(socket, r.status, r.message, r.host, r.code);
  }
  let stream: Stream;
  try {
    stream = r.conn.openHttpStream(meta(req, r.routeId, opts.proto, true));
    opts.onStreamOpen?.(r.route, stream);
  } catch (err) {
    const f = failureFor(err);
    log(f.status, f.code);
    return sendRawError(socket, f.status, f.message, r.host, f.code);
  }
  stream.on('error', () => socket.destroy());
  socket.on('close', () => {
    if (!stream.destroyed && !stream.writableFinished)
      stream.reset(Reason.Cancel, 'client closed the connection');
  });
  // Bytes the client sends before the 101 wait in the socket (paused) until the backend accepted.
  socket.pause();
  let response: { head: ResponseHead; rest: Buffer };
  try {
    response = await readResponseHead(stream, opts.responseHeadTimeout);
  } catch (err) {
    const f = failureFor(err);
    log(f.status, f.code);
    stream.reset(Reason.Cancel, 'no usable response');
    return sendRawError(socket, f.status, f.message, r.host, f.code);
  }
  const { head: rh, rest } = response;
  let headText: string;
  try {
    headText = serializeHead(rh, rh.status === 101);
  } catch {
    log(502, 'invalid_response_head');
    stream.reset(Reason.BadMetadata, 'invalid response head');
    return sendRawError(
      socket,
      502,
      'The backend sent an invalid response.',
      r.host,
      'invalid_response_head',
    );
  }
  // Logged and counted when the exchange ends, with the bytes both ways (a
  // WebSocket may live for hours; its access line comes when it closes).
  stream.once('close', () => log(rh.status, undefined, stream));
  socket.write(headText);
  if (rest.byteLength > 0) socket.write(rest);
  if (rh.status === 101) {
    if (head.byteLength > 0) stream.write(head);
    socket.pipe(stream);
    socket.resume();
  }
  stream.pipe(socket);
}

/** Serialises a response head for a raw socket, validating every header as Node would. */
function serializeHead(head: ResponseHead, upgrade: boolean): string {
  const lines = [
    `HTTP/1.1 ${head.status} ${(head.statusText ?? STATUS_CODES[head.status] ?? '').replace(/[\r\n]/g, '')}`,
  ];
  for (const [k, v] of stripHopByHop(head.headers, upgrade)) {
    validateHeaderName(k);
    validateHeaderValue(k, v);
    lines.push(`${k}: ${v}`);
  }
  if (!upgrade) lines.push('connection: close');
  return `${lines.join('\r\n')}\r\n\r\n`;
}
