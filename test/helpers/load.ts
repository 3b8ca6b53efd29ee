import { EventEmitter } from 'node:events';
import { Agent } from 'node:http';
import { testAgent } from './agent.js';
import { get, testServer } from './http.js';
import type { Teardownable } from './relay.js';

export interface LoopOptions {
  /** Concurrent workers. Default 2. */
  workers?: number;
  /** Most requests in all, whatever happens. Default 20,000. */
  max?: number;
  /** Most time the loop runs, ms, whatever happens. Default 120 s. */
  deadline?: number;
  /** The path of the n-th request (counted from 0 over all workers). Default "/". */
  path?: (n: number) => string;
  /** Expected body, or the expected body for a path; anything else counts as a failure. */
  body?: string | ((path: string) => string);
  /** Reuse connections (keep-alive) instead of one connection per request. Default false. */
  keepAlive?: boolean;
}

export interface RequestLoop {
  /** Requests completed so far (any outcome). */
  readonly done: number;
  /** Status code → count; network errors count under 0. */
  readonly statuses: Map<number, number>;
  /** Descriptions of the first failures (non-200, wrong body, network errors), at most 20. */
  readonly failures: string[];
  /** Resolves once `n` more requests have completed (or the loop ended). */
  after(n: number): Promise<void>;
  /** Stops the loop; resolves when every worker has finished its request. */
  stop(): Promise<void>;
  /** "200: 1234, 0: 2" for messages. */
  summary(): string;
}

/**
 * A steady, bounded stream of requests to `host` through the relay's HTTP
 * port, running in the background while a test does something nasty
 * elsewhere. Bounded in count and time; stopped at teardown.
 */
export function requestLoop(
  t: Teardownable,
  port: number,
  host: string,
  opts: LoopOptions = {},
): RequestLoop {
  const max = opts.max ?? 20_000;
  const until = performance.now() + (opts.deadline ?? 120_000);
  const progress = new EventEmitter();
  progress.setMaxListeners(0);
  const statuses = new Map<number, number>();
  const failures: string[] = [];
  const agent = opts.keepAlive ? new Agent({ keepAlive: true, maxSockets: opts.workers ?? 2 }) : false;
  let done = 0;
  let started = 0;
  let stopped = false;
  const record = (status: number, why?: string) => {
    statuses.set(status, (statuses.get(status) ?? 0) + 1);
    if (why && failures.length < 20) failures.push(why);
    done++;
    progress.emit('done');
  };
  const worker = async () => {
    while (!stopped && started < max && performance.now() < until) {
      const n = started++;
      const path = opts.path?.(n) ?? '/';
      const body = typeof opts.body === 'function' ? opts.body(path) : opts.body;
      try {
        const r = await get(port, host, path, { agent });
        const text = r.body.toString();
        if (r.status !== 200) record(r.status, `status ${r.status}: ${text.slice(0, 100)}`);
        else if (body !== undefined && text !== body) record(r.status, `body "${text.slice(0, 100)}"`);
        else record(r.status);
      } catch (err) {
        record(0, `network error: ${(err as Error).message}`);
      }
    }
    progress.emit('done');
  };
  const workers = Promise.all(Array.from({ length: opts.workers ?? 2 }, worker)).then(() => {
    stopped = true;
    if (agent) agent.destroy();
    progress.emit('done');
  });
  const stop = async () => {
    stopped = true;
    await workers;
  };
  t.teardown(stop);
  return {
    get done() {
      return done;
    },
    statuses,
    failures,
    after(n) {
      const target = done + n;
      return new Promise<void>((resolve) => {
        const check = () => {
          if (done < target && !stopped) return;
          progress.off('done', check);
          resolve();
        };
        progress.on('done', check);
      });
    },
    stop,
    summary: () => [...statuses].map(([k, v]) => `${k}: ${v}`).join(', '),
  };
}

/**
 * Another tenant, minding its own business while a test attacks the relay: a
 * backend, an agent of subject `bystander` serving `bystander.example.com`,
 * and a keep-alive request loop to it that has already seen ten answers.
 * A test asserts at the end that the loop saw no failure.
 */
export async function bystander(
  t: Teardownable,
  relay: { tunnelUrl: string; httpPort: number },
): Promise<RequestLoop> {
  const backend = await testServer(t, (_req, res) => res.end('steady'));
  await testAgent(
    t,
    relay.tunnelUrl,
    [{ id: 'b', hostnames: ['bystander.example.com'], target: backend.url }],
    {
      sub: 'bystander',
    },
  );
  const loop = requestLoop(t, relay.httpPort, 'bystander.example.com', { body: 'steady', keepAlive: true });
  await loop.after(10);
  return loop;
}
