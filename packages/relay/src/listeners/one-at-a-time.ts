/** What the queue needs of a request: its HTTP version and its connection. */
interface QueuedRequest {
  readonly httpVersionMajor: number;
  readonly socket: object;
}

/** What it needs of a response: its end. */
interface QueuedResponse {
  once(event: 'close', listener: () => void): unknown;
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
): (req: Req, res: Res) => void {
  const waiting = new WeakMap<object, Array<[Req, Res]>>();
  const run = (req: Req, res: Res): void => {
    res.once('close', () => {
      const queue = waiting.get(req.socket);
      const next = queue?.shift();
      if (next) run(...next);
      else waiting.delete(req.socket);
    });
    handle(req, res);
  };
  return (req, res) => {
    if (req.httpVersionMajor !== 1) return handle(req, res);
    const queue = waiting.get(req.socket);
    if (queue) queue.push([req, res]);
    else {
      waiting.set(req.socket, []);
      run(req, res);
    }
  };
}
