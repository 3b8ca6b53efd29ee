import { createRequire } from 'node:module';
import type * as AcmeClient from 'acme-client';

export type { AcmeClient };

type Axios = typeof AcmeClient.axios;
type Adapter = Extract<NonNullable<Axios['defaults']['adapter']>, (...args: never[]) => unknown>;
type RequestConfig = Parameters<Adapter>[0] & { retryAttempt?: number };

/** acme-client's retry policy, kept on its shared axios instance (not in its typings). */
interface RetrySettings {
  retryMaxAttempts: number;
  retryDefaultDelay: number;
}

let loading: Promise<typeof AcmeClient> | undefined;

/**
 * The longest a request to the CA may go without an answer, ms. acme-client
 * sets none: a CA (or a middlebox) that took a connection and then said
 * nothing held that name's order for good, with no failure to retry after.
 */
const REQUEST_TIMEOUT = 30_000;

/**
 * acme-client, imported on first use. Loading it (and the HTTP client it
 * brings) takes about 275 ms, close to half of the relay's start-up, and a
 * relay with certificate files or without TLS never needs it: a restart of
 * such a relay should not wait for it.
 */
export function loadAcmeClient(): Promise<typeof AcmeClient> {
  loading ??= import('acme-client').then((acme) => {
    keepNetworkErrors(acme.axios);
    // Unless set already (a test shortens it).
    acme.axios.defaults.timeout ||= REQUEST_TIMEOUT;
    return acme;
  });
  return loading;
}

/** Marks an axios instance whose adapter is already wrapped. */
const WRAPPED = Symbol.for('burrow.acme.network-errors');

/**
 * acme-client retries a request that got no response (refused, reset, timed
 * out) and, once out of attempts, reads the status of the response that never
 * came: the error the relay would log is "Cannot read properties of undefined",
 * not why the CA could not be reached. Its retry hook passes an error that
 * carries no request config through untouched, so the last attempt's network
 * error is raised as such an error, naming the request.
 */
function keepNetworkErrors(instance: Axios): void {
  const defaults = instance.defaults as Axios['defaults'] & { acmeSettings: RetrySettings; [WRAPPED]?: true };
  if (defaults[WRAPPED]) return;
  // The HTTP adapter of the very axios acme-client uses, so nothing else about a request changes.
  const axios = createRequire(createRequire(import.meta.url).resolve('acme-client'))('axios') as {
    getAdapter(name: 'http'): Adapter;
  };
  const http = axios.getAdapter('http');
  defaults.adapter = async (config: RequestConfig) => {
    try {
      return await http(config);
    } catch (err) {
      const e = err as { response?: unknown; code?: string; message: string };
      const attempt = config.retryAttempt ?? 0;
      // acme-client never retries a timeout (ECONNABORTED).
      const last = e.code === 'ECONNABORTED' || attempt >= defaults.acmeSettings.retryMaxAttempts;
      if (e.response !== undefined || !last) throw err;
      const tries = attempt + 1;
      throw new Error(
        `${config.method?.toUpperCase() ?? 'GET'} ${config.url ?? ''} got no response ` +
          `(${tries} ${tries === 1 ? 'try' : 'tries'}): ${e.message}`,
        { cause: err },
      );
    }
  };
  defaults[WRAPPED] = true;
}
