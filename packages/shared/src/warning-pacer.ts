/**
 * Spaces out warnings of one kind: a flood of the same event (dropped
 * connections, a backend that is down) warns at once, then at most once per
 * `interval` ms, each time saying how many it held back in between.
 */
export class WarningPacer {
  readonly #interval: number;
  readonly #maxKeys: number;
  readonly #keys = new Map<string, { until: number; held: number }>();

  constructor(interval: number, maxKeys = 1024) {
    this.#interval = interval;
    this.#maxKeys = maxKeys;
  }

  /**
   * An event of kind `key`: undefined to keep it quiet, or, to warn now, how
   * many events of that kind were kept quiet since the last warning.
   */
  pass(key: string): number | undefined {
    const now = performance.now();
    const last = this.#keys.get(key);
    if (last && now < last.until) {
      last.held++;
      return undefined;
    }
    if (this.#keys.size >= this.#maxKeys)
      for (const [k, v] of this.#keys) if (v.until <= now) this.#keys.delete(k);
    this.#keys.set(key, { until: now + this.#interval, held: 0 });
    return last?.held ?? 0;
  }
}
