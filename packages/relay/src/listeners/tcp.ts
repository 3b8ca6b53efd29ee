import { createServer, type Server, type Socket } from 'node:net';
import { type Logger, TCP_KEEPALIVE } from '@burrow/shared';
import { clientIp } from '../proxy/forward.js';
import { forwardRaw } from '../proxy/passthrough.js';
import type { PortTable } from '../routes/ports.js';
import type { AgentConnection } from '../tunnel/agent-connection.js';

export interface TcpListenersOptions {
  host: string;
  ports: readonly number[];
  table: PortTable<AgentConnection>;
  logger: Logger;
  /** Client connections all the TCP ports hold open together; more are closed as they arrive. */
  maxConnections?: number | undefined;
  /** Each connection closed for the limit. */
  onDrop?: () => void;
  /** True once the relay drains: new connections are closed. */
  draining: () => boolean;
}

/**
 * The relay's public TCP ports (`--tcp-ports`), each listened on from the
 * start whether or not an agent serves it. A connection to a port an agent
 * serves is spliced to a `tcp` stream on the least loaded of its tunnel
 * connections; any other is closed at once, with a log line saying why.
 */
export class TcpListeners {
  readonly #opts: TcpListenersOptions;
  readonly #servers: Server[] = [];
  /** Client connections held now: counted against maxConnections, destroyed when a drain runs out. */
  readonly #sockets = new Set<Socket>();

  constructor(opts: TcpListenersOptions) {
    this.#opts = opts;
  }

  /** Listens on every port; on a failure, closes those already open and throws (EADDRINUSE, EACCES). */
  async start(): Promise<void> {
    for (const port of this.#opts.ports) {
      const server = createServer({ allowHalfOpen: true, ...TCP_KEEPALIVE }, (socket) =>
        this.#accept(port, socket),
      );
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, this.#opts.host, () => {
          server.off('error', reject);
          resolve();
        });
      }).catch((err) => {
        this.stopAccepting();
        throw err;
      });
      this.#servers.push(server);
    }
  }

  /** Destroys every client connection (the drain deadline passed). */
  destroyAll(): void {
    for (const socket of this.#sockets) socket.destroy();
  }

  /** Stops accepting; resolves once every connection has ended. */
  stopAccepting(): Promise<void> {
    return Promise.all(
      this.#servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))),
    ).then(() => undefined);
  }

  #accept(port: number, socket: Socket): void {
    const { logger, table, maxConnections } = this.#opts;
    if (maxConnections !== undefined && this.#sockets.size >= maxConnections) {
      this.#opts.onDrop?.();
      socket.destroy();
      return;
    }
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
    const found = this.#opts.draining() ? undefined : table.lookup(port);
    const refuse = (reason: string) => {
      logger.info({ port, client: clientIp(socket.remoteAddress), reason }, 'tcp connection refused');
      socket.on('error', () => {});
      socket.destroy();
    };
    if (!found) return refuse('the relay is draining');
    if (found.kind === 'none') return refuse('no agent serves this port');
    if (found.kind === 'offline') return refuse('the agent serving this port is not connected');
    const { binding } = found;
    if (binding.allowlist && !binding.allowlist.allows(socket.remoteAddress ?? '')) {
      return refuse("the client's address is not in the route's allowlist");
    }
    forwardRaw(logger, socket, undefined, binding, { port });
  }
}
