import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';

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
}

/**
 * One keep-alive HTTP(S) agent per backend target. LIFO scheduling reuses the
 * most recently used socket, so idle sockets beyond the current concurrency
 * age out instead of being kept warm round-robin.
 */
export class TargetPool {
  readonly #agents = new Map<string, HttpAgent>();
  readonly #maxSockets: number;
  readonly #idleTimeout: number;

  constructor(options: PoolOptions = {}) {
    this.#maxSockets = options.maxSockets ?? 256;
    this.#idleTimeout = options.idleTimeout ?? 4_000;
  }

  static key(target: string, tlsInsecure: boolean): string {
    return `${target}${tlsInsecure ? '#insecure' : ''}`;
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
  }
}
