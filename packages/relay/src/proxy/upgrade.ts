import type { IncomingMessage, ServerResponse } from 'node:http';
import { STATUS_CODES, validateHeaderName, validateHeaderValue } from 'node:http';
import type { Duplex } from 'node:stream';
import {
  normalizeHost,
  Reason,
  type ResponseHead,
  resetConnection,
  type Stream,
  splice,
  stripHopByHop,
} from '@burrow/shared';
import { closeAfterAnswer, failureFor, INVALID_RESPONSE_HEAD, sendRawError } from './errors.js';
import {
  type AccessInfo,
  CLIENT_CLOSED,
  CLIENT_CLOSED_STATUS,
  clientIp,
  type ForwardOptions,
  hasBody,
  meta,
  readResponseHead,
  recordAccess,
  route,
} from './forward.js';
import { CONNECT_UNSUPPORTED } from './validate-request.js';

/** Proxies an Upgrade request (WebSocket and others): after a 101, bytes flow raw both ways. */
export async function forwardUpgrade(
  opts: ForwardOptions,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
): Promise<void> {
  const started = performance.now();
  socket.on('error', () => {});
  // Read now: a socket that closes while the upgrade waits no longer knows its peer.
  const client = clientIp(req.socket.remoteAddress);
  const turn = await earlierResponsesOut(socket);
  // Routed when its turn comes, as a request waiting in listeners/one-at-a-time.ts is.
  const r = route(req, opts);
  // The access line is written when the connection ends, maybe hours later:
  // keep the few fields it needs, not the request (headers and all).
  const { host, route: routeName } = r;
  const method = req.method ?? '';
  const path = req.url ?? '';
  /** Tunnel bytes of the response head message: not counted as bytes to the client. */
  let headBytes = 0;
  const log = (status: number, error?: string, s?: Stream) => {
    const info: AccessInfo = {
      host,
      route: routeName,
      method,
      path,
      status,
      bytesIn: s?.bytesOut ?? 0,
      bytesOut: (s?.bytesIn ?? 0) - headBytes,
      durationMs: Math.round(performance.now() - started),
      client,
      ...(error ? { error } : {}),
    };
    recordAccess(opts, info, { upgrade: true });
  };
  // Nothing was answered: the connection closed while earlier requests were being answered.
  if (!turn) return log(CLIENT_CLOSED_STATUS, CLIENT_CLOSED);
  if (!r.ok) {
    log(r.status, r.code);
    return sendRawError(socket, r.status, r.message, r.host, r.code);
  }
  // An upgrade's own bytes follow the 101; a body before them is never sent on
  // (and a backend that declined would read the next request on its connection
  // as that body), so such a request is refused whatever it upgrades to.
  if (hasBody(req)) {
    log(400, 'upgrade_with_body');
    return sendRawError(
      socket,
      400,
      'An Upgrade request cannot carry a body; send it without one, or without the Upgrade header.',
      r.host,
      'upgrade_with_body',
    );
  }
  // An h2c upgrade would hand the client an HTTP/2 connection straight to the
  // backend, past the relay's per-request handling (the forwarding headers it
  // sets, above all). It is served as the HTTP/1.1 request it also is, as a
  // server that does not speak h2c would; the client carries on in HTTP/1.1.
  const h2c = upgradesToH2c(req);
  let stream: Stream;
  try {
    // No body (refused above): an upgrade's bytes follow the 101.
    stream = r.conn.openStream(meta(req, r.routeId, opts.proto, !h2c, false));
    opts.onStreamOpen?.(r.route, stream);
  } catch (err) {
    const f = failureFor(err);
    log(f.status, f.code);
    return sendRawError(socket, f.status, f.message, r.host, f.code);
  }
  // Until the head arrives a failed stream is answered with an error page (below).
  const ignore = () => {};
  stream.on('error', ignore);
  let clientGone = false;
  socket.on('close', () => {
    // Unless both directions finished, the client is gone mid-exchange (also after its own FIN).
    if (!stream.destroyed && !(stream.writableFinished && stream.readableEnded)) {
      clientGone = true;
      stream.reset(Reason.Cancel, 'client closed the connection');
    }
  });
  // Bytes the client sends before the 101 wait in the socket (paused) until the backend accepted.
  socket.pause();
  let response: { head: ResponseHead; rest: Buffer; headBytes: number };
  try {
    response = await readResponseHead(stream, opts.responseHeadTimeout);
  } catch (err) {
    stream.reset(Reason.Cancel, 'no usable response');
    if (socket.destroyed) return log(CLIENT_CLOSED_STATUS, CLIENT_CLOSED);
    const f = failureFor(err);
    log(f.status, f.code);
    return sendRawError(socket, f.status, f.message, r.host, f.code);
  }
  const { head: rh, rest } = response;
  headBytes = response.headBytes;
  let headText: string;
  try {
    // An agent passes on a 101 or a final response, nothing else: after an interim head the
    // rest of the stream would reach the client unchecked. A backend was not asked to switch
    // protocols on an h2c request: there, a 101 is no answer either.
    if (rh.status < 200 && (h2c || rh.status !== 101))
      throw new Error(`status ${rh.status} is not a final response`);
    headText = serializeHead(rh, rh.status === 101);
  } catch {
    const f = INVALID_RESPONSE_HEAD;
    log(f.status, f.code);
    stream.reset(Reason.BadMetadata, 'invalid response head');
    return sendRawError(socket, f.status, f.message, r.host, f.code);
  }
  stream.off('error', ignore);
  // Cut mid-way (after a 101, or in a declined upgrade's body, which ends with the
  // connection): a reset, so the client cannot take the cut for the end.
  stream.on('error', () => resetConnection(socket));
  // Logged and counted when the exchange ends, with the bytes both ways (a
  // WebSocket may live for hours; its access line comes when it closes).
  const status = rh.status;
  // 'close' comes once; `on` spares the wrapper `once` would keep per connection.
  stream.on('close', () =>
    log(status, clientGone ? CLIENT_CLOSED : stream.errored ? 'backend_error' : undefined, stream),
  );
  socket.write(headText);
  if (rest.byteLength > 0) socket.write(rest);
  if (rh.status === 101) {
    // Raw bytes from here on: a drain closes it once quiet, rather than waiting for it to end.
    stream.markRaw();
    if (head.byteLength > 0) stream.write(head);
    splice(socket, stream);
  } else {
    // Declined: the response is all there is (`connection: close`), so our side ends now.
    stream.end();
    stream.pipe(socket);
    socket.once('finish', () => closeAfterAnswer(socket));
  }
}

/**
 * Waits until the responses to the requests pipelined before an upgrade on
 * `socket` are out. Node emits 'upgrade' as soon as it has parsed the head,
 * while those requests may still be waiting for their answers; the client
 * reads responses in order, so the upgrade's answer (a 101 and raw bytes, or
 * an error page) goes after theirs. The socket stays paused meanwhile. False
 * when the connection closed first.
 */
async function earlierResponsesOut(socket: Duplex): Promise<boolean> {
  socket.pause();
  for (;;) {
    if (socket.destroyed || socket.writableEnded) return false;
    // Node gives the socket to each response in turn, the next one as the one before it finishes.
    const current = (socket as Duplex & { _httpMessage?: ServerResponse | null })._httpMessage;
    if (!current) return true;
    await new Promise((resolve) => current.once('close', resolve));
  }
}

/**
 * Answers an HTTP/1.1 CONNECT, logged and counted like any request the relay
 * answers itself; after the responses pipelined ahead of it, as an upgrade.
 */
export async function refuseConnect(
  opts: ForwardOptions,
  req: IncomingMessage,
  socket: Duplex,
): Promise<void> {
  socket.on('error', () => {});
  const started = performance.now();
  const client = clientIp(req.socket.remoteAddress);
  const turn = await earlierResponsesOut(socket);
  const f = CONNECT_UNSUPPORTED;
  const info: AccessInfo = {
    host: normalizeHost(req.headers.host),
    route: '',
    method: 'CONNECT',
    path: req.url ?? '',
    status: turn ? f.status : CLIENT_CLOSED_STATUS,
    bytesIn: 0,
    bytesOut: 0,
    durationMs: Math.round(performance.now() - started),
    client,
    error: turn ? f.code : CLIENT_CLOSED,
  };
  recordAccess(opts, info);
  if (turn) sendRawError(socket, f.status, f.message, info.host, f.code);
}

/** Whether the request asks to switch to cleartext HTTP/2 (RFC 7540 §3.2). */
function upgradesToH2c(req: IncomingMessage): boolean {
  const upgrade = req.headers.upgrade ?? '';
  return upgrade.split(',').some((token) => token.trim().toLowerCase() === 'h2c');
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
