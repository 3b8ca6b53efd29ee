import type * as AcmeClient from 'acme-client';

export type { AcmeClient };

let loading: Promise<typeof AcmeClient> | undefined;

/**
 * acme-client, imported on first use. Loading it (and the HTTP client it
 * brings) takes about 275 ms, close to half of the relay's start-up, and a
 * relay with certificate files or without TLS never needs it: a restart of
 * such a relay should not wait for it.
 */
export function loadAcmeClient(): Promise<typeof AcmeClient> {
  loading ??= import('acme-client');
  return loading;
}
