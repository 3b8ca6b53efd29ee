import { once } from 'node:events';
import {
  createServer,
  request as httpRequest,
  type IncomingHttpHeaders,
  type OutgoingHttpHeaders,
  type RequestListener,
  type Server,
} from 'node:http';
import { type Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import type { Teardownable } from './relay.js';

/** An HTTP server on 127.0.0.1:0 closed at teardown. */
export async function testServer(
  t: Teardownable,
  handler: RequestListener,
  host = '127.0.0.1',
): Promise<{ server: Server; port: number; url: string }> {
  const server = createServer(handler);
  server.listen(0, host);
  await once(server, 'listening');
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  const port = (server.address() as AddressInfo).port;
  return { server, port, url: `http://${host}:${port}` };
}

export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** One request to the relay with a given Host header; collects the whole reply. */
export function get(
  port: number,
  host: string,
  path = '/',
  opts: {
    method?: string;
    headers?: OutgoingHttpHeaders;
    body?: Buffer | Readable;
    agent?: import('node:http').Agent | false;
  } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        method: opts.method ?? 'GET',
        headers: { host, ...opts.headers },
        agent: opts.agent ?? false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    if (opts.body && !Buffer.isBuffer(opts.body)) opts.body.pipe(req);
    else req.end(opts.body);
  });
}

export interface HttpsReply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
  /** The ALPN protocol the server picked. */
  alpn: string | false | null;
  /** The server certificate's serial number, issuer CN and SHA-256 fingerprint. */
  serial: string;
  issuer: string;
  fingerprint: string;
}

/**
 * One HTTP/1.1 GET over TLS to 127.0.0.1:port, trusting `ca`, with SNI and Host
 * set to `host`. The peer certificate is read before the body ends, while the
 * socket is still ours (a keep-alive `agent` takes it back then).
 */
export function httpsGet(
  port: number,
  host: string,
  ca: string,
  opts: { path?: string; agent?: HttpsAgent | false } = {},
): Promise<HttpsReply> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path: opts.path ?? '/',
        servername: host,
        headers: { host },
        ca,
        agent: opts.agent ?? false,
      },
      (res) => {
        const socket = res.socket as TLSSocket;
        const peer = socket.getPeerCertificate();
        const tls = {
          alpn: socket.alpnProtocol,
          serial: peer.serialNumber,
          issuer: String(peer.issuer?.CN ?? ''),
          fingerprint: peer.fingerprint256 ?? '',
        };
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
            ...tls,
          }),
        );
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end();
  });
}
