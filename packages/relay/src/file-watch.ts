import { type FSWatcher, watch } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import type { Logger } from '@burrow/shared';

export interface FileWatchOptions {
  /** Files whose change counts. Their directories are watched, filtered by name. */
  files?: readonly string[];
  /** Directories in which any change counts. */
  dirs?: readonly string[];
  /** Called once changes have been quiet for `debounce` ms. */
  onChange: () => void;
  /** Quiet time after the last event, ms. */
  debounce: number;
  logger: Logger;
  /** What is watched, for log lines ("config", "certificate"). */
  what: string;
  /** How else a change is picked up when a directory cannot be watched, for the log line. */
  otherwise: string;
}

/**
 * Calls back when watched files change, once the changes settle. Editors,
 * certificate renewal tools and the kubelet replace files by rename, which
 * ends a watch on the file itself, so this watches directories and filters by
 * name; a Kubernetes ConfigMap or Secret volume swaps its `..data` symlink,
 * which counts as a change of every file in it. Tools that write a chain and
 * then its key fire several events: the debounce makes them one change.
 */
export class FileWatch {
  readonly #opts: FileWatchOptions;
  readonly #watchers: FSWatcher[] = [];
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: FileWatchOptions) {
    this.#opts = opts;
    // null: any name in the directory counts.
    const byDir = new Map<string, Set<string> | null>();
    for (const d of opts.dirs ?? []) byDir.set(resolve(d), null);
    for (const f of opts.files ?? []) {
      const dir = dirname(resolve(f));
      const names = byDir.get(dir);
      if (names === null) continue;
      byDir.set(dir, (names ?? new Set()).add(basename(f)));
    }
    for (const [dir, names] of byDir) {
      try {
        const w = watch(dir, (_event, name) => {
          const n = name === null ? null : String(name);
          if (!names || n === null || names.has(n) || n.startsWith('..data')) this.#changed();
        });
        w.on('error', (err) => opts.logger.warn({ dir, err: err.message }, `${opts.what} watch failed`));
        this.#watchers.push(w);
      } catch (err) {
        opts.logger.warn(
          { dir, err: (err as Error).message },
          `cannot watch ${opts.what} directory; ${opts.otherwise}`,
        );
      }
    }
  }

  /**
   * Stops watching. A change still waiting out its quiet time is dropped,
   * unless `keepPending` (a watch replaced by one on other files).
   */
  close(keepPending = false): void {
    if (!keepPending) clearTimeout(this.#timer);
    for (const w of this.#watchers.splice(0)) w.close();
  }

  #changed(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(this.#opts.onChange, this.#opts.debounce);
    this.#timer.unref();
  }
}
