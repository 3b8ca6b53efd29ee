import type { ServerResponse } from 'node:http';
import { STATUS_CODES } from 'node:http';
import { Http2ServerResponse, constants as http2Constants } from 'node:http2';
import type { Duplex } from 'node:stream';
import { type HeaderPairs, Reason } from '@burrow/shared';

/** A client-facing failure: status, a one-line explanation, and a stable code for logs. */
export interface ProxyFailure {
  status: number;
  message: string;
  code: string;
}

/** The client's address is outside the route's allowlist. */
export const CLIENT_FORBIDDEN: Readonly<ProxyFailure> = {
  status: 403,
  code: 'client_forbidden',
  message: 'Your address is not allowed to reach this service.',
};

/** The agent's response head could not be written as HTTP (bad status, header names or values). */
export const INVALID_RESPONSE_HEAD: Readonly<ProxyFailure> = {
  status: 502,
  code: 'invalid_response_head',
  message: 'The backend sent an invalid response.',
};

/** The client stopped sending a request body it announced (no byte for the response timeout). */
export const UPLOAD_STALLED: Readonly<ProxyFailure> = {
  status: 408,
  code: 'upload_stalled',
  message: 'The request body stopped arriving.',
};

/** The request head did not arrive whole within the headers timeout. */
export const HEAD_TIMEOUT: Readonly<ProxyFailure> = {
  status: 408,
  code: 'head_timeout',
  message: 'The request headers did not arrive in time.',
};

/** The request head is not HTTP/1.1 that the parser accepts. */
export const MALFORMED_REQUEST: Readonly<ProxyFailure> = {
  status: 400,
  code: 'malformed_request',
  message: 'The request is not valid HTTP/1.1.',
};

/** Why readResponseHead gave up on a request whose body stopped arriving. */
export class UploadStalledError extends Error {
  readonly code = 'BURROW_ERR_UPLOAD_STALLED';
}

/** The agent refused a new stream: busy (at its stream limit) or draining. */
const AGENT_BUSY: Readonly<ProxyFailure> = {
  status: 503,
  code: 'agent_busy',
  message: 'The agent is not accepting new requests right now; retry shortly.',
};

/**
 * Whose drain deadline reset the stream (SHUTDOWN): the relay's own
 * ('local'), the agent's ('remote'), or neither (undefined).
 */
export function drainReset(err: unknown): 'local' | 'remote' | undefined {
  const e = err as { code?: string; reason?: number; local?: boolean } | undefined;
  if (e?.code !== 'BURROW_ERR_STREAM_RESET' || e.reason !== Reason.Shutdown) return undefined;
  return e.local === true ? 'local' : 'remote';
}

/** The access log's error for a response cut after its head because its tunnel stream failed with `err`. */
export function cutCode(err: unknown): 'drain_timeout' | 'backend_error' {
  return drainReset(err) ? 'drain_timeout' : 'backend_error';
}

/** Maps why a tunnel stream failed before the response head to what the client sees. */
export function failureFor(err: unknown): ProxyFailure {
  const e = err as { code?: string; reason?: number; message?: string };
  if (drainReset(err) === 'local') {
    return { status: 503, code: 'drain_timeout', message: 'The relay is shutting down; retry shortly.' };
  }
  if (e?.code === 'BURROW_ERR_STREAM_RESET') {
    switch (e.reason) {
      case Reason.ConnectRefused:
        return {
          status: 502,
          code: 'backend_refused',
          message: 'The backend service refused the connection.',
        };
      case Reason.ConnectTimeout:
        return {
          status: 504,
          code: 'backend_timeout',
          message: 'The backend service did not answer in time.',
        };
      case Reason.BackendRefusedStream:
        return {
          status: 503,
          code: 'backend_refused_stream',
          message: 'The backend service turned the request away before processing it; retry shortly.',
        };
      case Reason.InvalidResponse:
        return { ...INVALID_RESPONSE_HEAD };
      case Reason.RouteUnknown:
        return { status: 502, code: 'route_unknown', message: 'The agent no longer serves this hostname.' };
      case Reason.RefusedStream:
        return { ...AGENT_BUSY };
      case Reason.Shutdown:
        // The agent's drain deadline: the stream had been accepted, and the backend may have acted on it.
        return {
          status: 503,
          code: 'drain_timeout',
          message: 'The agent stopped before the response was complete; the request may have been processed.',
        };
      default:
        return { status: 502, code: 'backend_error', message: 'The backend connection failed.' };
    }
  }
  // The agent's connection is up and at its stream limit.
  if (e?.code === 'BURROW_ERR_STREAM_REFUSED') return { ...AGENT_BUSY };
  if (e?.code === 'BURROW_ERR_SESSION_CLOSED' || e?.code === 'BURROW_ERR_GOAWAY') {
    return { status: 503, code: 'tunnel_lost', message: 'The tunnel to the agent closed; retry shortly.' };
  }
  if (e?.code === 'BURROW_ERR_METADATA_TOO_LARGE') {
    // Many small headers pass the listener's size check yet make a request head
    // larger than the agent accepts as stream metadata.
    return {
      status: 431,
      code: 'head_too_large',
      message: 'The request headers are too large to forward.',
    };
  }
  if (e?.code === 'BURROW_ERR_UPLOAD_STALLED') return { ...UPLOAD_STALLED };
  if (e?.code === 'BURROW_ERR_UPSTREAM_TIMEOUT') {
    return {
      status: 504,
      code: 'upstream_timeout',
      message: 'The backend service did not send a response in time.',
    };
  }
  return { status: 502, code: 'bad_gateway', message: 'The agent sent an invalid response.' };
}

function body(status: number, message: string, host: string): string {
  return `${status} ${STATUS_CODES[status] ?? ''}\n\n${message}\n${host ? `\nHost: ${host}\n` : ''}\n-- Burrow relay\n`;
}

/** Sends a short, plain error page (if the response has not started). */
export function sendError(
  res: ServerResponse | Http2ServerResponse,
  status: number,
  message: string,
  host = '',
  code = '',
  extra: HeaderPairs = [],
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = body(status, message, host);
  // The reason phrase is given: a writeHead that failed on the agent's head has left its phrase behind.
  if (!(res instanceof Http2ServerResponse)) res.statusMessage = STATUS_CODES[status] ?? '';
  res.writeHead(status, {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...(code ? { 'x-burrow-error': code } : {}),
    ...Object.fromEntries(extra.map(([k, v]) => [k.toLowerCase(), v])),
  });
  if (res instanceof Http2ServerResponse) {
    // The answer does not wait for the rest of the request: once it is out, the client is asked
    // to stop sending (RST_STREAM NO_ERROR, RFC 9113 §8.1). A stream left half open would keep
    // its session from ever timing out, for as long as the client sends nothing more.
    const { stream } = res;
    stream.once('finish', () => {
      if (stream.closed || stream.destroyed || stream.state.remoteClose) return;
      stream.close(http2Constants.NGHTTP2_NO_ERROR);
    });
  }
  res.end(text);
}

/** `failure`'s page as a whole HTTP/1.1 response that ends the connection. */
export function closingResponse(failure: Readonly<ProxyFailure>): string {
  return rawErrorResponse(failure.status, failure.message, '', failure.code, 'connection: close\r\n');
}

/** The same page written on a raw socket (upgrade requests have no ServerResponse). */
export function sendRawError(socket: Duplex, status: number, message: string, host = '', code = ''): void {
  if (socket.destroyed) return;
  socket.end(rawErrorResponse(status, message, host, code, 'connection: close\r\n'));
  closeAfterAnswer(socket);
}

/** How long a client may keep a connection the relay has ended (its answer sent), ms. */
const LINGER = 5_000;

/**
 * For a raw socket whose answer ends the connection: what the client still
 * sends is dropped, so that its FIN is read and the socket closes; a client
 * that never closes its side loses the connection after LINGER of quiet
 * (upgrade sockets have no other timer, and each holds a connection slot).
 */
export function closeAfterAnswer(socket: Duplex): void {
  socket.resume();
  (socket as Duplex & { setTimeout?(ms: number, cb: () => void): void }).setTimeout?.(LINGER, () =>
    socket.destroy(),
  );
}

/**
 * The page as a whole HTTP/1.1 response; `connection` is the Connection field
 * line and any others to add. The answer to a HEAD request (`head`) is the
 * head alone (RFC 9110 §9.3.2): a body would be read as the next response.
 */
export function rawErrorResponse(
  status: number,
  message: string,
  host: string,
  code: string,
  connection: string,
  head = false,
): string {
  const text = body(status, message, host);
  return (
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n` +
    'content-type: text/plain; charset=utf-8\r\n' +
    `content-length: ${Buffer.byteLength(text)}\r\n` +
    'cache-control: no-store\r\n' +
    connection +
    (code ? `x-burrow-error: ${code}\r\n` : '') +
    `\r\n${head ? '' : text}`
  );
}
