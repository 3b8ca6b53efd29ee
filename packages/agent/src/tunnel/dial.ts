import type { IncomingMessage } from 'node:http';
import { maxMessageSize, TUNNEL_PATH, TUNNEL_SUBPROTOCOL } from '@burrow/shared';
import { WebSocket } from 'ws';

/** How much of a refusal body is kept for the log: the relay sends one short line. */
const MAX_REFUSAL_BODY = 512;

/** The relay answered the upgrade with an HTTP error (bad token, wrong path or version). */
export class RelayRefusedError extends Error {
  override readonly name = 'RelayRefusedError';
  readonly status: number;
  readonly body: string;
  constructor(status: number, body: string) {
    super(`relay refused the tunnel: HTTP ${status}${body ? `: ${body}` : ''}`);
    this.status = status;
    this.body = body;
  }

  /** 401/403: the token is wrong or not allowed; retrying soon cannot help. */
  get authFailure(): boolean {
    return this.status === 401 || this.status === 403;
  }
}

/** The tunnel endpoint URL for a relay URL given by the operator (`ws://relay:8443` → `ws://relay:8443/v1/tunnel`). */
export function tunnelEndpoint(relayUrl: string): string {
  const url = new URL(relayUrl);
  const path = url.pathname.replace(/\/+$/, '');
  url.pathname = path.endsWith(TUNNEL_PATH) ? path : `${path}${TUNNEL_PATH}`;
  return url.toString();
}

function printable(body: Buffer): string {
  return body
    .toString('utf8')
    .replace(/[^\x20-\x7e]+/g, ' ')
    .trim()
    .slice(0, 200);
}

/** Certificate checks that fail for a relay whose certificate comes from a private CA. */
const UNTRUSTED_CERTIFICATE = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
]);

/**
 * A failed dial in one line, with what the operator most likely has to
 * change when the cause is a common mistake: ws:// against a TLS listener or
 * the reverse, a private CA not given, or a URL that reaches one of the
 * relay's other listeners.
 */
export function describeDialFailure(err: Error, endpoint: string): string {
  const tls = endpoint.startsWith('wss:');
  const code = (err as NodeJS.ErrnoException).code ?? '';
  const text = err.message.replace(/\s+/g, ' ').trim();
  if (err instanceof RelayRefusedError) {
    if (err.status !== 404) return text;
    return `${text} (is --relay the relay's tunnel listener, --tunnel-listen, :8443 by default? Its public and admin ports do not take agents)`;
  }
  if (tls && (code === 'EPROTO' || /wrong version number|packet length too long/.test(text)))
    return `${text} (the relay's tunnel listener does not speak TLS: use ws://, or give the relay --tunnel-tls-cert)`;
  // What a TLS listener's close of a plaintext handshake looks like (a reset alone could be a restart).
  if (!tls && text === 'socket hang up')
    return `${text} (if the relay's tunnel listener uses TLS, --relay must start with wss://; otherwise the relay closed it, and its log says why)`;
  if (tls && UNTRUSTED_CERTIFICATE.has(code))
    return `${text} (a relay certificate from a private CA needs that CA: --relay-ca FILE)`;
  return text;
}

export interface DialHandlers {
  /**
   * Called from ws's 'open' event, synchronously: the relay's first frames can
   * ride in with the 101 and are emitted right after, so whatever consumes
   * messages must be attached before this returns.
   */
  open(ws: WebSocket): void;
  /** A RelayRefusedError (the status and the relay's one-line reason) or the network error. */
  fail(err: Error): void;
}

/** Opens the tunnel WebSocket. Exactly one handler is called; terminating `ws` while dialing calls `fail`. */
export function dialRelay(
  endpoint: string,
  token: string,
  handshakeTimeout: number,
  on: DialHandlers,
  ca?: string,
  maxMessage = maxMessageSize(),
): WebSocket {
  const ws = new WebSocket(endpoint, TUNNEL_SUBPROTOCOL, {
    // A private CA for the relay's certificate (wss://); the system store otherwise.
    ...(ca ? { ca } : {}),
    headers: { authorization: `Bearer ${token}` },
    perMessageDeflate: false,
    maxPayload: maxMessage,
    handshakeTimeout,
    followRedirects: false,
    // The tunnel's frames are written with an all-zero mask (WsTransport); this
    // gives the frames ws writes itself (close, pong) the same key.
    generateMask: (mask: Buffer) => void mask.fill(0),
  });
  let settled = false;
  let refusal: RelayRefusedError | undefined;
  const fail = (err: Error) => {
    if (settled) return;
    settled = true;
    on.fail(refusal ?? err);
  };
  ws.once('open', () => {
    if (settled) return;
    settled = true;
    on.open(ws);
  });
  ws.on('unexpected-response', (_req, res: IncomingMessage) => {
    // With this listener ws leaves the handshake to us: read the reason, then abort.
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => {
      clearTimeout(timer);
      refusal ??= new RelayRefusedError(res.statusCode ?? 0, printable(Buffer.concat(chunks)));
      ws.terminate(); // emits 'error' and 'close', which report the refusal
    };
    const timer = setTimeout(done, 2_000);
    res.on('data', (c: Buffer) => {
      if (size < MAX_REFUSAL_BODY) chunks.push(c.subarray(0, MAX_REFUSAL_BODY - size));
      size += c.length;
      if (size >= MAX_REFUSAL_BODY) done();
    });
    res.once('end', done);
    res.once('error', done);
  });
  // After 'open' the session's transport reports errors; this listener keeps a late one from being unhandled.
  ws.on('error', fail);
  ws.once('close', () => fail(new Error('connection closed during the WebSocket handshake')));
  return ws;
}
