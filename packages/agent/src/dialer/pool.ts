import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import { dropWritesAfterPeerClose, MAX_RESPONSE_HEAD } from '@burrow/shared';
import { buildConnector, Pool } from 'undici';
import { targetAddress } from './target.js';

export const DEFAULT_CONNECT_TIMEOUT = 10_000;

export interface PoolOptions {
  /** Sockets per target at most (in use plus idle). Default 256. */
  maxSockets?: number;
  /**
   * How long an idle keep-alive socket is kept, ms. Default 4 s: shorter than
   * the 5 s idle timeout of Node and many other servers, so a reused socket is
   * rarely one the backend is closing at that moment. A backend's
   * `Keep-Alive: timeout=N` hint shortens it further (Node honours it).
   */
  idleTimeout?: number;
  /** Time allowed to establish a connection (TCP, and TLS for https targets), ms. Default 10 s. */
  connectTimeout?: number;
}

/**
 * Keep-alive connections per backend target: an undici pool for ordinary
 * requests, and a node:http(s) agent for Upgrade requests (node:http hands
 * the upgraded socket over; LIFO scheduling there lets idle sockets beyond the
 * current concurrency age out). Both hold at most `maxSockets` connections.
 */
export class TargetPool {
  readonly #agents = new Map<string, HttpAgent>();
  readonly #pools = new Map<string, Pool>();
  readonly #maxSockets: number;
  readonly #idleTimeout: number;
  readonly #connectTimeout: number;

  constructor(options: PoolOptions = {}) {
    this.#maxSockets = options.maxSockets ?? 256;
    this.#idleTimeout = options.idleTimeout ?? 4_000;
    this.#connectTimeout = options.connectTimeout ?? DEFAULT_CONNECT_TIMEOUT;
  }

  static key(target: string, tlsInsecure: boolean): string {
    return `${target}${tlsInsecure ? '#insecure' : ''}`;
  }

  dispatcherFor(target: string, tlsInsecure = false): Pool {
    const key = TargetPool.key(target, tlsInsecure);
    let pool = this.#pools.get(key);
    if (!pool) {
      pool = new Pool(new URL(target).origin, {
        connections: this.#maxSockets,
        // The backend's `Keep-Alive: timeout=N` hint shortens it (less a second of margin).
        keepAliveTimeout: this.#idleTimeout,
        // No deadline of our own on the response: the relay bounds the wait for
        // the head, and a body may stream for as long as the client reads it.
        headersTimeout: 0,
        bodyTimeout: 0,
        maxHeaderSize: MAX_RESPONSE_HEAD,
        connect: resetsAreCuts(
          withServerName(
            buildConnector({ rejectUnauthorized: !tlsInsecure, timeout: this.#connectTimeout }),
            targetAddress(target).serverName,
          ),
        ),
      });
      this.#pools.set(key, pool);
    }
    return pool;
  }

  agentFor(target: string, tlsInsecure = false): HttpAgent {
    const key = TargetPool.key(target, tlsInsecure);
    let agent = this.#agents.get(key);
    if (!agent) {
      const common = {
        keepAlive: true,
        maxSockets: this.#maxSockets,
        maxFreeSockets: this.#maxSockets,
        scheduling: 'lifo' as const,
        timeout: this.#idleTimeout,
      };
      agent = target.startsWith('https:')
        ? new HttpsAgent({ ...common, rejectUnauthorized: !tlsInsecure })
        : new HttpAgent(common);
      this.#agents.set(key, agent);
    }
    return agent;
  }

  /** Closes the idle sockets of targets not in `keep` (in-flight requests finish on theirs). */
  retain(keep: ReadonlySet<string>): void {
    for (const [key, pool] of this.#pools) {
      if (keep.has(key)) continue;
      this.#pools.delete(key);
      // close() lets in-flight requests finish, then ends the connections.
      pool.close().catch(() => {});
    }
    for (const [key, agent] of this.#agents) {
      if (keep.has(key)) continue;
      this.#agents.delete(key);
      // destroy() would cut in-flight requests; closing only the idle sockets lets
      // them finish, and their sockets then expire from the idle list.
      for (const sockets of Object.values(agent.freeSockets)) for (const s of sockets ?? []) s.destroy();
    }
  }

  destroy(): void {
    for (const agent of this.#agents.values()) agent.destroy();
    this.#agents.clear();
    for (const pool of this.#pools.values()) pool.destroy().catch(() => {});
    this.#pools.clear();
  }
}

/** A connection reset by the backend, renamed so undici cannot take it for the end of a body. */
export const BACKEND_RESET = 'BURROW_BACKEND_RESET';

/**
 * undici ends a body delimited by the connection's close when the socket
 * reports ECONNRESET (macOS sends one after a complete body). On Linux a reset
 * means the backend died mid-body, and the client must not get a clean end:
 * the error is renamed before undici sees it, so it fails the request.
 */
function resetsAreCuts(connect: buildConnector.connector): buildConnector.connector {
  return (options, callback) =>
    connect(options, (err, socket) => {
      (socket as Socket | null)?.prependListener('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'ECONNRESET') e.code = BACKEND_RESET;
      });
      if (socket && !(socket instanceof TLSSocket)) dropWritesAfterPeerClose(socket as Socket);
      callback(err, socket as never);
    });
}

/**
 * undici names the TLS server after the request's Host field, which the relay
 * (or, on a wildcard route, the client) chooses: an https backend would be
 * checked against a name of their choosing. Connections name the target's
 * host instead (`serverName`; undefined for an IP address: no SNI).
 */
function withServerName(
  connect: buildConnector.connector,
  serverName: string | undefined,
): buildConnector.connector {
  return (options, callback) => connect({ ...options, servername: serverName }, callback);
}
