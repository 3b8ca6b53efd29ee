import { ConfigError, readOptionFileSync } from '@burrow/shared';

/** Characters a bearer token may hold (RFC 6750 b64token). */
const BEARER = /^[A-Za-z0-9._~+/=-]+$/;

/** Throws ConfigError when `token` cannot be a bearer token; `where` names its origin. Never echoes it. */
export function checkToken(token: string, where: string): void {
  if (!token) throw new ConfigError(`the token in ${where} is empty`);
  if (!BEARER.test(token)) {
    throw new ConfigError(
      `the token in ${where} is not a bearer token (unexpected characters; is it the right file?)`,
    );
  }
}

/**
 * A token read from `file` again at each call: the agent calls it before every
 * connection attempt, so a rotated file (a Secret volume swaps it atomically)
 * takes effect on the next reconnect without a restart.
 */
export function tokenFile(file: string): () => string {
  return () => {
    // Bounded like every file an option names: a wrong path (a log, /dev/zero)
    // must not fill the memory, and this runs before every connection attempt.
    const token = readOptionFileSync('token-file', file).trim();
    checkToken(token, `--token-file ${file}`);
    return token;
  };
}

/** Fewest characters a holds key may have: `openssl rand -hex 32` makes 64. */
const MIN_HOLDS_KEY = 32;

/**
 * The holds key read from `file` again at each call (holds.ts), so that a
 * Secret volume's update takes effect without a restart. Never echoed.
 */
export function holdsKeyFile(file: string): () => string {
  return () => {
    const key = readOptionFileSync('holds-key-file', file).trim();
    if (key.length < MIN_HOLDS_KEY) {
      throw new ConfigError(
        `--holds-key-file ${file} holds ${key.length} characters; a holds key needs ${MIN_HOLDS_KEY} or more (make one with: openssl rand -hex 32)`,
      );
    }
    return key;
  };
}
