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
  user: UpstreamUser | undefined;
  /** Its backend connection ended, failed or broke HTTP framing: never lent again. */
  spent = false;
  /** It has carried a whole exchange: its backend connection is a kept-alive one. */
  reused = false;
  idleSince = 0;

  constructor(stream: Stream, conn: AgentConnection, key: string, onIdleEvent: (up: Upstream) => void) {
    this.stream = stream;
    this.conn = conn;
    this.key = key;
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
  /** Idle upstreams kept per route and agent connection. */
  maxIdle: number;
  /** How long an idle upstream is kept, ms (below the common 5 s backend keep-alive timeout). */
  idleTimeout: number;
  /** Each stream opened (metrics). */
  onStreamOpen?: (route: string, stream: Stream) => void;
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
  readonly #opts: Http1PoolOptions;
  /** Agent connections whose GOAWAY closes their idle upstreams. */
  readonly #watched = new WeakSet<AgentConnection>();
  #idleCount = 0;
  #sweeper: NodeJS.Timeout | undefined;

  constructor(opts: Http1PoolOptions) {
    this.#opts = opts;
  }

  /** Upstreams idle in the pool now. */
  get idle(): number {
    return this.#idleCount;
  }

  /**
   * An idle upstream for the binding's route on its agent connection, the
   * most recently used first, or a new one. Throws when the session cannot
   * open a stream (GOAWAY, stream limit).
   */
  acquire(binding: Binding<AgentConnection>, user: UpstreamUser): Upstream {
    const key = `${binding.target.id}\0${binding.routeId}`;
    const list = this.#idle.get(key);
    const kept = list?.pop();
    if (kept) {
      this.#unpark(kept);
      if (list!.length === 0) this.#idle.delete(key);
      kept.user = user;
      return kept;
    }
    const conn = binding.target;
    const stream = conn.openHttp1Stream({ kind: 'http1', route: binding.routeId });
    this.#opts.onStreamOpen?.(binding.hostname, stream);
    if (!this.#watched.has(conn)) {
      this.#watched.add(conn);
      // An agent going away (a rolling update) waits for its open streams: idle ones close at once.
      conn.session.once('goaway', () => this.#closeIdle((up) => up.conn === conn));
    }
    const up = new Upstream(stream, binding.target, key, (u) => this.#drop(u));
    up.user = user;
    return up;
  }

  /** Takes an upstream back after a whole exchange; a spent one, or one past the bound, is closed. */
  release(up: Upstream): void {
    up.user = undefined;
    up.stream.resume(); // a client that pushed back may have left it paused
    if (up.spent || up.stream.destroyed) {
      this.discard(up, false);
      return;
    }
    up.reused = true;
    let list = this.#idle.get(up.key);
    if (!list) this.#idle.set(up.key, (list = []));
    if (list.length >= this.#opts.maxIdle) {
      this.discard(up, false);
      return;
    }
    up.idleSince = performance.now();
    list.push(up);
    this.#idleCount++;
    up.conn.parkStream(1);
    this.#sweeper ??= setInterval(() => this.#sweep(), Math.max(250, this.#opts.idleTimeout / 2)).unref();
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

  /** Closes every idle upstream (the relay drains). */
  closeIdle(): void {
    this.#closeIdle(() => true);
  }

  #closeIdle(which: (up: Upstream) => boolean): void {
    for (const [key, list] of this.#idle) {
      if (!which(list[0]!)) continue; // a list holds one route of one connection
      for (const up of list) {
        this.#unpark(up);
        this.discard(up, false);
      }
      this.#idle.delete(key);
    }
    if (this.#idleCount === 0) this.#stopSweeper();
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
    const oldest = performance.now() - this.#opts.idleTimeout;
    for (const [key, list] of this.#idle) {
      // Lists are oldest first: upstreams go back on the end.
      let n = 0;
      while (n < list.length && list[n]!.idleSince <= oldest) {
        const up = list[n++]!;
        this.#unpark(up);
        this.discard(up, false);
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
