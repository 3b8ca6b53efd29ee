import { readdir } from 'node:fs/promises';
import { basename, extname, join } from 'node:path';
import { type Logger, readFileUpTo } from '@burrow/shared';
import { FileWatch } from '../file-watch.js';
import { type CertEntry, type CertStore, certEntryFromPem } from './store.js';

export interface CertFilesOptions {
  /** Explicit certificate chain + key pairs (PEM files). */
  pairs?: ReadonlyArray<{ cert: string; key: string }>;
  /**
   * A directory of pairs: every `NAME.crt` or `NAME.pem` with a `NAME.key`
   * beside it. Files added, replaced or removed later are picked up.
   */
  dir?: string;
  store: CertStore;
  logger: Logger;
  /** Quiet time after the last file event before reloading, ms. Default 250. */
  debounce?: number;
}

/** Source name in the store. */
export const FILES_SOURCE = 'files';

/**
 * Certificates from files, reloaded when they change. A pair that cannot be
 * loaded (half-written file, key not matching yet) keeps the certificate it
 * had, and says why; the others load as they are, and the next change tries
 * again. Tools that renew certificates write the
 * chain and the key one after the other, so events are debounced.
 */
export class CertFiles {
  readonly #opts: CertFilesOptions;
  #watch: FileWatch | undefined;
  #reloading: Promise<void> | undefined;
  #again = false;
  #closed = false;
  /** What each pair (by certificate file) loaded as last. */
  #loaded = new Map<string, LoadedPair>();
  /** The certificate files without a key last warned of: said again only when they change. */
  #unpaired = '';

  constructor(opts: CertFilesOptions) {
    this.#opts = opts;
  }

  /** Loads every certificate; throws (with the file named) when the initial set is unusable. */
  async start(): Promise<void> {
    const loaded = await this.#load(true);
    this.#opts.store.set(FILES_SOURCE, loaded.entries);
    this.#report(loaded, 'certificates loaded');
    if (this.#closed) return;
    this.#watch = new FileWatch({
      files: (this.#opts.pairs ?? []).flatMap((p) => [p.cert, p.key]),
      dirs: this.#opts.dir ? [this.#opts.dir] : [],
      onChange: () => void this.reload(),
      debounce: this.#opts.debounce ?? 250,
      logger: this.#opts.logger,
      what: 'certificate',
      otherwise: 'send SIGHUP (or restart the relay) to load changed certificates',
    });
  }

  #report({ entries, failed, unpaired }: Loaded, msg: string): void {
    this.#opts.logger.info(
      { certificates: entries.map((e) => ({ file: e.origin, names: e.names, notAfter: e.notAfter })) },
      msg,
    );
    for (const f of failed) {
      this.#opts.logger.error(
        { cert: f.cert, key: f.key, reason: f.reason },
        f.kept
          ? 'certificate files unusable; serving the certificate they held before'
          : 'certificate files unusable; their names get no certificate from them',
      );
    }
    const listed = unpaired.join('\n');
    if (listed !== this.#unpaired && unpaired.length > 0) {
      this.#opts.logger.warn(
        { files: unpaired },
        'certificate files without a key of the same name (NAME.key) beside them; not loaded until it appears',
      );
    }
    this.#unpaired = listed;
  }

  close(): void {
    this.#closed = true;
    this.#watch?.close();
  }

  /** Reloads now (also what a file change triggers after the debounce). */
  reload(): Promise<void> {
    if (this.#reloading) {
      this.#again = true;
      return this.#reloading;
    }
    this.#reloading = (async () => {
      do {
        this.#again = false;
        try {
          const before = [...this.#loaded.values()].flatMap((p) =>
            p.previous ? [p.entry, p.previous] : [p.entry],
          );
          const loaded = await this.#load(false);
          if (this.#closed) return;
          const { entries } = loaded;
          // Nothing new (a pair caught half written keeps what it had): no change to announce.
          const same = entries.length === before.length && entries.every((e, i) => e === before[i]);
          if (!same) this.#opts.store.set(FILES_SOURCE, entries);
          this.#report(loaded, same ? 'certificates unchanged' : 'certificates reloaded');
        } catch (err) {
          this.#opts.logger.error(
            { reason: (err as Error).message },
            'certificate reload failed; keeping the previous certificates',
          );
        }
      } while (this.#again && !this.#closed);
    })().finally(() => {
      this.#reloading = undefined;
    });
    return this.#reloading;
  }

  /**
   * Every pair's certificate. One pair that cannot be used does not hold
   * back the others: it keeps the certificate it had (a renewal half
   * written), or is left out (a new pair not complete yet), and is reported.
   * Only an explicit pair (--cert-file) that fails at start fails the start.
   */
  async #load(initial: boolean): Promise<Loaded> {
    const explicit = this.#opts.pairs ?? [];
    const pairs = [...explicit];
    const inDir = this.#opts.dir ? await pairsIn(this.#opts.dir) : { pairs: [], unpaired: [] };
    pairs.push(...inDir.pairs);
    const entries: CertEntry[] = [];
    const failed: FailedPair[] = [];
    const loaded = new Map<string, LoadedPair>();
    /** Serves `pair` for `p`: its certificate, and the one it replaced until its own begins. */
    const serve = (p: { cert: string }, pair: LoadedPair, now: number) => {
      if (pair.previous && validAt(pair.entry, now)) pair.previous = undefined;
      entries.push(pair.entry);
      if (pair.previous) entries.push(pair.previous);
      loaded.set(p.cert, pair);
    };
    for (const [i, p] of pairs.entries()) {
      const before = this.#loaded.get(p.cert);
      try {
        const pair = await loadPair(p, before);
        const now = Date.now();
        const unusable = pair !== before ? notValidNow(pair.entry, now) : undefined;
        if (unusable) {
          const served = before && validAt(before.entry, now) ? before.entry : before?.previous;
          if (!served) failed.push({ cert: p.cert, key: p.key, reason: unusable, kept: false });
          // An expired certificate replaces nothing that is valid: clients would refuse it.
          else if (pair.entry.notAfter.getTime() <= now) throw new Error(unusable);
          else {
            // One that has not begun yet (a renewal from a CA whose clock runs ahead) takes over
            // when it does: the store presents whichever is valid at each handshake.
            pair.previous = served;
            this.#opts.logger.warn(
              { cert: p.cert, notBefore: pair.entry.notBefore },
              'certificate not valid yet; the one it replaces is served until it is',
            );
          }
        }
        serve(p, pair, now);
      } catch (err) {
        if (initial && i < explicit.length) throw err;
        if (before) serve(p, before, Date.now());
        failed.push({ cert: p.cert, key: p.key, reason: (err as Error).message, kept: before !== undefined });
      }
    }
    this.#loaded = loaded;
    return { entries, failed, unpaired: inDir.unpaired };
  }
}

function validAt(entry: CertEntry, now: number): boolean {
  return entry.notBefore.getTime() <= now && now < entry.notAfter.getTime();
}

/** Why `entry` cannot be presented now, or undefined when it can. */
function notValidNow(entry: CertEntry, now: number): string | undefined {
  if (entry.notAfter.getTime() <= now) return `the certificate expired on ${entry.notAfter.toISOString()}`;
  if (entry.notBefore.getTime() > now)
    return `the certificate is not valid before ${entry.notBefore.toISOString()}`;
  return undefined;
}

/** What one load found: the entries to serve, the pairs that failed, and certificates without a key. */
interface Loaded {
  entries: CertEntry[];
  failed: FailedPair[];
  unpaired: string[];
}

/** A pair that could not be loaded, and whether the certificate it had before is still served. */
interface FailedPair {
  cert: string;
  key: string;
  reason: string;
  kept: boolean;
}

/** A pair as loaded: its entry, and the files' text it came from. */
interface LoadedPair {
  entry: CertEntry;
  /** The certificate it replaced, served until this one's validity begins. */
  previous?: CertEntry | undefined;
  cert: string;
  key: string;
}

/** Loads a pair; files unchanged since `before` give its entry back, so a reload can tell nothing changed. */
async function loadPair(p: { cert: string; key: string }, before?: LoadedPair): Promise<LoadedPair> {
  let cert: string;
  let key: string;
  try {
    cert = await readFileUpTo(p.cert);
  } catch (err) {
    throw new Error(`cannot read ${p.cert}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  try {
    key = await readFileUpTo(p.key);
  } catch (err) {
    throw new Error(`cannot read ${p.key}: ${(err as NodeJS.ErrnoException).code ?? err}`);
  }
  if (before && before.cert === cert && before.key === key) return before;
  try {
    return { entry: certEntryFromPem(cert, key, p.cert), cert, key };
  } catch (err) {
    throw new Error(`${p.cert} with ${p.key}: ${(err as Error).message}`);
  }
}

/** A .pem file's name (without .pem) that says it holds a key: `privkey`, `server-key`, `key`. */
const KEY_NAME = /(^|[._-])(priv)?key$/i;

/** `NAME.crt`/`NAME.pem` + `NAME.key` pairs in a directory, and the certificate files without a key. */
async function pairsIn(
  dir: string,
): Promise<{ pairs: Array<{ cert: string; key: string }>; unpaired: string[] }> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    throw new Error(
      `cannot read certificate directory ${dir}: ${(err as NodeJS.ErrnoException).code ?? err}`,
    );
  }
  const present = new Set(names);
  const pairs: Array<{ cert: string; key: string }> = [];
  const unpaired: string[] = [];
  for (const n of names.sort()) {
    const ext = extname(n);
    if (ext !== '.crt' && ext !== '.pem') continue;
    const key = `${basename(n, ext)}.key`;
    if (present.has(key)) pairs.push({ cert: join(dir, n), key: join(dir, key) });
    // A private key kept as .pem (certbot's privkey.pem) is no certificate missing its key.
    else if (!(ext === '.pem' && KEY_NAME.test(basename(n, ext)))) unpaired.push(join(dir, n));
  }
  return { pairs, unpaired };
}
