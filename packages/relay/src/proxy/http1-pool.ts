import { Reason, type Stream } from '@burrow/shared';
import type { Binding } from '../routes/table.js';
import type { AgentConnection } from '../tunnel/agent-connection.js';

/** What an upstream reports to the client connection it is lent to. */
export interface UpstreamUser {
  /** Response bytes from the backend. */
  data(chunk: Buffer): void;
  /** The backend closed its connection (the agent's FIN). */
  ended(): void;
  /** The stream failed (the agent reset it, or the tunnel went). */
  failed(err: Error): void;
  /** The stream takes request bytes again. */
  drained(): void;
}

/**
 * One `http1` tunnel stream, and behind it one backend connection at the
 * agent: what the fast path lends a client connection for one exchange.
 */
export class Upstream {
  readonly stream: Stream;
  readonly conn: AgentConnection;
  readonly key: string;
  /** The route hostname it serves now: a route's names share its upstreams. */
  host: string;
  /** Counts it under another hostname (metrics), when the pool's onStreamOpen gave a way to. */
  relabel: ((host: string) => void) | undefined;
  /** The agent's route set it was opened under (AgentConnection.routesVersion). */
  readonly version: number;
  user: UpstreamUser | undefined;
  /** Its backend connection ended, failed or broke HTTP framing: never lent again. */
  spent = false;
  /** It has carried a whole exchange: its backend connection is a kept-alive one. */
  reused = false;
  idleSince = 0;

  constructor(
    stream: Stream,
    conn: AgentConnection,
    key: string,
    host: string,
    onIdleEvent: (up: Upstream) => void,
  ) {
    this.stream = stream;
    this.conn = conn;
    this.key = key;
    this.host = host;
    this.version = conn.routesVersion;
    // 'data', 'end' and 'error' while idle in the pool: bytes nobody asked for,
    // or the backend closing its kept-alive connection. Either way it is done.
    stream.on('data', (chunk: Buffer) => {
      if (this.user) this.user.data(chunk);
      else onIdleEvent(this);
    });
    stream.on('end', () => {
      this.spent = true;
      if (this.user) this.user.ended();
      else onIdleEvent(this);
    });
    stream.on('error', (err) => {
      this.spent = true;
      if (this.user) this.user.failed(err);
      else onIdleEvent(this);
    });
    stream.on('drain', () => this.user?.drained());
  }
}

export interface Http1PoolOptions {
  /**
   * Idle upstreams kept per route and agent connection; default 128. Per
   * agent connection, at most a quarter of the streams its agent allows are
   * kept idle, all routes together: the rest stay free for requests.
   */
  maxIdle?: number;
  /**
   * How long an idle upstream is kept, ms; default 4 s: under the 5 s idle
   * timeout of Node and many other servers, so a kept one is rarely being
   * closed as it is reused.
   */
  idleTimeout?: number;
  /**
   * Each stream opened (metrics), for the route hostname it is opened for; may
   * return how to count the stream under another hostname of its route.
   */
  onStreamOpen?: (route: string, stream: Stream) => ((route: string) => void) | undefined;
}

/**
 * Kept-alive upstreams per route and agent connection, lent to client
 * connections one exchange at a time, as a reverse proxy keeps a pool of
 * backend connections. Many idle client connections hold none, and the
 * backend sees as many connections as there are requests in flight (plus the
 * idle ones kept), whatever the number of clients.
 */
export class Http1Pool {
  readonly #idle = new Map<string, Upstream[]>();
  readonly #maxIdle: number;
  readonly #idleTimeout: number;
  readonly #onStreamOpen: Http1PoolOptions['onStreamOpen'];
  /** Agent connections whose GOAWAY closes their idle upstreams. */
  readonly #watched = new WeakSet<AgentConnection>();
  #idleCount = 0;
  #sweeper: NodeJS.Timeout | undefined;

  constructor(opts: Http1PoolOptions = {}) {
    this.#maxIdle = opts.maxIdle ?? 128;
    this.#idleTimeout = opts.idleTimeout ?? 4_000;
    this.#onStreamOpen = opts.onStreamOpen;
  }

  /**
   * An idle upstream for the binding's route on its agent connection, the
   * most recently used first, or a new one. Throws when the session cannot
   * open a stream (GOAWAY, stream limit).
   */
  acquire(binding: Binding<AgentConnection>, user: UpstreamUser): Upstream {
    const conn = binding.target;
    const key = `${conn.id}\0${binding.routeId}`;
    const list = this.#idle.get(key);
    for (let kept = list?.pop(); kept; kept = list!.pop()) {
      this.#unpark(kept);
      if (list!.length === 0) this.#idle.delete(key);
      // One whose session closed under it has nothing left to lend; one from
      // before the agent's last announcement may reach an old target.
      if (kept.stream.destroyed) continue;
      if (kept.version !== conn.routesVersion) {
        this.discard(kept, false);
        continue;
      }
      kept.user = user;
      if (kept.host !== binding.hostname) {
        kept.host = binding.hostname;
        kept.relabel?.(binding.hostname);
      }
      return kept;
    }
    const stream = this.#open(conn, binding.routeId);
    const relabel = this.#onStreamOpen?.(binding.hostname, stream);
    if (!this.#watched.has(conn)) {
      this.#watched.add(conn);
      // An agent going away (a rolling update) waits for its open streams: idle ones close at once.
      conn.session.once('goaway', () => this.#closeIdle((up) => up.conn === conn));
    }
    const up = new Upstream(stream, binding.target, key, binding.hostname, (u) => this.#drop(u));
    up.relabel = relabel;
    up.user = user;
    return up;
  }

  /**
   * Takes an upstream back after a whole exchange. Closed instead of kept: a
   * spent one, one from before the agent's last announcement, one whose agent
   * connection is going away, and one past the bounds.
   */
  release(up: Upstream): void {
    up.user = undefined;
    up.stream.resume(); // a client that pushed back may have left it paused
    const conn = up.conn;
    if (up.spent || up.stream.destroyed || up.version !== conn.routesVersion || !conn.usable) {
      this.discard(up, false);
      return;
    }
    up.reused = true;
    let list = this.#idle.get(up.key);
    if (!list) this.#idle.set(up.key, (list = []));
    const streams = conn.session.peer?.maxConcurrentStreams ?? 0;
    if (list.length >= this.#maxIdle || conn.parked >= Math.floor(streams / 4)) {
      if (list.length === 0) this.#idle.delete(up.key);
      this.discard(up, false);
      return;
    }
    up.idleSince = performance.now();
    list.push(up);
    this.#idleCount++;
    up.conn.parkStream(1);
    this.#sweeper ??= setInterval(() => this.#sweep(), Math.max(250, this.#idleTimeout / 2)).unref();
  }

  /**
   * Closes an upstream that is not in the pool: FIN, so the agent closes its
   * backend connection cleanly, or RST (`reset`) when an exchange on it was
   * cut and the backend must stop at once.
   */
  discard(up: Upstream, reset: boolean): void {
    up.user = undefined;
    up.spent = true;
    const stream = up.stream;
    if (stream.destroyed) return;
    if (reset) stream.reset(Reason.Cancel, 'the exchange on this stream was abandoned');
    else {
      stream.end();
      stream.resume(); // the agent's FIN still has to arrive; nothing more is read
    }
  }

  /**
   * Opens an http1 stream. When the agent's stream limit refuses it, this
   * connection's idle upstreams are reset (a FIN would hold their slots until
   * the agent answers) and the open is tried once more.
   */
  #open(conn: AgentConnection, route: string): Stream {
    try {
      return conn.openStream({ kind: 'http1', route });
    } catch (err) {
      if ((err as { code?: string }).code !== 'BURROW_ERR_STREAM_REFUSED' || conn.parked === 0) throw err;
      this.#closeIdle((up) => up.conn === conn, true);
      return conn.openStream({ kind: 'http1', route });
    }
  }

  /** Closes every idle upstream (the relay drains). */
  closeIdle(): void {
    this.#closeIdle(() => true);
  }

  #closeIdle(which: (up: Upstream) => boolean, reset = false): void {
    for (const [key, list] of this.#idle) {
      if (!which(list[0]!)) continue; // a list holds one route of one connection
      for (const up of list) {
        this.#evict(up, reset);
      }
      this.#idle.delete(key);
    }
    if (this.#idleCount === 0) this.#stopSweeper();
  }

  /** Takes an idle upstream out of the count (its list is the caller's) and closes it. */
  #evict(up: Upstream, reset: boolean): void {
    this.#unpark(up);
    this.discard(up, reset);
  }

  #unpark(up: Upstream): void {
    this.#idleCount--;
    up.conn.parkStream(-1);
  }

  #drop(up: Upstream): void {
    const list = this.#idle.get(up.key);
    const at = list?.indexOf(up) ?? -1;
    if (at !== -1) {
      list!.splice(at, 1);
      this.#unpark(up);
      if (list!.length === 0) this.#idle.delete(up.key);
    }
    if (!up.stream.destroyed) this.discard(up, !up.stream.readableEnded);
    if (this.#idleCount === 0) this.#stopSweeper();
  }

  #sweep(): void {
    const oldest = performance.now() - this.#idleTimeout;
    for (const [key, list] of this.#idle) {
      // Lists are oldest first: upstreams go back on the end.
      let n = 0;
      while (n < list.length && list[n]!.idleSince <= oldest) {
        const up = list[n++]!;
        this.#evict(up, false);
      }
      if (n === 0) continue;
      list.splice(0, n);
      if (list.length === 0) this.#idle.delete(key);
    }
    if (this.#idleCount === 0) this.#stopSweeper();
  }

  #stopSweeper(): void {
    clearInterval(this.#sweeper);
    this.#sweeper = undefined;
  }
}
