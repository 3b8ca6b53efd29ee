const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses "500ms", "30s", "15m", "12h", "90d" (or a bare number of seconds) into milliseconds. */
export function parseDuration(text: string): number {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)?$/.exec(text.trim());
  if (!m) throw new TypeError(`"${text}" is not a duration (examples: 30s, 15m, 12h, 90d)`);
  const ms = Math.round(Number(m[1]) * UNITS[m[2] ?? 's']!);
  if (!Number.isFinite(ms) || ms < 1) throw new TypeError(`"${text}" must be at least 1ms`);
  return ms;
}
