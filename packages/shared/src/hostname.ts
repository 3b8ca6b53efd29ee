/**
 * Hostnames and hostname patterns: validation, normalisation and matching.
 * A pattern is an exact name (`app.example.com`) or a wildcard (`*.example.com`)
 * that matches any name with one or more labels in front of the suffix.
 */

const LABEL = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/**
 * Lower-cases and strips a trailing dot and any `:port`. Returns '' for an
 * unusable Host header: one that is not a DNS name (Node's parser lets
 * `evil.test/.example.com` through, and a suffix lookup would route it to
 * `*.example.com`), or whose port is not a number.
 */
export function normalizeHost(host: string | undefined): string {
  if (!host) return '';
  // Only what may surround a field value (RFC 9110 §5.5): String.prototype.trim takes more
  // (no-break spaces, say), and the backend would get the Host with it.
  let h = host.replace(/^[ \t]+|[ \t]+$/g, '').toLowerCase();
  if (h.startsWith('[')) return ''; // IPv6 literal: never a routed name
  const colon = h.indexOf(':');
  if (colon !== -1) {
    if (!/^\d{0,5}$/.test(h.slice(colon + 1))) return '';
    h = h.slice(0, colon);
  }
  if (h.endsWith('.')) h = h.slice(0, -1);
  return isValidHostname(h) ? h : '';
}

/** True for a syntactically valid DNS hostname (letters, digits, hyphens; at most 253 bytes). */
export function isValidHostname(name: string): boolean {
  if (name.length === 0 || name.length > 253) return false;
  return name.split('.').every((label) => LABEL.test(label));
}

/** Checks a hostname pattern; returns an error message, or undefined when valid. */
export function checkHostPattern(pattern: string): string | undefined {
  if (pattern !== pattern.toLowerCase()) return `hostname "${pattern}" must be lower case`;
  if (pattern.startsWith('*.')) {
    const suffix = pattern.slice(2);
    if (!isValidHostname(suffix)) return `wildcard "${pattern}" must be "*." followed by a valid hostname`;
    if (!suffix.includes('.'))
      return `wildcard "${pattern}" is too broad: it needs at least two labels after "*."`;
    return undefined;
  }
  if (pattern.includes('*'))
    return `"${pattern}": a wildcard is only allowed as the whole first label ("*.example.com")`;
  if (!isValidHostname(pattern)) return `"${pattern}" is not a valid hostname`;
  return undefined;
}

/** Does `name` (exact or wildcard) fall within `pattern`? A wildcard name is within a wildcard pattern with the same or shorter suffix. */
export function patternAllows(pattern: string, name: string): boolean {
  if (pattern === name) return true;
  if (!pattern.startsWith('*.')) return false;
  const suffix = pattern.slice(1); // ".example.com"
  const bare = name.startsWith('*.') ? name.slice(1) : name;
  return bare.endsWith(suffix) && bare.length > suffix.length;
}

/**
 * `patternAllows` for a whole list of patterns at once, for checking many
 * names against one token: exact patterns in one set, wildcard suffixes in
 * another, and each name costs one lookup per label instead of one
 * comparison per pattern.
 */
export function patternMatcher(patterns: readonly string[]): (name: string) => boolean {
  const exact = new Set(patterns);
  const suffixes = new Set(patterns.filter((p) => p.startsWith('*.')).map((p) => p.slice(1)));
  return (name) => {
    if (exact.has(name)) return true;
    if (suffixes.size === 0) return false;
    const bare = name.startsWith('*.') ? name.slice(1) : name;
    // Every ".rest" strictly inside `bare`: a wildcard never allows its own suffix.
    for (let dot = bare.indexOf('.', 1); dot > 0; dot = bare.indexOf('.', dot + 1)) {
      if (suffixes.has(bare.slice(dot))) return true;
    }
    return false;
  };
}

/**
 * The route lookup's walk over the keys for `host`, most specific first,
 * without building a list (it runs once per request): after the name itself,
 * a wildcard for each parent suffix with at least two labels, `*` +
 * `host.slice(dot)` for the dot this returns after `from`; -1 when no wider
 * wildcard remains. `a.b.example.com` → `*.b.example.com`, `*.example.com`.
 */
export function nextWildcardDot(host: string, from: number): number {
  const dot = host.indexOf('.', from + 1);
  // A wildcard needs at least two labels after `*.`.
  return dot >= 0 && host.indexOf('.', dot + 1) >= 0 ? dot : -1;
}
