import { randomUUID, X509Certificate } from 'node:crypto';
import type { Server } from 'node:http';
import { createServer } from 'node:http';
import { Http2ServerRequest } from 'node:http2';
import { createServer as createHttpsServer, Server as HttpsServer } from 'node:https';
import type { AddressInfo, Server as NetServer } from 'node:net';
import {
  createLogger,
  isLoopbackHost,
  type Logger,
  normalizeHost,
  patternAllows,
  type SessionConfig,
  type VerifyKey,
  WarningPacer,
} from '@burrow/shared';
import type { FastifyInstance } from 'fastify';
import { Activity } from './activity.js';
import { type AdminState, buildAdminApp } from './admin/app.js';
import { relayAdminState } from './admin/state.js';
import { AcmeManager, type AcmeOptions } from './certs/acme.js';
import { CertFiles } from './certs/files.js';
import { CHALLENGE_PREFIX, serveHttpChallenge } from './certs/http-challenge.js';
import { CertStore } from './certs/store.js';
import {
  autoMaxConnections,
  dropReporter,
  limitConnections,
  openFileLimit,
} from './listeners/connection-limit.js';
import { createHttpListener } from './listeners/http.js';
import { TcpListeners } from './listeners/tcp.js';
import { TlsFront } from './listeners/tls-front.js';
import {
  admitTunnelConnections,
  MAX_WAITING,
  MAX_WAITING_PER_ADDRESS,
  TUNNEL_HANDSHAKE_TIMEOUT,
  TUNNEL_SERVER_OPTIONS,
} from './listeners/tunnel-admission.js';
import { RelayMetrics } from './metrics.js';
import { type AccessInfo, requestHost } from './proxy/forward.js';
import { Http1Pool } from './proxy/http1-pool.js';
import { redirectToHttps } from './proxy/redirect.js';
import { invalidRequest } from './proxy/validate-request.js';
import { describePorts, PortTable } from './routes/ports.js';
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
  /**
   * Client connections each public listener (HTTP, TLS) holds open; more are
   * closed as they arrive. Default: the open-file limit less 1024, shared by
   * the listeners (none where that limit is unknown).
   */
  maxConnections?: number;
  /** Tunnel connections one token subject may hold open; more are refused with 429. Default 64. */
  maxTunnelsPerSubject?: number;
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
  /**
   * Public TCP ports agents may claim (a token's `ports` lists which), each
   * listened on at `host` from the start. `publicHost`: the relay's public
   * name, for the tcp:// URLs reported to agents. Absent: no TCP ports.
   */
  tcp?: { host: string; ports: readonly number[]; publicHost?: string };
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
  /**
   * Carry plain HTTP/1.1 requests on the fast path (ADR 006). Default true;
   * false sends every request through Node's parser and a stream of its own.
   */
  http1FastPath?: boolean;
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
  /** Every certificate's expiry, one row per name (also exported as a metric). */
  certificateExpiry(): Array<{ hostname: string; notAfter: Date }>;
  readonly routes: RouteTable<AgentConnection>;
  /** Which agent connections serve which public TCP port. */
  readonly ports: PortTable<AgentConnection>;
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
   * Reads the certificate files (`certFiles`) again now, as a change to them
   * does: for SIGHUP, which also reaches a change no watch sees. Never
   * rejects: a failure keeps the certificates in use, and is logged.
   */
  reloadCertificateFiles(): Promise<void>;
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
  const startedAt = Date.now();
  const logger = options.logger ?? createLogger({ name: 'burrow-relay' });
  let keys = options.verifyKeys;
  let revoked: ReadonlySet<string> = new Set(options.revokedTokens ?? []);
  let adminToken = options.adminToken;
  let closing: Promise<void> | undefined;
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
  const tcpPublicHost = options.tcp?.publicHost;
  const ports = new PortTable<AgentConnection>({
    ports: options.tcp?.ports ?? [],
    offlineGrace: options.offlineGrace ?? 10 * 60_000,
    urlFor: (port) =>
      tcpPublicHost
        ? `tcp://${tcpPublicHost.includes(':') ? `[${tcpPublicHost}]` : tcpPublicHost}:${port}`
        : undefined,
  });
  const files = options.certFiles ? new CertFiles({ ...options.certFiles, store: certs, logger }) : undefined;
  const acme = options.acme
    ? new AcmeManager({ ...options.acme, store: certs, table: routes, logger })
    : undefined;
  const redirect = options.tls && options.httpsRedirect !== false;
  const drainTimeout = options.drainTimeout ?? 30_000;
  const tunnelServer = options.tunnelTls
    ? createHttpsServer({
        cert: options.tunnelTls.cert,
        key: options.tunnelTls.key,
        minVersion: 'TLSv1.2',
        handshakeTimeout: TUNNEL_HANDSHAKE_TIMEOUT,
        ...TUNNEL_SERVER_OPTIONS,
      })
    : createServer(TUNNEL_SERVER_OPTIONS);
  const tunnelPacer = new WarningPacer(10_000);
  const tunnelWaiting = admitTunnelConnections(tunnelServer, () => {
    metrics.connectionDropped('tunnel');
    const held = tunnelPacer.pass('tunnel');
    if (held === undefined) return;
    logger.warn(
      { maxWaiting: MAX_WAITING, maxWaitingPerAddress: MAX_WAITING_PER_ADDRESS, dropped: held + 1 },
      'tunnel endpoint: too many connections waiting to upgrade; new ones are closed at once',
    );
  });
  const endpoint = new TunnelEndpoint({
    server: tunnelServer,
    table: routes,
    ports,
    keys: () => keys,
    audience: options.audience ?? 'burrow-relay',
    logger,
    relayId: id,
    session: { drainTimeout, ...options.session },
    isRevoked: (jti) => revoked.has(jti),
    onRefused: (reason) => metrics.refused(reason),
    onTunnel: (socket) => tunnelWaiting.admitted(socket),
    maxPerSubject: options.maxTunnelsPerSubject ?? 64,
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
    ports,
    activity,
    metrics,
    startedAt,
    notReady: () => (closing ? 'draining' : undefined),
  });
  // Both listeners report requests and streams the same way.
  const hooks = {
    onRequestDone: (info: AccessInfo) => {
      metrics.requestDone(info);
      activity.record(info);
      options.onRequestDone?.(info);
    },
    onStreamOpen: (route: string, stream: { on(e: 'close', fn: () => void): unknown }) =>
      metrics.streamOpened(route, (fn) => stream.on('close', fn)),
    draining: () => closing !== undefined,
  };
  // HTTP/1.1 upstreams kept between requests, shared by the plain and TLS listeners (the fast path's).
  const upstreams =
    options.http1FastPath === false ? undefined : new Http1Pool({ onStreamOpen: hooks.onStreamOpen });
  /** Whether a plain-HTTP request for `host` is answered with a redirect to HTTPS. */
  const redirects = (host: string): boolean => {
    if (!redirect || !httpsPort || !host) return false;
    const found = routes.lookup(host);
    return (
      found.kind === 'found' && (found.binding.mode === 'tls-passthrough' || certs.find(host) !== undefined)
    );
  };
  const httpServer = createHttpListener({
    table: routes,
    logger,
    proto: 'http',
    responseHeadTimeout: options.responseHeadTimeout ?? 60_000,
    headersTimeout: options.headersTimeout ?? 20_000,
    keepAliveTimeout: 5_000,
    ...hooks,
    ...(upstreams ? { upstreams } : {}),
    intercept: (req, res) => {
      if (acme && serveHttpChallenge(req, res, (t) => acme.httpChallenge(t))) return true;
      const host = normalizeHost(requestHost(req));
      if (!redirects(host)) return false;
      // A malformed request gets its 400 from forwardRequest, not a redirect (HTTP/2 frames its own).
      if (!(req instanceof Http2ServerRequest) && invalidRequest(req, host)) return false;
      redirectToHttps(req, res, httpsPort!);
      return true;
    },
    intercepts: (host, target) =>
      (acme !== undefined && target.startsWith(CHALLENGE_PREFIX)) || redirects(host),
  });
  const front = options.tls
    ? new TlsFront({
        table: routes,
        certs,
        logger,
        ...(acme ? { acmeAlpn: acme.alpn } : {}),
        helloTimeout: options.helloTimeout ?? 10_000,
        responseHeadTimeout: options.responseHeadTimeout ?? 60_000,
        headersTimeout: options.headersTimeout ?? 20_000,
        keepAliveTimeout: 5_000,
        ...(options.hstsMaxAge !== undefined ? { hstsMaxAge: options.hstsMaxAge } : {}),
        ...hooks,
        ...(upstreams ? { upstreams } : {}),
      })
    : undefined;
  // Client connections per public listener (the TCP ports count as one); over it, they are closed
  // as they arrive.
  const listeners = 1 + (front ? 1 : 0) + (options.tcp?.ports.length ? 1 : 0);
  const maxConnections = options.maxConnections ?? autoMaxConnections(listeners, openFileLimit());
  const dropped =
    maxConnections === undefined
      ? undefined
      : dropReporter(logger, maxConnections, (l) => metrics.connectionDropped(l));
  if (maxConnections !== undefined && dropped) {
    limitConnections(httpServer, maxConnections, () => dropped('http'));
    if (front) limitConnections(front.server, maxConnections, () => dropped('tls'));
  }
  const tcp = options.tcp?.ports.length
    ? new TcpListeners({
        host: options.tcp.host,
        ports: options.tcp.ports,
        table: ports,
        logger,
        maxConnections,
        ...(dropped ? { onDrop: () => dropped('tcp') } : {}),
        draining: hooks.draining,
      })
    : undefined;
  // The metric follows the store: every name of every certificate, removed when it goes.
  let exported = new Set<string>();
  certs.on('change', () => {
    const now = new Map(certs.expiries().map((e) => [e.hostname, e.notAfter] as const));
    for (const name of exported) if (!now.has(name)) metrics.setCertificateExpiry(name, undefined);
    for (const [name, notAfter] of now) metrics.setCertificateExpiry(name, notAfter);
    exported = new Set(now.keys());
  });
  const opened: Array<Server | NetServer> = [];
  let httpAddress: AddressInfo;
  let tunnelAddress: AddressInfo;
  let tlsAddress: AddressInfo | undefined;
  let admin: FastifyInstance | undefined;
  let adminAddress: AddressInfo | undefined;
  try {
    await files?.start();
    httpAddress = await listen(httpServer, options.http);
    opened.push(httpServer);
    httpPort ??= httpAddress.port;
    tunnelAddress = await listen(tunnelServer, options.tunnel);
    opened.push(tunnelServer);
    if (front && options.tls) {
      tlsAddress = await listen(front.server, options.tls);
      opened.push(front.server);
      httpsPort ??= tlsAddress.port;
    }
    await tcp?.start();
    await acme?.start();
    if (options.admin) {
      admin = buildAdminApp({ state: adminState, token: () => adminToken });
      await admin.listen({ host: options.admin.host, port: options.admin.port });
      adminAddress = admin.server.address() as AddressInfo;
    }
  } catch (err) {
    for (const s of opened) s.close();
    void tcp?.stopAccepting();
    files?.close();
    acme?.close();
    throw err;
  }
  if (options.tunnelTls) metrics.setCertificateExpiry('tunnel', certificateExpiry(options.tunnelTls.cert));
  logger.info(
    {
      http: httpAddress,
      tunnel: tunnelAddress,
      ...(tlsAddress ? { tls: tlsAddress } : {}),
      ...(options.tcp?.ports.length
        ? { tcp: { host: options.tcp.host, ports: describePorts(options.tcp.ports) } }
        : {}),
      ...(adminAddress ? { admin: adminAddress } : {}),
      maxConnections: maxConnections ?? 'none',
      relayId: id,
    },
    'relay listening',
  );
  if (!options.tunnelTls && !isLoopbackHost(tunnelAddress.address))
    logger.warn(
      { tunnel: tunnelAddress },
      'the tunnel listener has no TLS and is reachable from other machines: agent tokens cross the network in clear text; give it --tunnel-tls-cert and --tunnel-tls-key, or keep it on 127.0.0.1 behind a TLS proxy (docs/install.md)',
    );

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
    ports,
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
      metrics.revoked(closed);
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
    reloadCertificateFiles() {
      return files?.reload() ?? Promise.resolve();
    },
    close() {
      closing ??= (async () => {
        logger.info({ drainTimeout }, 'relay draining');
        const httpClosed = new Promise<void>((resolve) => httpServer.close(() => resolve()));
        const tunnelClosed = new Promise<void>((resolve) => tunnelServer.close(() => resolve()));
        const tlsClosed = front?.stopAccepting() ?? Promise.resolve();
        const tcpClosed = tcp?.stopAccepting();
        acme?.close();
        files?.close();
        httpServer.closeIdleConnections();
        // Connections that have not asked for a tunnel yet have nothing to finish.
        tunnelWaiting.destroyWaiting();
        tunnelServer.closeIdleConnections();
        const deadline = setTimeout(() => {
          // A connection still sending its request head holds close() for good: Node stops
          // timing heads out once the server closes. The tunnel endpoint and the admin API are
          // public listeners too.
          httpServer.closeAllConnections();
          tunnelServer.closeAllConnections();
          admin?.server.closeAllConnections();
          front?.destroyAll();
          tcp?.destroyAll();
          endpoint.destroyAll();
        }, drainTimeout + 1_000);
        deadline.unref();
        // Requests already in flight finish on their streams; agents get GOAWAY
        // so they reconnect (to another relay, or to this one once restarted).
        // Keep-alive connections become idle as their last response ends; close
        // them as they do, so the drain ends as soon as the work does.
        const sweeper = setInterval(() => {
          httpServer.closeIdleConnections();
          front?.closeIdleConnections();
        }, 100);
        // HTTP/2 requests already accepted open their tunnel streams one event-loop turn after
        // they arrive (forward.ts, the rapid-reset guard); their clients have GOAWAY now, so no
        // more come. Once they have had that turn, agents get GOAWAY, after which the relay
        // opens no stream: sooner, those requests would be answered 503 with their agents fine.
        for (let turn = 0; turn < 2; turn++) await new Promise<void>((resolve) => setImmediate(resolve));
        // Requests are waited for; WebSocket and TCP connections only while they carry bytes:
        // an idle one never ends by itself, and would hold the restart until the deadline.
        const closedQuiet = await endpoint.drain();
        if (closedQuiet > 0)
          logger.info({ connections: closedQuiet }, 'drain closed quiet long-lived connections');
        // No stream is left: TLS connections close once what they are sending is out
        // (or at the deadline), never before, so no response is cut.
        await Promise.all([httpClosed, tunnelClosed, tlsClosed, tcpClosed, front?.settle()]);
        // The admin listener goes last: /readyz says "draining" while the drain runs. Its
        // connections close with it, a request head half sent included (Node stops timing those
        // out once a server closes, and it would hold the stop until the deadline).
        admin?.server.closeAllConnections();
        await admin?.close();
        clearInterval(sweeper);
        clearTimeout(deadline);
        logger.info('relay stopped');
      })();
      return closing;
    },
  };
}
