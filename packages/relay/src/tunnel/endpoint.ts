import type { IncomingMessage, Server } from 'node:http';
import { STATUS_CODES } from 'node:http';
import { isIP } from 'node:net';
import type { Duplex } from 'node:stream';
import {
  type AgentClaims,
  createSession,
  type Logger,
  maxMessageSize,
  type SessionConfig,
  TokenRevokedError,
  TUNNEL_PATH,
  TUNNEL_SUBPROTOCOL,
  type VerifyKey,
  verifyAgentToken,
  WsTransport,
} from '@burrow/shared';
import { WebSocketServer } from 'ws';
import type { RefusalReason } from '../metrics.js';
import { closeAfterAnswer } from '../proxy/errors.js';
import { clientIp } from '../proxy/forward.js';
import type { PortTable } from '../routes/ports.js';
import type { RouteTable } from '../routes/table.js';
import { AgentConnection } from './agent-connection.js';
import { AnnounceGate } from './announce-gate.js';

export interface TunnelEndpointOptions {
  server: Server;
  table: RouteTable<AgentConnection>;
  /** The relay's public TCP ports; without it, announced ports are refused as not offered. */
  ports?: PortTable<AgentConnection>;
  keys: () => readonly VerifyKey[];
  audience: string;
  logger: Logger;
  relayId: string;
  session?: Partial<SessionConfig>;
  /** True when a token id is on the revocation list. */
  isRevoked?: (jti: string) => boolean;
  /** Called for each agent connection that passed authentication. */
  onConnection?: (conn: AgentConnection) => void;
  /** Called with the socket of each upgrade that became a tunnel (tunnel-admission.ts). */
  onTunnel?: (socket: Duplex) => void;
  /** Called for each refused agent upgrade or announced route (metrics). */
  onRefused?: (reason: RefusalReason) => void;
  /**
   * Tunnel connections one token subject may hold open (replicas times their
   * connections); one more is refused with 429. Bounds what one tenant's
   * tunnels can hold of the relay's memory. Unlimited when absent.
   */
  maxPerSubject?: number;
}

/**
 * The tunnel endpoint: WebSocket upgrades at /v1/tunnel, authenticated with
 * the agent's bearer token before the upgrade completes. A refused agent gets
 * a real HTTP status and a one-line reason, never a silent socket close.
 */
export class TunnelEndpoint {
  readonly #opts: TunnelEndpointOptions;
  #draining = false;
  /** Drains of connections whose upgrade completed after drain() began. */
  readonly #lateDrains: Promise<number>[] = [];
  readonly #wss: WebSocketServer;
  /** Route announcements, paced per subject (announce-gate.ts). */
  readonly #gate = new AnnounceGate();
  readonly connections = new Set<AgentConnection>();
  /** Open tunnel connections per token subject, for `maxPerSubject`. */
  readonly #perSubject = new Map<string, number>();

  constructor(opts: TunnelEndpointOptions) {
    this.#opts = opts;
    this.#wss = new WebSocketServer({
      noServer: true,
      perMessageDeflate: false,
      maxPayload: maxMessageSize(opts.session),
      clientTracking: false,
      handleProtocols: (protocols) => (protocols.has(TUNNEL_SUBPROTOCOL) ? TUNNEL_SUBPROTOCOL : false),
    });
    opts.server.on('upgrade', (req, socket, head) => {
      this.#onUpgrade(req, socket, head).catch((err) => {
        opts.logger.error({ err }, 'tunnel upgrade failed');
        reject(socket, 500, 'internal error');
      });
    });
    opts.server.on('request', (req, res) => {
      const body = `This is a Burrow tunnel endpoint: agents connect with a WebSocket upgrade at ${TUNNEL_PATH}.\n`;
      // The path alone, as for upgrades: a query does not make it another endpoint.
      const path = (req.url ?? '').split('?')[0];
      res.writeHead(path === TUNNEL_PATH ? 426 : 404, {
        'content-type': 'text/plain; charset=utf-8',
        upgrade: 'websocket',
        // Nothing else is served here: a connection is not kept for more (it holds a slot, above).
        connection: 'close',
      });
      res.end(body);
    });
  }

  async #onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const log = this.#opts.logger;
    const remote = agentAddress(req);
    socket.on('error', () => {}); // a client that vanishes mid-handshake is not our error
    const path = (req.url ?? '').split('?')[0];
    if (path !== TUNNEL_PATH) return reject(socket, 404, `no tunnel endpoint at ${path}; use ${TUNNEL_PATH}`);
    if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket')
      return reject(socket, 400, 'expected a WebSocket upgrade');
    const offered = (req.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
    if (!offered.includes(TUNNEL_SUBPROTOCOL)) {
      log.warn({ remote, offered }, 'agent refused: unsupported tunnel protocol version');
      this.#opts.onRefused?.('protocol_version');
      return reject(
        socket,
        400,
        `unsupported tunnel protocol version (offered: ${offered.filter(Boolean).join(', ') || 'none'}); this relay speaks ${TUNNEL_SUBPROTOCOL}`,
      );
    }
    const auth = req.headers.authorization ?? '';
    // The scheme is case-insensitive (RFC 9110 §11.1): `bearer` and `BEARER` are Bearer too.
    const match = /^bearer +([A-Za-z0-9._~+/=-]+)$/i.exec(auth);
    if (!match) {
      this.#opts.onRefused?.('token_missing');
      return reject(socket, 401, 'missing bearer token', { 'www-authenticate': 'Bearer' });
    }
    let claims: AgentClaims;
    try {
      claims = await verifyAgentToken(match[1]!, this.#opts.keys(), this.#opts.audience);
    } catch (err) {
      const reason = (err as Error).message;
      log.warn({ remote, reason }, 'agent refused: token rejected');
      this.#opts.onRefused?.('token_invalid');
      return reject(socket, 401, reason, { 'www-authenticate': 'Bearer error="invalid_token"' });
    }
    if (this.#opts.isRevoked?.(claims.jti)) {
      log.warn({ remote, subject: claims.sub, jti: claims.jti }, 'agent refused: token revoked');
      this.#opts.onRefused?.('token_revoked');
      return reject(socket, 401, 'token revoked', { 'www-authenticate': 'Bearer error="invalid_token"' });
    }
    const max = this.#opts.maxPerSubject;
    if (max !== undefined && (this.#perSubject.get(claims.sub) ?? 0) >= max) {
      log.warn(
        { remote, subject: claims.sub, max },
        'agent refused: too many tunnel connections for its subject',
      );
      this.#opts.onRefused?.('tunnels_per_subject');
      return reject(
        socket,
        429,
        `subject "${claims.sub}" already holds ${max} tunnel connections, the most this relay allows; retry when one closes`,
        { 'retry-after': '30' },
      );
    }
    if (socket.destroyed) return;
    this.#wss.handleUpgrade(req, socket, head, (ws) => {
      this.#opts.onTunnel?.(socket);
      const session = createSession(new WsTransport(ws), {
        role: 'server',
        maxMetadata: 32 * 1024,
        ...this.#opts.session,
      });
      const conn = new AgentConnection({
        session,
        claims,
        table: this.#opts.table,
        ...(this.#opts.ports ? { ports: this.#opts.ports } : {}),
        logger: log,
        relayId: this.#opts.relayId,
        remoteAddress: remote,
        remotePort: req.socket.remotePort ?? 0,
        ...(this.#opts.onRefused ? { onRefused: this.#opts.onRefused } : {}),
        gate: this.#gate,
      });
      this.connections.add(conn);
      const subject = claims.sub;
      this.#perSubject.set(subject, (this.#perSubject.get(subject) ?? 0) + 1);
      session.on('close', () => {
        this.connections.delete(conn);
        const left = this.#perSubject.get(subject)! - 1;
        if (left === 0) {
          this.#perSubject.delete(subject);
          this.#gate.forget(subject);
        } else this.#perSubject.set(subject, left);
      });
      if (this.#draining) this.#lateDrains.push(conn.drain());
      log.info(
        { conn: conn.id, subject: claims.sub, jti: claims.jti, remote, port: conn.remotePort },
        'agent connected',
      );
      this.#opts.onConnection?.(conn);
    });
  }

  /**
   * GOAWAY to every agent; resolves when all sessions have drained or closed,
   * with how many quiet raw connections (WebSocket, TCP) the drain closed.
   * An upgrade still checking its token when the drain began gets GOAWAY as
   * soon as its session exists, and is waited for too.
   */
  async drain(): Promise<number> {
    this.#draining = true;
    let closedQuiet = 0;
    for (const n of await Promise.all([...this.connections].map((c) => c.drain()))) closedQuiet += n;
    for (let waited = 0; waited < this.#lateDrains.length; ) {
      const batch = this.#lateDrains.slice(waited);
      waited = this.#lateDrains.length;
      for (const n of await Promise.all(batch)) closedQuiet += n;
    }
    return closedQuiet;
  }

  /**
   * Ends every connection whose token id is in `jtis` (GOAWAY TOKEN_REVOKED,
   * then close): a revoked credential keeps nothing open, in-flight requests
   * included. Returns how many connections were closed.
   */
  revoke(jtis: ReadonlySet<string>): number {
    let closed = 0;
    for (const c of this.connections) {
      if (!jtis.has(c.claims.jti) || c.session.closed) continue;
      this.#opts.logger.warn(
        { conn: c.id, subject: c.subject, jti: c.claims.jti },
        'token revoked: closing the agent connection',
      );
      c.session.destroy(new TokenRevokedError());
      closed++;
    }
    return closed;
  }

  /** Closes every agent session now. */
  destroyAll(): void {
    for (const c of this.connections) c.session.destroy();
  }
}

function reject(socket: Duplex, status: number, reason: string, extra: Record<string, string> = {}): void {
  if (socket.destroyed) return;
  const body = `${reason}\n`;
  const headers = {
    'content-type': 'text/plain; charset=utf-8',
    'content-length': String(Buffer.byteLength(body)),
    connection: 'close',
    ...extra,
  };
  const lines = Object.entries(headers).map(([k, v]) => `${k}: ${v}`);
  socket.end(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\n${lines.join('\r\n')}\r\n\r\n${body}`);
  // A client that never closes its side would otherwise keep the socket, and its slot, for good.
  closeAfterAnswer(socket);
}

/**
 * The agent's address, for logs and the admin API. Behind a TLS terminator on
 * the relay's own machine (Caddy, docs/install.md §3) every tunnel comes from
 * loopback: there, the last X-Forwarded-For entry (the one the terminator
 * added) is the agent's. From any other peer the header is not believed.
 */
function agentAddress(req: IncomingMessage): string {
  const peer = clientIp(req.socket.remoteAddress);
  if (peer !== '::1' && !peer.startsWith('127.')) return peer;
  const header = req.headers['x-forwarded-for'];
  const last = (Array.isArray(header) ? header.at(-1) : header)?.split(',').at(-1)?.trim() ?? '';
  return isIP(last) ? clientIp(last) : peer;
}
