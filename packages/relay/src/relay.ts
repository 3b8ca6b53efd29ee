import { randomUUID, X509Certificate } from 'node:crypto';
import type { Server } from 'node:http';
import { createServer } from 'node:http';
import { createServer as createHttpsServer, Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { createLogger, type Logger, type SessionConfig, type VerifyKey } from '@burrow/shared';
import type { FastifyInstance } from 'fastify';
import { Activity } from './activity.js';
import { type AdminState, buildAdminApp } from './admin/app.js';
import { relayAdminState } from './admin/state.js';
import { createHttpListener } from './listeners/http.js';
import { RelayMetrics } from './metrics.js';
import type { AccessInfo } from './proxy/forward.js';
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
  /** Admin API, metrics and dashboard listener; none when omitted. */
  admin?: { host: string; port: number };
  /** Bearer token for the admin API; without one, everything but the probes answers 401. */
  adminToken?: string;
  /** Token ids (`jti`) whose tunnels are refused. */
  revokedTokens?: readonly string[];
  logger?: Logger;
  onRequestDone?: (info: AccessInfo) => void;
}

export interface Relay {
  readonly id: string;
  readonly httpAddress: AddressInfo;
  readonly tunnelAddress: AddressInfo;
  readonly routes: RouteTable<AgentConnection>;
  readonly connections: ReadonlySet<AgentConnection>;
  /** The admin listener's address, when `admin` was given. */
  readonly adminAddress: AddressInfo | undefined;
  /** This relay's Prometheus metrics (its own registry). */
  readonly metrics: RelayMetrics;
  /** What the admin API shows, for buildAdminApp() in tests or other wiring. */
  readonly adminState: AdminState;
  /** Replaces the token verification keys (hot reload). */
  setVerifyKeys(keys: readonly VerifyKey[]): void;
  /**
   * Replaces the revocation list (hot reload): tunnels authenticated with a
   * listed token id are closed at once. Returns how many were closed.
   */
  setRevokedTokens(jtis: readonly string[]): number;
  /** Replaces the admin bearer token (hot reload); undefined closes the API. */
  setAdminToken(token: string | undefined): void;
  /**
   * Replaces the tunnel endpoint's certificate and key (hot reload): new
   * handshakes use them, established tunnels keep theirs. Throws when the
   * endpoint was started without TLS (switching ws:// to wss:// needs a restart).
   */
  setTunnelTls(tls: { cert: string; key: string }): void;
  /**
   * Graceful stop: stop accepting, GOAWAY to agents, let in-flight requests
   * finish (bounded by drainTimeout), then close everything.
   */
  close(): Promise<void>;
}

/** notAfter of the first (leaf) certificate of a PEM chain. */
function certificateExpiry(pem: string): Date | undefined {
  try {
    return new Date(new X509Certificate(pem).validTo);
  } catch {
    return undefined;
  }
}

function listen(server: Server, at: { host: string; port: number }): Promise<AddressInfo> {
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
  const startedAt = Date.now();
  const logger = options.logger ?? createLogger({ name: 'burrow-relay' });
  let keys = options.verifyKeys;
  let revoked: ReadonlySet<string> = new Set(options.revokedTokens ?? []);
  let adminToken = options.adminToken;
  let closing: Promise<void> | undefined;
  let httpPort = options.publicHttpPort;
  const routes = new RouteTable<AgentConnection>({
    offlineGrace: options.offlineGrace ?? 10 * 60_000,
    urlFor: (h) => `http://${h}${httpPort && httpPort !== 80 ? `:${httpPort}` : ''}`,
  });
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
    isRevoked: (jti) => revoked.has(jti),
    onRefused: (reason) => metrics.refused(reason),
  });
  const activity = new Activity();
  const metrics = new RelayMetrics({
    connections: endpoint.connections,
    routes,
    revokedTokens: () => revoked.size,
  });
  const adminState = relayAdminState({
    connections: endpoint.connections,
    routes,
    activity,
    metrics,
    startedAt,
    notReady: () => (closing ? 'draining' : undefined),
  });
  const httpServer = createHttpListener({
    table: routes,
    logger,
    proto: 'http',
    responseHeadTimeout: options.responseHeadTimeout ?? 60_000,
    headersTimeout: options.headersTimeout ?? 20_000,
    keepAliveTimeout: 5_000,
    onRequestDone: (info) => {
      metrics.requestDone(info);
      activity.record(info);
      options.onRequestDone?.(info);
    },
    onStreamOpen: (route, stream) => metrics.streamOpened(route, (fn) => stream.once('close', fn)),
  });
  const httpAddress = await listen(httpServer, options.http);
  httpPort ??= httpAddress.port;
  let tunnelAddress: AddressInfo;
  try {
    tunnelAddress = await listen(tunnelServer, options.tunnel);
  } catch (err) {
    httpServer.close();
    throw err;
  }
  let admin: FastifyInstance | undefined;
  let adminAddress: AddressInfo | undefined;
  if (options.admin) {
    admin = buildAdminApp({ state: adminState, token: () => adminToken });
    try {
      await admin.listen({ host: options.admin.host, port: options.admin.port });
    } catch (err) {
      httpServer.close();
      tunnelServer.close();
      throw err;
    }
    adminAddress = admin.server.address() as AddressInfo;
  }
  if (options.tunnelTls) metrics.setCertificateExpiry('tunnel', certificateExpiry(options.tunnelTls.cert));
  logger.info(
    {
      http: httpAddress,
      tunnel: tunnelAddress,
      ...(adminAddress ? { admin: adminAddress } : {}),
      relayId: id,
    },
    'relay listening',
  );

  return {
    id,
    httpAddress,
    tunnelAddress,
    routes,
    connections: endpoint.connections,
    adminAddress,
    metrics,
    adminState,
    setVerifyKeys(next) {
      keys = next;
    },
    setRevokedTokens(jtis) {
      revoked = new Set(jtis);
      const closed = endpoint.revoke(revoked);
      for (let i = 0; i < closed; i++) metrics.revoked();
      return closed;
    },
    setAdminToken(token) {
      adminToken = token;
    },
    setTunnelTls(tls) {
      if (!(tunnelServer instanceof HttpsServer))
        throw new Error('the tunnel endpoint runs without TLS; enabling it needs a restart');
      tunnelServer.setSecureContext({ cert: tls.cert, key: tls.key, minVersion: 'TLSv1.2' });
      metrics.setCertificateExpiry('tunnel', certificateExpiry(tls.cert));
    },
    close() {
      closing ??= (async () => {
        logger.info({ drainTimeout }, 'relay draining');
        const httpClosed = new Promise<void>((resolve) => httpServer.close(() => resolve()));
        const tunnelClosed = new Promise<void>((resolve) => tunnelServer.close(() => resolve()));
        httpServer.closeIdleConnections();
        const deadline = setTimeout(() => {
          httpServer.closeAllConnections();
          endpoint.destroyAll();
        }, drainTimeout + 1_000);
        deadline.unref();
        // Requests already in flight finish on their streams; agents get GOAWAY
        // so they reconnect (to another relay, or to this one once restarted).
        // Keep-alive connections become idle as their last response ends; close
        // them as they do, so the drain ends as soon as the work does.
        const sweeper = setInterval(() => httpServer.closeIdleConnections(), 100);
        await endpoint.drain();
        await Promise.all([httpClosed, tunnelClosed]);
        // The admin listener goes last: /readyz says "draining" while the drain runs.
        await admin?.close();
        clearInterval(sweeper);
        clearTimeout(deadline);
        logger.info('relay stopped');
      })();
      return closing;
    },
  };
}
