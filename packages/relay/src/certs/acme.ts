import { EventEmitter } from 'node:events';
import { Agent as HttpsAgent } from 'node:https';
import {
  createSecureContext,
  createServer as createTlsServer,
  type SecureContext,
  type Server,
} from 'node:tls';
import { type Logger, normalizeHost, patternAllows } from '@burrow/shared';
import { ACME_TLS_ALPN } from '../listeners/tls.js';
import type { RouteTable, RouteTarget } from '../routes/table.js';
import { type AcmeClient, loadAcmeClient } from './acme-client.js';
import { AcmeState } from './acme-state.js';
import { type BudgetPlan, type DueName, OrderBudget } from './order-budget.js';
import { type CertEntry, type CertStore, certEntryFromPem } from './store.js';

export type AcmeChallenge = 'http-01' | 'tls-alpn-01';

export interface AcmeOptions {
  /** ACME directory URL, e.g. Let's Encrypt's. */
  directoryUrl: string;
  /** Contact for the account (expiry mail from the CA). */
  email?: string;
  /** Hostname patterns (`app.example.com`, `*.example.com`) certificates may be requested for. */
  domains: readonly string[];
  /** Where the account key and certificates persist across restarts. */
  stateDir: string;
  /** Challenge types in order of preference. Default: http-01, then tls-alpn-01. */
  challenges?: readonly AcmeChallenge[];
  /** PEM of a CA to trust for the directory's own TLS (a private or test CA). */
  directoryCa?: string;
  /** First retry delay after a failed order, ms; doubles up to `retryCap`. Default 1 min. */
  retryBase?: number;
  /** Longest retry delay, ms. Default 6 h. */
  retryCap?: number;
  /**
   * Orders started in any hour, renewals included (default 60): names past it
   * wait their turn, so that a tenant announcing many names under a wildcard
   * of `domains` cannot spend the CA's rate limits for everyone at once. One
   * subject may start three quarters of them (rounded up); see OrderBudget.
   */
  ordersPerHour?: number;
}

export interface AcmeEvents {
  issued: [hostname: string, entry: CertEntry];
  failed: [hostname: string, error: Error];
  /** The served names were looked through once (tests wait for it). */
  scanned: [];
}

/** Source name in the certificate store. */
export const ACME_SOURCE = 'acme';
/** Renew once this fraction of a certificate's lifetime has passed. */
const RENEW_AT = 2 / 3;
/** Default of `ordersPerHour`. */
const DEFAULT_ORDERS_PER_HOUR = 60;
/** setTimeout's largest delay; longer waits are re-armed. */
const MAX_TIMER = 2 ** 31 - 1;
/**
 * Least time between the end of one look through the served names and the
 * start of the next, ms. A look walks every name the relay serves (about
 * 11 ms at 32,000) on the thread all tenants share: a tenant re-announcing in
 * a loop, or many names waking at once, must not have the relay do little
 * else. Changes in between all cost one look; a change after a quiet spell
 * is looked at at once.
 */
export const SCAN_GAP = 200;
/** The gap is at least this many times the last look's duration: a larger table costs the same share. */
const SCAN_GAP_FACTOR = 20;

/** When a certificate valid from `notBefore` to `notAfter` is due for renewal. */
export function renewalTime(notBefore: Date, notAfter: Date): number {
  const from = notBefore.getTime();
  return from + (notAfter.getTime() - from) * RENEW_AT;
}

/** ACME takes a name over from a file certificate this long before the file expires, at most. */
const FILE_HANDOVER = 30 * 24 * 3600_000;

/**
 * When ACME orders a name that a certificate from files (valid from `notBefore`
 * to `notAfter`) covers: 30 days before it expires, or at the point ACME would
 * renew a certificate of that lifetime, whichever is later. Whoever manages the
 * files has until then to replace it; a name is never left to expire.
 */
export function fileHandoverTime(notBefore: Date, notAfter: Date): number {
  return Math.max(renewalTime(notBefore, notAfter), notAfter.getTime() - FILE_HANDOVER);
}

/**
 * Obtains and renews certificates from an ACME CA for the names agents serve.
 * Only names that a connected agent holds right now (HTTP routes, exact
 * names: HTTP-01 and TLS-ALPN-01 cannot prove a wildcard) and that the
 * configured domains allow are ever ordered, so a tenant cannot spend the
 * CA's rate limits on names the operator did not mean to cover.
 */
export class AcmeManager extends EventEmitter<AcmeEvents> {
  readonly #opts: AcmeOptions;
  readonly #store: CertStore;
  readonly #table: RouteTable<RouteTarget>;
  readonly #log: Logger;
  readonly #state: AcmeState;
  readonly #certs = new Map<string, CertEntry>();
  readonly #inFlight = new Map<string, Promise<void>>();
  readonly #timers = new Map<string, NodeJS.Timeout>();
  readonly #budget: OrderBudget;
  /** The budget is spent and that has been logged: one warning per spell. */
  #budgetWarned = false;
  /** Subjects that have spent their share of the budget, and that has been logged. */
  readonly #sharesWarned = new Set<string>();
  /**
   * Wakes the next look when a slot of the order budget comes free. Names
   * waiting for one hold no timer of their own: every look plans them again,
   * all together, so a freed slot goes by the budget's rules (not to the name
   * whose timer fired first), and a name that moved to another subject waits
   * by that subject's orders.
   */
  #budgetTimer: NodeJS.Timeout | undefined;
  /** Names whose timer waits for a file certificate's handover: every reconcile looks at them again. */
  readonly #onFiles = new Set<string>();
  readonly #failures = new Map<string, { attempts: number; until: number }>();
  readonly #httpTokens = new Map<string, string>();
  readonly #alpnContexts = new Map<string, SecureContext>();
  readonly #alpnServer: Server;
  /** The account's client, once; orders that start together wait for the same registration. */
  #client: Promise<AcmeClient.Client> | undefined;
  #unsubscribe: (() => void) | undefined;
  #closed = false;
  /** A look through the served names is due: queued (`true`), or a timer waiting out the gap. */
  #scanDue: NodeJS.Timeout | boolean = false;
  /** When the next look may start (performance.now()). */
  #nextScan = 0;
  /** Orders placed since start (tests and metrics). */
  orders = 0;
  /** Looks through the served names since start (tests). */
  scans = 0;

  constructor(opts: AcmeOptions & { store: CertStore; table: RouteTable<RouteTarget>; logger: Logger }) {
    super();
    this.#opts = opts;
    this.#store = opts.store;
    this.#table = opts.table;
    this.#log = opts.logger.child({ component: 'acme' });
    this.#state = new AcmeState(opts.stateDir);
    this.#budget = new OrderBudget(opts.ordersPerHour ?? DEFAULT_ORDERS_PER_HOUR);
    this.#alpnServer = createTlsServer({
      ALPNProtocols: [ACME_TLS_ALPN],
      // A validator completes its handshake at once; a client that only claims to be one must
      // not hold the socket for Node's default of two minutes.
      handshakeTimeout: 10_000,
      SNICallback: (name, cb) => {
        const ctx = this.#alpnContexts.get(normalizeHost(name));
        if (ctx) cb(null, ctx);
        else cb(new Error(`no TLS-ALPN-01 challenge for ${name}`));
      },
    });
    // The validator only needs the handshake; it closes the connection itself.
    this.#alpnServer.on('secureConnection', (s) => s.end());
    this.#alpnServer.on('tlsClientError', () => {});
  }

  /** Loads the account and stored certificates, then follows the route table. */
  async start(): Promise<void> {
    await this.#state.init();
    for (const { hostname, cert, key } of await this.#state.certificates()) {
      try {
        const entry = certEntryFromPem(cert, key, ACME_SOURCE);
        if (entry.notAfter.getTime() > Date.now()) this.#certs.set(hostname, entry);
      } catch (err) {
        this.#log.warn({ hostname, reason: (err as Error).message }, 'stored certificate unusable; ignored');
      }
    }
    this.#publish();
    this.#log.info({ certificates: [...this.#certs.keys()] }, 'acme state loaded');
    const reconcile = () => this.#scanSoon();
    const untable = this.#table.onChange(reconcile);
    // A name skipped because files covered it is ordered once they no longer do (a removed file).
    this.#store.on('change', reconcile);
    this.#unsubscribe = () => {
      untable();
      this.#store.off('change', reconcile);
    };
    this.#reconcile();
  }

  /** The key authorization for an HTTP-01 token, while its challenge is pending. */
  httpChallenge(token: string): string | undefined {
    return this.#httpTokens.get(token);
  }

  /** The TLS-ALPN-01 responder: the TLS listener hands it `acme-tls/1` connections. */
  get alpn(): { handles(name: string): boolean; server: Server } {
    return { handles: (name) => this.#alpnContexts.has(name), server: this.#alpnServer };
  }

  /**
   * Orders a new certificate for `hostname` now, whatever the old one's age
   * and the budget (forced renewal); the order counts against the budget.
   */
  renew(hostname: string): Promise<void> {
    if (!this.#inFlight.has(hostname)) this.#budget.record(this.#wanted().get(hostname) ?? '', Date.now());
    return this.#issue(hostname);
  }

  close(): void {
    this.#closed = true;
    this.#unsubscribe?.();
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
    clearTimeout(this.#budgetTimer);
    if (typeof this.#scanDue !== 'boolean') clearTimeout(this.#scanDue);
    this.#scanDue = false;
  }

  /**
   * Has the served names looked through once more, after whatever else is
   * changing them right now: at once when the last look was long enough ago,
   * otherwise when the gap has passed. Any number of calls meanwhile add
   * nothing; a call during a look asks for one more after it.
   */
  #scanSoon(): void {
    if (this.#closed || this.#scanDue !== false) return;
    this.#scanDue = true;
    // After whatever is changing the names right now (an announcement of many routes, a frame
    // of many announcements): they all cost this one look.
    queueMicrotask(() => this.#scanWhenDue());
  }

  #scanWhenDue(): void {
    if (this.#closed) return;
    const wait = this.#nextScan - performance.now();
    if (wait > 0) {
      this.#scanDue = setTimeout(() => this.#scanWhenDue(), wait);
      this.#scanDue.unref();
      return;
    }
    this.#scanDue = false;
    this.#reconcile();
  }

  /**
   * Names that may have a certificate now, each with the subject serving it:
   * served by a connected agent and allowed by the domains.
   */
  #wanted(): Map<string, string> {
    const out = new Map<string, string>();
    for (const { hostname, mode, subject } of this.#table.served()) {
      if (mode !== 'http' || hostname.startsWith('*.')) continue;
      if (this.#opts.domains.some((p) => patternAllows(p, hostname))) out.set(hostname, subject);
    }
    return out;
  }

  #reconcile(): void {
    if (this.#closed) return;
    const started = performance.now();
    try {
      this.#scan();
    } finally {
      const ended = performance.now();
      this.#nextScan = ended + Math.max(SCAN_GAP, (ended - started) * SCAN_GAP_FACTOR);
      this.scans++;
      this.emit('scanned');
    }
  }

  /** Orders what is due among the served names, and sets a timer for each of the rest. */
  #scan(): void {
    const now = Date.now();
    const due: DueName[] = [];
    for (const [hostname, subject] of this.#wanted()) {
      if (this.#inFlight.has(hostname)) continue;
      if (this.#onFiles.delete(hostname)) {
        // The files may have changed since (replaced, or removed): decide again.
        clearTimeout(this.#timers.get(hostname));
        this.#timers.delete(hostname);
      }
      if (this.#timers.has(hostname)) continue;
      const failure = this.#failures.get(hostname);
      if (failure && failure.until > now) {
        this.#wakeAt(hostname, failure.until);
        continue;
      }
      const current = this.#certs.get(hostname);
      if (current) {
        const renewal = renewalTime(current.notBefore, current.notAfter);
        if (renewal > now) {
          this.#wakeAt(hostname, renewal);
          continue;
        }
        due.push({ hostname, subject, expires: current.notAfter.getTime() });
        continue;
      }
      // A certificate from files covers it: nothing to order, unless the file is near its end
      // and nobody has replaced it.
      const other = this.#store.find(hostname);
      if (other && other.origin !== ACME_SOURCE) {
        const handover = fileHandoverTime(other.notBefore, other.notAfter);
        if (handover > now) {
          this.#wakeAt(hostname, handover);
          this.#onFiles.add(hostname);
          continue;
        }
        due.push({ hostname, subject, expires: other.notAfter.getTime() });
        continue;
      }
      due.push({ hostname, subject });
    }
    // Planned even with nothing due: a spell of waiting whose names went is over.
    const plan = this.#budget.plan(due, now);
    this.#logBudget(plan, now);
    clearTimeout(this.#budgetTimer);
    this.#budgetTimer = undefined;
    if (plan.wait.length > 0) {
      let next = Number.POSITIVE_INFINITY;
      for (const { until } of plan.wait) next = Math.min(next, until);
      this.#budgetTimer = setTimeout(() => this.#scanSoon(), Math.min(Math.max(next - now, 0), MAX_TIMER));
      this.#budgetTimer.unref();
    }
    for (const name of plan.order) void this.#issue(name.hostname);
  }

  /**
   * Warns once when the hourly budget runs out, and once for each subject that
   * has spent its share of it; says so when orders resume, or no name waits
   * any longer.
   */
  #logBudget(plan: BudgetPlan, now: number): void {
    const limit = this.#opts.ordersPerHour ?? DEFAULT_ORDERS_PER_HOUR;
    if (plan.spentUntil !== undefined && !this.#budgetWarned) {
      this.#budgetWarned = true;
      this.#log.warn(
        { ordersPerHour: limit, resumeAt: new Date(plan.spentUntil).toISOString() },
        'acme order budget spent; further names wait (acme-orders-per-hour)',
      );
    } else if (plan.spentUntil === undefined && this.#budgetWarned) {
      this.#budgetWarned = false;
      this.#log.info({ ordersPerHour: limit }, 'acme orders resume');
    }
    for (const [subject, back] of plan.sharesSpent) {
      if (this.#sharesWarned.has(subject)) continue;
      this.#sharesWarned.add(subject);
      this.#log.warn(
        { subject, orders: this.#budget.share, resumeAt: new Date(back).toISOString() },
        "acme orders for one subject at its share of the budget; its further names wait, others' go first",
      );
    }
    for (const subject of this.#sharesWarned) {
      if (this.#budget.used(subject, now) < this.#budget.share) this.#sharesWarned.delete(subject);
    }
  }

  #wakeAt(hostname: string, at: number): void {
    const timer = setTimeout(
      () => {
        this.#timers.delete(hostname);
        this.#scanSoon();
      },
      Math.min(Math.max(at - Date.now(), 0), MAX_TIMER),
    );
    timer.unref();
    this.#timers.set(hostname, timer);
  }

  #issue(hostname: string): Promise<void> {
    const running = this.#inFlight.get(hostname);
    if (running) return running;
    clearTimeout(this.#timers.get(hostname));
    this.#timers.delete(hostname);
    this.orders++;
    const job = this.#order(hostname).finally(() => {
      this.#inFlight.delete(hostname);
      this.#scanSoon();
    });
    this.#inFlight.set(hostname, job);
    return job;
  }

  async #order(hostname: string): Promise<void> {
    const started = performance.now();
    const challenges = this.#challengesFor(hostname);
    this.#log.info({ hostname, challenges }, 'acme order started');
    let used: string | undefined;
    try {
      const client = await this.#getClient();
      const acme = await loadAcmeClient();
      const certKey = await acme.crypto.createPrivateEcdsaKey('P-256');
      const [, csr] = await acme.crypto.createCsr({ commonName: hostname, altNames: [hostname] }, certKey);
      const alpnKey = await acme.crypto.createPrivateEcdsaKey('P-256');
      const cert = await client.auto({
        csr,
        ...(this.#opts.email ? { email: this.#opts.email } : {}),
        termsOfServiceAgreed: true,
        // The relay cannot reach itself through its public name from every network; the CA checks.
        skipChallengeVerification: true,
        // acme-client takes the first of these the CA offers.
        challengePriority: challenges,
        challengeCreateFn: async (authz, challenge, keyAuthorization) => {
          // The typings predate RFC 8737; tls-alpn-01 is a string the CA sends all the same.
          const type: string = challenge.type;
          used = type;
          if (type === 'http-01') {
            this.#httpTokens.set(challenge.token, keyAuthorization);
          } else if (type === 'tls-alpn-01') {
            const [, alpnCert] = await acme.crypto.createAlpnCertificate(authz, keyAuthorization, alpnKey);
            this.#alpnContexts.set(
              authz.identifier.value.toLowerCase(),
              createSecureContext({ cert: alpnCert, key: alpnKey }),
            );
          }
        },
        challengeRemoveFn: async (authz, challenge) => {
          if (challenge.type === 'http-01') this.#httpTokens.delete(challenge.token);
          else this.#alpnContexts.delete(authz.identifier.value.toLowerCase());
        },
      });
      const keyPem = certKey.toString();
      const entry = certEntryFromPem(cert, keyPem, ACME_SOURCE);
      this.#certs.set(hostname, entry);
      this.#failures.delete(hostname);
      this.#publish();
      // The CA has issued it, and counted it against its rate limits: ordering again because
      // the disk is full would spend them on every retry while the name goes without.
      await this.#state.saveCertificate(hostname, cert, keyPem).catch((err: Error) => {
        this.#log.error(
          { hostname, error: err.message },
          'acme certificate not saved; serving it until the relay restarts',
        );
      });
      this.#log.info(
        {
          hostname,
          challenge: used,
          notAfter: entry.notAfter,
          durationMs: Math.round(performance.now() - started),
        },
        'acme certificate issued',
      );
      this.emit('issued', hostname, entry);
    } catch (err) {
      const previous = this.#failures.get(hostname)?.attempts ?? 0;
      const delay = Math.min(
        (this.#opts.retryBase ?? 60_000) * 2 ** previous,
        this.#opts.retryCap ?? 6 * 3_600_000,
      );
      this.#failures.set(hostname, { attempts: previous + 1, until: Date.now() + delay });
      // acme-client puts the CA's problem detail in the message: that is what the operator needs.
      this.#log.error(
        { hostname, challenge: used, error: (err as Error).message, attempt: previous + 1, retryInMs: delay },
        'acme order failed',
      );
      this.emit('failed', hostname, err as Error);
    }
  }

  /**
   * The challenge types to offer for `hostname`'s next order, preferred first:
   * the configured order, turned by one for each failed order in a row. A
   * type that cannot work here (port 80 closed to the internet) would
   * otherwise be chosen again on every retry, each one spending the CA's
   * failed-validation limit, while the other type was never tried.
   */
  #challengesFor(hostname: string): AcmeChallenge[] {
    const configured = this.#opts.challenges ?? ['http-01', 'tls-alpn-01'];
    const turn = (this.#failures.get(hostname)?.attempts ?? 0) % configured.length;
    return [...configured.slice(turn), ...configured.slice(0, turn)];
  }

  #getClient(): Promise<AcmeClient.Client> {
    // Orders for several names start at once: each creating the account key and registering
    // would race on account.key and leave account.json naming another key's account.
    this.#client ??= this.#register().catch((err: unknown) => {
      this.#client = undefined;
      throw err;
    });
    return this.#client;
  }

  async #register(): Promise<AcmeClient.Client> {
    const acme = await loadAcmeClient();
    if (this.#opts.directoryCa) {
      // acme-client sends every request through its shared axios instance.
      acme.axios.defaults.httpsAgent = new HttpsAgent({ ca: this.#opts.directoryCa });
    }
    const account = await this.#state.account(this.#opts.directoryUrl);
    const client = new acme.Client({
      directoryUrl: this.#opts.directoryUrl,
      accountKey: account.key,
      ...(account.url ? { accountUrl: account.url } : {}),
    });
    if (!account.url) {
      await client.createAccount({
        termsOfServiceAgreed: true,
        ...(this.#opts.email ? { contact: [`mailto:${this.#opts.email}`] } : {}),
      });
      await this.#state.saveAccountUrl(this.#opts.directoryUrl, client.getAccountUrl());
      this.#log.info({ directory: this.#opts.directoryUrl }, 'acme account registered');
    }
    return client;
  }

  #publish(): void {
    this.#store.set(ACME_SOURCE, [...this.#certs.values()]);
  }
}
