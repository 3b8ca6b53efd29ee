import { createSecureServer, type Http2SecureServer } from 'node:http2';
import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import type { CertStore } from '../certs/store.js';
import { type ClientRequest, type ForwardOptions, forwardRequest, forwardUpgrade } from '../proxy/forward.js';

export interface HttpsTerminatorOptions extends Omit<ForwardOptions, 'proto' | 'sniOf'> {
  certs: CertStore;
  /** Strict-Transport-Security max-age in seconds; undefined sends no HSTS header. */
  hstsMaxAge?: number;
}

/**
 * Terminates TLS for routes the relay holds a certificate for, and routes the
 * HTTP inside exactly as the plain listener does (proxy/forward.ts). ALPN
 * offers h2 and http/1.1; each h2 request becomes its own tunnel stream, like
 * each HTTP/1 request. It never listens: the TLS listener hands it sockets
 * after peeking at their ClientHello.
 */
export function createHttpsTerminator(opts: HttpsTerminatorOptions): Http2SecureServer {
  const forward: ForwardOptions = {
    ...opts,
    proto: 'https',
    sniOf: (req: ClientRequest) => {
      const name = (req.socket as TLSSocket).servername;
      return typeof name === 'string' ? name.toLowerCase() : undefined;
    },
    ...(opts.hstsMaxAge !== undefined
      ? { responseHeaders: [['Strict-Transport-Security', `max-age=${opts.hstsMaxAge}`]] }
      : {}),
  };
  const server = createSecureServer({
    allowHTTP1: true,
    minVersion: 'TLSv1.2',
    SNICallback: (name, cb) => {
      const entry = opts.certs.find(name.toLowerCase());
      if (entry) cb(null, entry.context);
      else cb(new Error(`no certificate for ${name}`));
    },
  });
  server.on('request', (req, res) => {
    forwardRequest(forward, req, res).catch((err) => {
      opts.logger.error({ err }, 'request handling failed');
      res.destroy();
    });
  });
  // HTTP/1.1 upgrades (WebSocket) on a terminated connection: same raw splice as on the plain listener.
  server.on('upgrade', (req, socket: Socket, head: Buffer) => {
    forwardUpgrade(forward, req, socket, head).catch((err) => {
      opts.logger.error({ err }, 'upgrade handling failed');
      socket.destroy();
    });
  });
  server.on('tlsClientError', (err: NodeJS.ErrnoException, socket: TLSSocket) => {
    opts.logger.info(
      { client: socket.remoteAddress, reason: err.code ?? err.message },
      'tls handshake failed',
    );
  });
  server.on('sessionError', (err: Error) => {
    opts.logger.debug({ reason: err.message }, 'http2 session error');
  });
  return server;
}
