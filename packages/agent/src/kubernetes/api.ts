import { AsyncLocalStorage } from 'node:async_hooks';
import {
  type Configuration,
  createConfiguration,
  type KubeConfig,
  ServerConfiguration,
  Watch,
} from '@kubernetes/client-node';

/** How long one request to the API server may go unanswered, ms, by default. */
export const API_TIMEOUT = 30_000;

/** A request to the API server that got no answer in time. */
export class ApiTimeoutError extends Error {
  override readonly name = 'ApiTimeoutError';
}

/** A request given up because the client's `stopped` signal fired: its owner is stopping. */
export class ApiStoppedError extends Error {
  override readonly name = 'ApiStoppedError';
}

/**
 * An API client whose requests give up after `timeout` ms, or at once when
 * `stopped` fires (ApiStoppedError). client-node sets
 * no deadline of its own, so one request that the API server, or a proxy in
 * between, accepted and never answered held whatever awaited it for good: the
 * write-back of every Service, a Lease renewal (a leader that could not tell
 * it had lost), the first list (an agent never ready).
 *
 * The request is aborted, which node-fetch reports as an AbortError; the
 * client turns that into an ApiTimeoutError, so that nobody takes it for an
 * abort of their own (the watch code ignores those).
 */
export function apiClient<T extends object>(
  kubeConfig: KubeConfig,
  Api: new (configuration: Configuration) => T,
  timeout = API_TIMEOUT,
  stopped?: AbortSignal,
): T {
  const cluster = kubeConfig.getCurrentCluster();
  if (!cluster) throw new Error('the kubeconfig has no current cluster');
  // Each call's own signal, which the request it makes takes up in the middleware below.
  const calls = new AsyncLocalStorage<AbortSignal>();
  const api = new Api(
    createConfiguration({
      baseServer: new ServerConfiguration(cluster.server, {}),
      authMethods: { default: kubeConfig },
      promiseMiddleware: [
        {
          pre: async (context) => {
            context.setSignal(calls.getStore() ?? AbortSignal.timeout(timeout));
            return context;
          },
          post: async (context) => context,
        },
      ],
    }),
  );
  return new Proxy(api, {
    get(target, key) {
      const value = Reflect.get(target, key);
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        if (stopped?.aborted) return Promise.reject(new ApiStoppedError('given up: stopping'));
        // One controller per call, aborted by its deadline or by `stopped`, and let go
        // of when the call ends (AbortSignal.any would leave each call's signal with the
        // long-lived `stopped` on Node 20).
        const controller = new AbortController();
        const deadline = setTimeout(() => controller.abort(), timeout);
        const stop = () => controller.abort();
        stopped?.addEventListener('abort', stop, { once: true });
        const done = () => {
          clearTimeout(deadline);
          stopped?.removeEventListener('abort', stop);
        };
        let result: unknown;
        try {
          result = calls.run(controller.signal, () => value.apply(target, args));
        } catch (err) {
          done();
          throw err;
        }
        if (!(result instanceof Promise)) {
          done();
          return result;
        }
        return result.then(
          (v: unknown) => {
            done();
            return v;
          },
          (err: unknown) => {
            done();
            if ((err as Error | undefined)?.name !== 'AbortError') throw err;
            if (stopped?.aborted) throw new ApiStoppedError('given up: stopping');
            throw new ApiTimeoutError(`no answer from the API server within ${timeout} ms`);
          },
        );
      };
    },
  });
}

/**
 * A client-node Watch whose request gives up when the response head takes
 * longer than `timeout` ms (node-fetch's own timeout, which stops counting once
 * the head is in: a watch then streams for as long as the API server keeps it).
 * client-node keeps the request's abort handle only once the head has come,
 * so a watch that never got one could not be stopped, and each restart left
 * one more request behind.
 */
export class TimedWatch extends Watch {
  constructor(kubeConfig: KubeConfig, timeout = API_TIMEOUT) {
    const timed = Object.create(kubeConfig) as KubeConfig;
    timed.applyToFetchOptions = async (options) => ({
      ...(await kubeConfig.applyToFetchOptions(options)),
      timeout,
    });
    super(timed);
  }
}
