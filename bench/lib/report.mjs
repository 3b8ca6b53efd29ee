// Small helpers shared by the benchmarks: environment parsing, latency
// recording at sub-millisecond resolution, medians and aligned tables.

/** An integer from the environment, or `fallback`; exits with one clear line when malformed. */
export function envInt(name, fallback, min) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n < min) {
    console.error(`${name} must be an integer >= ${min} (got "${raw}")`);
    process.exit(1);
  }
  return n;
}

/** A positive number (fractions allowed) from the environment, or `fallback`. */
export function envNumber(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`${name} must be a number > 0 (got "${raw}")`);
    process.exit(1);
  }
  return n;
}

/** A comma-separated list from the environment, each item checked against `allowed` (when given). */
export function envList(name, fallback, allowed) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const items = raw
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = allowed ? items.filter((i) => !allowed.includes(i)) : [];
  if (items.length === 0 || bad.length > 0) {
    console.error(
      `${name} must be a comma-separated list of ${allowed?.join(', ') ?? 'values'} (got "${raw}")`,
    );
    process.exit(1);
  }
  return items;
}

/**
 * Latencies in milliseconds, kept exactly (a few hundred thousand per run at
 * most). autocannon's own histogram only records whole milliseconds, too
 * coarse for differences of a fraction of a millisecond on loopback.
 */
export class LatencyRecorder {
  #values = new Float64Array(1 << 16);
  #count = 0;
  #sorted = true;

  add(ms) {
    if (this.#count === this.#values.length) {
      const bigger = new Float64Array(this.#values.length * 2);
      bigger.set(this.#values);
      this.#values = bigger;
    }
    this.#values[this.#count++] = ms;
    this.#sorted = false;
  }

  get count() {
    return this.#count;
  }

  /** The value at quantile q (0..1), nearest rank; NaN when empty. */
  percentile(q) {
    if (this.#count === 0) return Number.NaN;
    if (!this.#sorted) {
      this.#values.subarray(0, this.#count).sort();
      this.#sorted = true;
    }
    const rank = Math.min(this.#count - 1, Math.max(0, Math.ceil(q * this.#count) - 1));
    return this.#values[rank];
  }
}

export function median(values) {
  const s = values.filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  if (s.length === 0) return Number.NaN;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Prints rows of strings, first column left-aligned, the others right-aligned. */
export function printTable(head, rows, indent = '') {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells) =>
    indent + cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ');
  console.log(line(head));
  console.log(indent + widths.map((w) => '-'.repeat(w)).join('  '));
  for (const r of rows) console.log(line(r));
}

export const fmt = {
  int: (n) => (Number.isNaN(n) ? '-' : Math.round(n).toString()),
  /** One decimal: counts per request. */
  num: (n) => (Number.isNaN(n) ? '-' : n.toFixed(1)),
  ms: (n) => (Number.isNaN(n) ? '-' : n.toFixed(2)),
  /** A signed difference in ms: "+0.41". */
  delta: (n) => (Number.isNaN(n) ? '-' : `${n >= 0 ? '+' : ''}${n.toFixed(2)}`),
  pct: (n) => (Number.isNaN(n) ? '-' : `${(n * 100).toFixed(0)} %`),
  bytes(n) {
    const MiB = 1024 * 1024;
    if (n % MiB === 0) return `${n / MiB} MiB`;
    if (n % 1024 === 0) return `${n / 1024} KiB`;
    return `${n} B`;
  },
};
