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
 * Certificates from files, reloaded when they change. A reload that fails
 * (half-written file, key not matching yet) keeps the previous set and logs
 * why; the next change tries again. Tools that renew certificates write the
 * chain and the key one after the other, so events are debounced.
 */
export class CertFiles {
  readonly #opts: CertFilesOptions;
  #watch: FileWatch | undefined;
  #reloading: Promise<void> | undefined;
  #again = false;
  #closed = false;

  constructor(opts: CertFilesOptions) {
    this.#opts = opts;
  }

  /** Loads every certificate; throws (with the file named) when the initial set is unusable. */
  async start(): Promise<void> {
    const entries = await this.#load();
    this.#opts.store.set(FILES_SOURCE, entries);
    this.#opts.logger.info(
      { certificates: entries.map((e) => ({ file: e.origin, names: e.names, notAfter: e.notAfter })) },
      'certificates loaded',
    );
    if (this.#closed) return;
    this.#watch = new FileWatch({
      files: (this.#opts.pairs ?? []).flatMap((p) => [p.cert, p.key]),
      dirs: this.#opts.dir ? [this.#opts.dir] : [],
      onChange: () => void this.reload(),
      debounce: this.#opts.debounce ?? 250,
      logger: this.#opts.logger,
      what: 'certificate',
      otherwise: 'restart the relay to load changed certificates',
    });
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
          const entries = await this.#load();
          if (this.#closed) return;
          this.#opts.store.set(FILES_SOURCE, entries);
          this.#opts.logger.info(
            { certificates: entries.map((e) => ({ file: e.origin, names: e.names, notAfter: e.notAfter })) },
            'certificates reloaded',
          );
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

  async #load(): Promise<CertEntry[]> {
    const pairs = [...(this.#opts.pairs ?? [])];
    if (this.#opts.dir) pairs.push(...(await pairsIn(this.#opts.dir)));
    const entries: CertEntry[] = [];
    for (const p of pairs) {
      let cert: string;
      let key: string;
      try {
        [cert, key] = await Promise.all([readFileUpTo(p.cert), readFileUpTo(p.key)]);
      } catch (err) {
        throw new Error(`cannot read ${p.cert} / ${p.key}: ${(err as NodeJS.ErrnoException).code ?? err}`);
      }
      try {
        entries.push(certEntryFromPem(cert, key, p.cert));
      } catch (err) {
        throw new Error(`${p.cert}: ${(err as Error).message}`);
      }
    }
    return entries;
  }
}

/** `NAME.crt`/`NAME.pem` + `NAME.key` pairs in a directory; certificates without a key are skipped. */
async function pairsIn(dir: string): Promise<Array<{ cert: string; key: string }>> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    throw new Error(
      `cannot read certificate directory ${dir}: ${(err as NodeJS.ErrnoException).code ?? err}`,
    );
  }
  const present = new Set(names);
  const out: Array<{ cert: string; key: string }> = [];
  for (const n of names.sort()) {
    const ext = extname(n);
    if (ext !== '.crt' && ext !== '.pem') continue;
    const key = `${basename(n, ext)}.key`;
    if (present.has(key)) out.push({ cert: join(dir, n), key: join(dir, key) });
  }
  return out;
}
