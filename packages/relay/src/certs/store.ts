import { createPrivateKey, X509Certificate } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createSecureContext, type SecureContext } from 'node:tls';

/** One certificate the relay can serve, with the names it covers. */
export interface CertEntry {
  /** DNS names from the subjectAltName (lower case; may include `*.` wildcards). */
  names: string[];
  notBefore: Date;
  notAfter: Date;
  /** Where it came from, for logs: a file path or `acme`. */
  origin: string;
  context: SecureContext;
  /** PEM chain, kept so ACME can persist and compare it. */
  certPem: string;
}

/**
 * Builds an entry from a PEM chain and key, checking that the key belongs to
 * the first certificate and that it names at least one DNS host. Throws with a
 * message fit for a log line or a ConfigError.
 */
export function certEntryFromPem(certPem: string, keyPem: string, origin: string): CertEntry {
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(certPem);
  } catch (err) {
    throw new Error(`not a PEM certificate: ${(err as Error).message}`);
  }
  let key: ReturnType<typeof createPrivateKey>;
  try {
    key = createPrivateKey(keyPem);
  } catch (err) {
    throw new Error(`not a PEM private key: ${(err as Error).message}`);
  }
  if (!leaf.checkPrivateKey(key)) throw new Error('the private key does not belong to the certificate');
  const names = dnsNames(leaf);
  if (names.length === 0) throw new Error('the certificate names no DNS host in its subjectAltName');
  const context = createSecureContext({ cert: certPem, key: keyPem, minVersion: 'TLSv1.2' });
  return {
    names,
    notBefore: new Date(leaf.validFrom),
    notAfter: new Date(leaf.validTo),
    origin,
    context,
    certPem,
  };
}

function dnsNames(cert: X509Certificate): string[] {
  const san = cert.subjectAltName ?? '';
  const out: string[] = [];
  for (const part of san.split(/,\s*/)) {
    if (part.startsWith('DNS:')) out.push(part.slice(4).toLowerCase().replace(/\.$/, ''));
  }
  return out;
}

/**
 * The entry valid now that stays valid longest, if any. One whose validity has
 * not begun would be refused by clients, however long it lasts.
 */
function latest(entries: readonly CertEntry[] | undefined, now: number): CertEntry | undefined {
  let best: CertEntry | undefined;
  for (const e of entries ?? []) {
    const until = e.notAfter.getTime();
    if (e.notBefore.getTime() > now) continue;
    if (until > now && (!best || until > best.notAfter.getTime())) best = e;
  }
  return best;
}

export interface CertStoreEvents {
  change: [];
}

/**
 * The certificates the TLS listener can present, grouped by source (the
 * files, ACME). A source replaces its whole set at once, so a reload swaps
 * certificates atomically; open connections keep the context they started
 * with, and new handshakes get the new one.
 */
export class CertStore extends EventEmitter<CertStoreEvents> {
  readonly #sources = new Map<string, readonly CertEntry[]>();
  /** Every entry by each name it lists (exact or `*.` pattern), rebuilt on change: one lookup per handshake. */
  #byName = new Map<string, CertEntry[]>();

  /** Replaces everything `source` provides. */
  set(source: string, entries: readonly CertEntry[]): void {
    this.#sources.set(source, [...entries]);
    const byName = new Map<string, CertEntry[]>();
    for (const list of this.#sources.values()) {
      for (const e of list) {
        for (const name of new Set(e.names)) {
          const held = byName.get(name);
          if (held) held.push(e);
          else byName.set(name, [e]);
        }
      }
    }
    this.#byName = byName;
    this.emit('change');
  }

  /**
   * The certificate for an SNI name: an exact name beats a wildcard, and among
   * equals the one valid longest wins (a renewed certificate beats the old one).
   */
  find(host: string): CertEntry | undefined {
    const now = Date.now();
    const exact = latest(this.#byName.get(host), now);
    if (exact) return exact;
    const dot = host.indexOf('.');
    return dot > 0 ? latest(this.#byName.get(`*${host.slice(dot)}`), now) : undefined;
  }

  /** Certificates of one source. */
  entries(source: string): readonly CertEntry[] {
    return this.#sources.get(source) ?? [];
  }

  /**
   * One row per name: the expiry of the certificate served for it now, or, when
   * none is valid, of the one that lasts longest (for metrics and the admin API).
   * A name covered twice (a renewed file beside the old one) must not report
   * whichever was listed last.
   */
  expiries(): Array<{ hostname: string; notAfter: Date; origin: string }> {
    const now = Date.now();
    const out: Array<{ hostname: string; notAfter: Date; origin: string }> = [];
    for (const [hostname, entries] of this.#byName) {
      const e =
        latest(entries, now) ??
        entries.reduce((a, b) => (b.notAfter.getTime() > a.notAfter.getTime() ? b : a));
      out.push({ hostname, notAfter: e.notAfter, origin: e.origin });
    }
    return out;
  }
}
