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
 *
 * A watch follows the directory it found when it began, not its path: a
 * directory deleted and made again, or a symlink in its place repointed
 * (`ln -sfn certs-v2 certs`), would leave it watching the old one, silently.
 * So each directory's parent is watched too, for the directory's own name: when
 * that name changes, the directory is watched again, as it now is, and that
 * counts as a change of everything in it.
 */
export class FileWatch {
  readonly #opts: FileWatchOptions;
  readonly #watchers = new Set<FSWatcher>();
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

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
    for (const [dir, names] of byDir) this.#watchDir(dir, names);
  }

  /**
   * Stops watching. A change still waiting out its quiet time is dropped,
   * unless `keepPending` (a watch replaced by one on other files).
   */
  close(keepPending = false): void {
    this.#closed = true;
    if (!keepPending) clearTimeout(this.#timer);
    for (const w of this.#watchers) w.close();
    this.#watchers.clear();
  }

  /** Watches `dir` for `names` (null: any), and its parent for `dir` being replaced. */
  #watchDir(dir: string, names: Set<string> | null): void {
    const { what, otherwise } = this.#opts;
    const onEvent = (name: string | null) => {
      if (!names || name === null || names.has(name) || name.startsWith('..data')) this.#changed();
    };
    const cannot = `cannot watch ${what} directory; ${otherwise}`;
    let inside = this.#open(dir, onEvent, { cannot });
    const parent = dirname(dir);
    if (parent === dir) return;
    const self = basename(dir);
    const onParentEvent = (name: string | null) => {
      if ((name !== null && name !== self) || this.#closed) return;
      const previous = inside;
      // Gone for now (deleted, to be made again): its parent says when it is back.
      inside = this.#open(dir, onEvent, { cannot, missingOk: true });
      if (previous) this.#drop(previous);
      this.#changed();
    };
    this.#open(parent, onParentEvent, {
      cannot: `cannot watch the directory holding a ${what} directory; if that directory is replaced, ${otherwise}`,
      // Its files are still watched: only a replacement of the whole directory is missed.
      level: 'info',
    });
  }

  /**
   * A watch on `dir`, or undefined when there can be none: logged (at `level`,
   * default warn) as `cannot`, unless the directory is missing and `missingOk`.
   */
  #open(
    dir: string,
    onEvent: (name: string | null) => void,
    {
      cannot,
      level = 'warn',
      missingOk = false,
    }: { cannot: string; level?: 'warn' | 'info'; missingOk?: boolean },
  ): FSWatcher | undefined {
    const { logger, what } = this.#opts;
    try {
      const w = watch(dir, (_event, name) => onEvent(name === null ? null : String(name)));
      w.on('error', (err) => logger.warn({ dir, err: err.message }, `${what} watch failed`));
      this.#watchers.add(w);
      return w;
    } catch (err) {
      if (!(missingOk && (err as NodeJS.ErrnoException).code === 'ENOENT')) {
        logger[level]({ dir, err: (err as Error).message }, cannot);
      }
      return undefined;
    }
  }

  #drop(w: FSWatcher): void {
    w.close();
    this.#watchers.delete(w);
  }

  #changed(): void {
    clearTimeout(this.#timer);
    this.#timer = setTimeout(this.#opts.onChange, this.#opts.debounce);
    this.#timer.unref();
  }
}
