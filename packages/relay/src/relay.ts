import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import { createServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { createLogger, type Logger, type SessionConfig, type VerifyKey } from '@burrow/shared';
import { createHttpListener } from './listeners/http.js';
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
  logger?: Logger;
  onRequestDone?: (info: AccessInfo) => void;
}

export interface Relay {
  readonly id: string;
  readonly httpAddress: AddressInfo;
  readonly tunnelAddress: AddressInfo;
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
  const logger = options.logger ?? createLogger({ name: 'burrow-relay' });
  let keys = options.verifyKeys;
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
  });
  const httpServer = createHttpListener({
    table: routes,
    logger,
    proto: 'http',
    responseHeadTimeout: options.responseHeadTimeout ?? 60_000,
    headersTimeout: options.headersTimeout ?? 20_000,
    keepAliveTimeout: 5_000,
    ...(options.onRequestDone ? { onRequestDone: options.onRequestDone } : {}),
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
  logger.info({ http: httpAddress, tunnel: tunnelAddress, relayId: id }, 'relay listening');

  let closing: Promise<void> | undefined;
  return {
    id,
    httpAddress,
    tunnelAddress,
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
        clearInterval(sweeper);
        clearTimeout(deadline);
        logger.info('relay stopped');
      })();
      return closing;
    },
  };
}
