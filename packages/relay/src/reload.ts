import type { Logger, OptionValues } from '@burrow/shared';
import { FileWatch } from './file-watch.js';
import type { Relay, RelayOptions } from './relay.js';

/** A configuration read from flags, environment and file, validated. */
export interface LoadedConfig {
  /** The values in effect: on a reload, those of options that need a restart are the running ones. */
  values: OptionValues;
  /**
   * Set on a reload whose configured values fail only in options that need a
   * restart: why. `values` then holds the running values of those options,
   * and `configured` what was configured.
   */
  restartError?: string;
  configured?: OptionValues;
  options: RelayOptions;
  logLevel: string;
  /**
   * Set on a reload whose tunnel certificate or key could not be used: the
   * running pair stays, the rest of the configuration applies.
   */
  tunnelTlsError?: string;
  /**
   * Set on a reload whose revocation list was read empty while tokens are
   * revoked (a file caught mid-rewrite): the running list stays.
   */
  revokedTokensError?: string;
}

/**
 * A piece of state that reloads with the configuration (certificates from a
 * TLS layer, for instance). It is called with the new configuration and
 * prepares everything that can fail (reading and parsing files); it throws to
 * reject the reload, or returns a commit that must not fail. No hook commits
 * unless every hook prepared, so a reload applies whole or not at all (only
 * the tunnel endpoint's own certificate may stay behind; see ConfigReloader).
 */
export type ReloadHook = (next: LoadedConfig) => Promise<(() => void) | undefined>;

/** `configured` with every option that needs a restart at its `running` value. */
export function withRunningValues(configured: OptionValues, running: OptionValues): OptionValues {
  const out: OptionValues = {};
  for (const key of new Set([...Object.keys(configured), ...Object.keys(running)])) {
    const value = LIVE.has(key) ? configured[key] : running[key];
    if (value !== undefined) out[key] = value;
  }
  return out;
}

/** Options applied to the running relay on reload; any other change waits for a restart. */
const LIVE = new Set([
  'config',
  'verify-key',
  'revoked-tokens',
  'admin-token',
  'admin-token-file',
  'log-level',
  'tunnel-tls-cert',
  'tunnel-tls-key',
]);

export interface ReloaderOptions {
  relay: Relay;
  logger: Logger;
  /**
   * Reads and validates the whole configuration again (throws ConfigError).
   * `running`: the configuration in effect, whose values options that need a
   * restart keep when their new values are wrong (withRunningValues,
   * `restartError`), so that such a mistake cannot hold back the rest.
   */
  load: (running: LoadedConfig) => Promise<LoadedConfig>;
  /** The configuration the relay runs with. */
  current: LoadedConfig;
  /** Quiet time after the last file change before reloading, ms. Default 200. */
  debounce?: number;
}

/**
 * Hot reload of the relay's configuration on SIGHUP or a changed file. A
 * configuration that fails to load or validate is logged and the running one
 * kept; the process never exits for it. The one part that may fail alone is
 * the tunnel certificate: the running pair stays and the rest applies, so a
 * broken certificate never holds back a revocation. Tunnels and in-flight requests are
 * untouched: only keys, the revocation list (whose tunnels close), the admin
 * token, the log level and the tunnel certificate change in place.
 */
export class ConfigReloader {
  readonly #opts: ReloaderOptions;
  readonly #hooks = new Map<string, ReloadHook>();
  #watch: FileWatch | undefined;
  #current: LoadedConfig;
  #running: Promise<boolean> | undefined;
  #queued = false;

  constructor(opts: ReloaderOptions) {
    this.#opts = opts;
    this.#current = opts.current;
  }

  /** Registers a hook under a name (for logs); one per name. */
  addHook(name: string, hook: ReloadHook): void {
    this.#hooks.set(name, hook);
  }

  /**
   * Reloads now. Concurrent triggers coalesce: one more reload runs after the
   * current one, so the last change on disk always wins. Resolves true when
   * the new configuration was applied.
   */
  reload(trigger: string): Promise<boolean> {
    if (this.#running) {
      this.#queued = true;
      return this.#running;
    }
    this.#running = this.#reload(trigger).finally(() => {
      this.#running = undefined;
      if (this.#queued) {
        this.#queued = false;
        void this.reload(trigger);
      }
    });
    return this.#running;
  }

  /** Watches the config file and the files it names that reload live; changes reload after a short quiet time. */
  watchFiles(): void {
    const v = this.#current.values;
    const files = ['config', 'revoked-tokens', 'admin-token-file', 'tunnel-tls-cert', 'tunnel-tls-key']
      .map((k) => v[k])
      .filter((f): f is string => typeof f === 'string' && f !== '');
    const previous = this.#watch;
    this.#watch = new FileWatch({
      files,
      onChange: () => void this.reload('file changed'),
      debounce: this.#opts.debounce ?? 200,
      logger: this.#opts.logger,
      what: 'config',
      otherwise: 'reload with SIGHUP',
    });
    // Only the old watchers go: a change already waiting out its debounce still reloads.
    previous?.close(true);
  }

  stopWatching(): void {
    this.#watch?.close();
    this.#watch = undefined;
  }

  async #reload(trigger: string): Promise<boolean> {
    const { relay, logger } = this.#opts;
    let next: LoadedConfig;
    const commits: Array<() => void> = [];
    try {
      next = await this.#opts.load(this.#current);
      for (const [name, hook] of this.#hooks) {
        const commit = await hook(next).catch((err: Error) => {
          throw new Error(`${name}: ${err.message}`);
        });
        if (commit) commits.push(commit);
      }
    } catch (err) {
      relay.metrics.reloaded(false);
      logger.error(
        { trigger, reason: (err as Error).message },
        'config reload failed; keeping the running configuration',
      );
      return false;
    }
    try {
      return this.#apply(trigger, next, commits);
    } catch (err) {
      // Everything that can fail was prepared above; this is a bug, and must not end the process.
      relay.metrics.reloaded(false);
      logger.error({ trigger, err }, 'config reload failed while applying; the relay keeps running');
      return false;
    }
  }

  /** Applies a validated configuration to the running relay. */
  #apply(trigger: string, next: LoadedConfig, commits: Array<() => void>): boolean {
    const { relay, logger } = this.#opts;
    const previous = this.#current;
    const configured = next.configured ?? next.values;
    const restart: string[] = [];
    for (const key of new Set([...Object.keys(previous.values), ...Object.keys(configured)])) {
      if (LIVE.has(key)) continue;
      if (JSON.stringify(previous.values[key]) !== JSON.stringify(configured[key])) restart.push(key);
    }
    // Changed options that cannot apply live keep their old value, in the
    // running relay and in what later reloads compare against.
    for (const key of restart) {
      logger.warn(
        { option: key, running: previous.values[key], configured: configured[key] },
        'option changed but needs restart; keeping the running value',
      );
      next.values[key] = previous.values[key];
    }
    if (next.restartError) {
      logger.error(
        { trigger, reason: next.restartError },
        'config has a mistake in an option that needs a restart (a restart would fail on it); applying the rest',
      );
    }
    if (next.revokedTokensError) {
      logger.error(
        { trigger, reason: next.revokedTokensError },
        'revocation list not reloaded; keeping the running one and applying the rest',
      );
      next.options.revokedTokens = previous.options.revokedTokens ?? [];
    }
    if (next.tunnelTlsError) {
      logger.error(
        { trigger, reason: next.tunnelTlsError },
        'tunnel certificate not reloaded; keeping the running one and applying the rest',
      );
      if (previous.options.tunnelTls) next.options.tunnelTls = previous.options.tunnelTls;
      else delete next.options.tunnelTls;
    }
    const tlsChanged =
      next.options.tunnelTls?.cert !== previous.options.tunnelTls?.cert ||
      next.options.tunnelTls?.key !== previous.options.tunnelTls?.key;
    if (tlsChanged && Boolean(next.options.tunnelTls) !== Boolean(previous.options.tunnelTls)) {
      logger.warn('tunnel TLS switched on or off: needs restart; keeping the running endpoint');
      // Like any other option that needs a restart: the running value stays, here and in what
      // later reloads compare against (and the files watched), so none of them tries to apply it.
      for (const key of ['tunnel-tls-cert', 'tunnel-tls-key']) next.values[key] = previous.values[key];
      if (previous.options.tunnelTls) next.options.tunnelTls = previous.options.tunnelTls;
      else delete next.options.tunnelTls;
    } else if (tlsChanged && next.options.tunnelTls) {
      relay.setTunnelTls(next.options.tunnelTls);
    }
    relay.setVerifyKeys(next.options.verifyKeys);
    relay.setAdminToken(next.options.adminToken);
    const closed = relay.setRevokedTokens(next.options.revokedTokens ?? []);
    logger.level = next.logLevel;
    for (const commit of commits) commit();
    this.#current = next;
    // The new configuration may name other files (a moved revocation list).
    if (this.#watch) this.watchFiles();
    // Applied, but not as configured when the tunnel certificate stayed: counted with the
    // failures, which operators alert on.
    relay.metrics.reloaded(!next.tunnelTlsError && !next.restartError && !next.revokedTokensError);
    logger.info(
      {
        trigger,
        verifyKeys: next.options.verifyKeys.length,
        revokedTokens: next.options.revokedTokens?.length ?? 0,
        revokedConnections: closed,
        ...(restart.length ? { needsRestart: restart } : {}),
      },
      'config reloaded',
    );
    return true;
  }
}
