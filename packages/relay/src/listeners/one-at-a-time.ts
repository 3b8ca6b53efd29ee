import type { Logger } from '@burrow/shared';

/** What the queue needs of a request: its HTTP version and its connection. */
interface QueuedRequest {
  readonly httpVersionMajor: number;
  readonly socket: {
    readonly destroyed: boolean;
    readonly writableEnded: boolean;
    readonly remoteAddress?: string | undefined;
    destroy(): void;
  };
}

/** What it needs of a response: its end. */
interface QueuedResponse {
  once(event: 'close', listener: () => void): unknown;
}

/**
 * Requests one connection may have waiting behind the one in progress; a
 * client that pipelines more is cut off (each waiting request holds its
 * request and response objects, and nothing else bounds them).
 */
export const MAX_PIPELINED = 64;

/** Per connection: the requests waiting, or `stopped` once no more may start. */
type Queue<Req, Res> = Array<[Req, Res]> | 'stopped';

export interface RequestQueue<Req, Res> {
  /** The 'request' listener. */
  handle(req: Req, res: Res): void;
  /**
   * Starts no further request of the connection: the one in progress
   * finishes; the ones waiting are dropped (they never reached a backend).
   * Returns how many were dropped.
   */
  stop(socket: object): number;
}

/**
 * Handles the requests of one HTTP/1.x connection one after another. Node's
 * server emits each pipelined request as soon as it is parsed and only puts
 * the responses in order; forwarded at once, they would reach the backend out
 * of order (a POST overtaken by the GETs behind it), and one connection could
 * open a tunnel stream for every request it piles up. RFC 9112 §9.3.2 allows
 * handling safe methods in parallel at most; the relay handles none so.
 * HTTP/2 requests go straight through: their streams are concurrent by design.
 */
export function oneAtATime<Req extends QueuedRequest, Res extends QueuedResponse>(
  handle: (req: Req, res: Res) => void,
  logger: Logger,
): RequestQueue<Req, Res> {
  const queues = new WeakMap<object, Queue<Req, Res>>();
  const run = (req: Req, res: Res): void => {
    res.once('close', () => {
      const queue = queues.get(req.socket);
      if (queue === 'stopped') return;
      // A connection that is closing (the client left, or this was its last response) starts nothing more.
      const next = req.socket.destroyed || req.socket.writableEnded ? undefined : queue?.shift();
      if (next) run(...next);
      else queues.delete(req.socket);
    });
    handle(req, res);
  };
  return {
    handle(req, res) {
      if (req.httpVersionMajor !== 1) return handle(req, res);
      const queue = queues.get(req.socket);
      if (queue === 'stopped') return;
      if (!queue) {
        queues.set(req.socket, []);
        run(req, res);
      } else if (queue.length < MAX_PIPELINED) {
        queue.push([req, res]);
      } else {
        queues.set(req.socket, 'stopped');
        logger.info({ client: req.socket.remoteAddress }, 'too many pipelined requests; connection closed');
        req.socket.destroy();
      }
    },
    stop(socket) {
      const queue = queues.get(socket);
      queues.set(socket, 'stopped');
      return Array.isArray(queue) ? queue.length : 0;
    },
  };
}
