const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** The units parseDuration takes, as error messages list them. */
const UNIT_LIST = 'ms, s, m, h or d';

/**
 * Parses "500ms", "30s", "15m", "12h", "90d" (decimals allowed: "1.5h") into
 * milliseconds. A number needs its unit; only "0" may go without one, as zero
 * is zero in any unit. Callers check the range (most refuse 0).
 */
export function parseDuration(text: string): number {
  const trimmed = text.trim();
  if (/^0+(?:\.0+)?$/.test(trimmed)) return 0;
  if (/^\d+(?:\.\d+)?$/.test(trimmed)) throw new TypeError(`"${text}" needs a unit: ${UNIT_LIST}`);
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(trimmed);
  if (!m)
    throw new TypeError(`"${text}" is not a duration (examples: 30s, 15m, 12h, 90d; units: ${UNIT_LIST})`);
  const ms = Math.round(Number(m[1]) * UNITS[m[2]!]!);
  if (!Number.isFinite(ms)) throw new TypeError(`"${text}" is too long`);
  return ms;
}
