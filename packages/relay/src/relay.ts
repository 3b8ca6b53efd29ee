import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import { createServer } from 'node:http';
import type { ServerHttp2Session } from 'node:http2';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import {
  createLogger,
  type Logger,
  normalizeHost,
  patternAllows,
  type SessionConfig,
  type VerifyKey,
} from '@burrow/shared';
import { AcmeManager, type AcmeOptions } from './certs/acme.js';
import { CertFiles } from './certs/files.js';
import { serveHttpChallenge } from './certs/http-challenge.js';
import { CertStore } from './certs/store.js';
import { createHttpListener } from './listeners/http.js';
import { createHttpsTerminator } from './listeners/https.js';
import { createTlsListener } from './listeners/tls.js';
import type { AccessInfo } from './proxy/forward.js';
import { redirectToHttps } from './proxy/redirect.js';
import { RouteTable } from './routes/table.js';
import type { AgentConnection } from './tunnel/agent-connection.js';
import { TunnelEndpoint } from './tunnel/endpoint.js';

export interface RelayOptions {
  http: { host: string; port: number };
  tunnel: { host: string; port: number };
  /** Serve the tunnel endpoint over TLS (wss://) with this certificate chain and key (PEM). */
  tunnelTls?: { cert: string; key: string };
  /** Keys that verify agent tokens. */
  verifyKeys: readonly VerifyKey[];
  audience?: string;
  /** Port shown in URLs reported to agents (default: the HTTP listener's port). */
  publicHttpPort?: number;
  /** SIGTERM drain bound, ms. Default 30 s. */
  drainTimeout?: number;
  /** Time allowed for a backend's response head, ms. Default 60 s. */
  responseHeadTimeout?: number;
  /** Time allowed for a client's request head, ms. Default 20 s. */
  headersTimeout?: number;
  /** How long a hostname whose agent went away answers 503 instead of 404, ms. Default 10 min. */
  offlineGrace?: number;
  session?: Partial<SessionConfig>;
  logger?: Logger;
  onRequestDone?: (info: AccessInfo) => void;
  /** Public TLS listener: routes by SNI, passes through or terminates. Absent: no TLS listener. */
  tls?: { host: string; port: number };
  /** Port shown in https:// URLs and redirects (default: the TLS listener's port). */
  publicHttpsPort?: number;
  /** Certificates from PEM files: explicit pairs and/or a directory of NAME.crt + NAME.key. */
  certFiles?: { pairs?: Array<{ cert: string; key: string }>; dir?: string };
  /** Certificates from an ACME CA. */
  acme?: AcmeOptions;
  /** Redirect plain HTTP to HTTPS for names the relay serves over TLS. Default true. */
  httpsRedirect?: boolean;
  /** Strict-Transport-Security max-age, seconds, on terminated responses. Default: no header. */
  hstsMaxAge?: number;
  /** Time a TLS client has to send its ClientHello, ms. Default 10 s. */
  helloTimeout?: number;
}

export interface Relay {
  readonly id: string;
  readonly httpAddress: AddressInfo;
  readonly tunnelAddress: AddressInfo;
  /** The TLS listener's address, when one is configured. */
  readonly tlsAddress: AddressInfo | undefined;
  /** Certificates the relay presents: files and ACME. */
  readonly certs: CertStore;
  /** The ACME manager, when ACME is configured. */
  readonly acme: AcmeManager | undefined;
  /** Every certificate's expiry, one row per name (for metrics). */
  certificateExpiry(): Array<{ hostname: string; notAfter: Date }>;
  readonly routes: RouteTable<AgentConnection>;
  readonly connections: ReadonlySet<AgentConnection>;
  /** Replaces the token verification keys (hot reload). */
  setVerifyKeys(keys: readonly VerifyKey[]): void;
  /**
   * Graceful stop: stop accepting, GOAWAY to agents, let in-flight requests
   * finish (bounded by drainTimeout), then close everything.
   */
  close(): Promise<void>;
}

function listen(server: Server | NetServer, at: { host: string; port: number }): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(at.port, at.host, () => {
      server.off('error', reject);
      resolve(server.address() as AddressInfo);
    });
  });
}

/** Builds and starts a relay: the public HTTP listener and the tunnel endpoint. */
export async function startRelay(options: RelayOptions): Promise<Relay> {
  const id = randomUUID();
  const logger = options.logger ?? createLogger({ name: 'burrow-relay' });
  let keys = options.verifyKeys;
  let httpPort = options.publicHttpPort;
  let httpsPort = options.publicHttpsPort;
  const certs = new CertStore();
  const acmeDomains = options.acme?.domains ?? [];
  /** Can the relay serve this name over TLS (now, or once ACME has its certificate)? */
  const tlsCapable = (h: string) =>
    Boolean(options.tls) &&
    (Boolean(certs.find(h)) || (!h.startsWith('*.') && acmeDomains.some((p) => patternAllows(p, h))));
  const routes = new RouteTable<AgentConnection>({
    offlineGrace: options.offlineGrace ?? 10 * 60_000,
    urlFor: (h, mode) =>
      mode === 'tls-passthrough' || tlsCapable(h)
        ? `https://${h}${httpsPort && httpsPort !== 443 ? `:${httpsPort}` : ''}`
        : `http://${h}${httpPort && httpPort !== 80 ? `:${httpPort}` : ''}`,
  });
  const files = options.certFiles ? new CertFiles({ ...options.certFiles, store: certs, logger }) : undefined;
  await files?.start();
  const acme = options.acme
    ? new AcmeManager({ ...options.acme, store: certs, table: routes, logger })
    : undefined;
  const redirect = options.tls && options.httpsRedirect !== false;
  const drainTimeout = options.drainTimeout ?? 30_000;
  const tunnelServer = options.tunnelTls
    ? createHttpsServer({ cert: options.tunnelTls.cert, key: options.tunnelTls.key, minVersion: 'TLSv1.2' })
    : createServer();
  const endpoint = new TunnelEndpoint({
    server: tunnelServer,
    table: routes,
    keys: () => keys,
    audience: options.audience ?? 'burrow-relay',
    logger,
    relayId: id,
    session: { drainTimeout, ...options.session },
  });
  const httpServer = createHttpListener({
    table: routes,
    logger,
    proto: 'http',
    responseHeadTimeout: options.responseHeadTimeout ?? 60_000,
    headersTimeout: options.headersTimeout ?? 20_000,
    keepAliveTimeout: 5_000,
    ...(options.onRequestDone ? { onRequestDone: options.onRequestDone } : {}),
    intercept: (req, res) => {
      if (acme && serveHttpChallenge(req, res, (t) => acme.httpChallenge(t))) return true;
      if (!redirect || !httpsPort) return false;
      const host = normalizeHost(req.headers.host);
      const found = host ? routes.lookup(host) : undefined;
      if (found?.kind !== 'found') return false;
      if (found.binding.mode !== 'tls-passthrough' && !certs.find(host)) return false;
      redirectToHttps(req, res, httpsPort);
      return true;
    },
  });
  const terminator = createHttpsTerminator({
    table: routes,
    logger,
    certs,
    responseHeadTimeout: options.responseHeadTimeout ?? 60_000,
    headersTimeout: options.headersTimeout ?? 20_000,
    keepAliveTimeout: 5_000,
    ...(options.hstsMaxAge !== undefined ? { hstsMaxAge: options.hstsMaxAge } : {}),
    ...(options.onRequestDone ? { onRequestDone: options.onRequestDone } : {}),
  });
  const tlsSockets = new Set<Socket>();
  const tlsServer = options.tls
    ? createTlsListener({
        table: routes,
        certs,
        logger,
        terminator,
        ...(acme ? { acmeAlpn: acme.alpn } : {}),
        helloTimeout: options.helloTimeout ?? 10_000,
      })
    : undefined;
  tlsServer?.on('connection', (socket: Socket) => {
    tlsSockets.add(socket);
    socket.once('close', () => tlsSockets.delete(socket));
  });
  const h2Sessions = new Set<ServerHttp2Session>();
  terminator.on('session', (session) => {
    h2Sessions.add(session);
    session.once('close', () => h2Sessions.delete(session));
  });
  const opened: Array<Server | NetServer> = [];
  const closeOpened = () => {
    for (const s of opened) s.close();
    files?.close();
  };
  let httpAddress: AddressInfo;
  let tunnelAddress: AddressInfo;
  let tlsAddress: AddressInfo | undefined;
  try {
    httpAddress = await listen(httpServer, options.http);
    opened.push(httpServer);
    httpPort ??= httpAddress.port;
    tunnelAddress = await listen(tunnelServer, options.tunnel);
    opened.push(tunnelServer);
    if (tlsServer && options.tls) {
      tlsAddress = await listen(tlsServer, options.tls);
      opened.push(tlsServer);
      httpsPort ??= tlsAddress.port;
    }
    await acme?.start();
  } catch (err) {
    closeOpened();
    throw err;
  }
  logger.info(
    { http: httpAddress, tunnel: tunnelAddress, ...(tlsAddress ? { tls: tlsAddress } : {}), relayId: id },
    'relay listening',
  );

  let closing: Promise<void> | undefined;
  return {
    id,
    httpAddress,
    tunnelAddress,
    tlsAddress,
    certs,
    acme,
    certificateExpiry() {
      return certs.expiries().map(({ hostname, notAfter }) => ({ hostname, notAfter }));
    },
    routes,
    connections: endpoint.connections,
    setVerifyKeys(next) {
      keys = next;
    },
    close() {
      closing ??= (async () => {
        logger.info({ drainTimeout }, 'relay draining');
        const httpClosed = new Promise<void>((resolve) => httpServer.close(() => resolve()));
        const tunnelClosed = new Promise<void>((resolve) => tunnelServer.close(() => resolve()));
        const tlsClosed = new Promise<void>((resolve) =>
          tlsServer ? tlsServer.close(() => resolve()) : resolve(),
        );
        acme?.close();
        files?.close();
        httpServer.closeIdleConnections();
        // h2 clients get GOAWAY: open streams finish, new requests go to a new connection.
        for (const session of h2Sessions) session.close();
        const deadline = setTimeout(() => {
          httpServer.closeAllConnections();
          for (const socket of tlsSockets) socket.destroy();
          endpoint.destroyAll();
        }, drainTimeout + 1_000);
        deadline.unref();
        // Requests already in flight finish on their streams; agents get GOAWAY
        // so they reconnect (to another relay, or to this one once restarted).
        // Keep-alive connections become idle as their last response ends; close
        // them as they do, so the drain ends as soon as the work does.
        const sweeper = setInterval(() => httpServer.closeIdleConnections(), 100);
        await endpoint.drain();
        // Passthrough and HTTP/1 TLS connections outlive their streams; nothing is left to carry them.
        for (const socket of tlsSockets) socket.destroy();
        await Promise.all([httpClosed, tunnelClosed, tlsClosed]);
        clearInterval(sweeper);
        clearTimeout(deadline);
        logger.info('relay stopped');
      })();
      return closing;
    },
  };
}
